//! A function that floods, stalls or leaves buffers behind: its own requests pay (503, 504), the
//! node's memory does not, nobody else's requests fail, and the pool comes back to all free.

mod common;

use spright_core::descriptor::{Kind, RefuseReason};
use spright_core::ids::{FnId, GATEWAY};
use spright_core::protocol::FunctionStats;
use spright_e2e::rogue::Rogue;
use spright_e2e::{http, wait_for, ChainUnderTest};
use spright_sdk::Lease;
use std::time::{Duration, Instant};

/// A small queue bound and a short timeout, so that tests reach both quickly.
const QUEUE_LIMIT: u64 = 8;

fn yaml() -> String {
    let yaml = common::TESTFN_YAML
        .replace(
            "  buffer_size: 16KiB\n",
            &format!("  buffer_size: 16KiB\n  queue_limit: {QUEUE_LIMIT}\n"),
        )
        .replace("timeout: 30s", "timeout: 2s");
    assert!(yaml.contains("queue_limit") && yaml.contains("timeout: 2s"));
    yaml
}

/// Descriptors the flood sends: far more than any queue or socket buffer holds.
const FLOOD: u64 = 40_000;

/// Stops a process for the life of the guard (SIGCONT on drop, even when a test fails).
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        spright_e2e::signal(pid, libc::SIGSTOP);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGCONT) };
    }
}

fn function(chain: &ChainUnderTest, name: &str) -> FunctionStats {
    chain
        .stats()
        .functions
        .into_iter()
        .find(|f| f.name == name)
        .unwrap()
}

fn flooded(routing: &'static str) {
    let chain = common::start(&yaml(), routing, &[]);
    let back_pid = chain.wait_instances("back", 1)[0];
    let rogue = Rogue::register(&chain);
    let mut rogue = rogue;

    // 1. Refusals nobody reads: forbidden sends (the rogue may call only back).
    let sent = rogue.flood(FnId(1), FLOOD);
    let own_limit = 2 * QUEUE_LIMIT;
    if routing == "poll" {
        // Poll mode routes in the sender: with its own ring full, its sends fail at once.
        assert!(sent < FLOOD, "{routing}: every send was accepted");
    } else {
        assert_eq!(sent, FLOOD, "{routing}");
        let s = wait_for(
            "the router to account for every forbidden send",
            Duration::from_secs(20),
            || {
                let s = chain.stats();
                let r = s.functions.iter().find(|f| f.name == "rogue").unwrap();
                (r.refused == FLOOD).then_some(s)
            },
        );
        let r = s.functions.iter().find(|f| f.name == "rogue").unwrap();
        assert!(
            r.queued <= own_limit,
            "{routing}: {} refusals queued for a sender that does not read",
            r.queued
        );
        assert!(s.overflow > 0, "{routing}: {s:?}");
    }
    let refusals = rogue.drain();
    assert!(
        !refusals.is_empty(),
        "{routing}: a sender that reads hears of refusals"
    );
    for r in &refusals {
        assert_eq!(r.refusal().unwrap().0, Some(RefuseReason::Forbidden));
    }

    // 2. A receiver that stops reading while it is flooded.
    let stopped = Stopped::new(back_pid);
    let before = function(&chain, "rogue").refused;
    let received_before = function(&chain, "back").received;
    let started = Instant::now();
    let sent = rogue.flood(FnId(2), FLOOD);
    // Every send routed (the relay works through them after the sends return): each was
    // either delivered to back or refused.
    let busy = wait_for(
        "the router to route the whole flood",
        Duration::from_secs(30),
        || {
            let refused = function(&chain, "rogue").refused - before;
            let delivered = function(&chain, "back").received - received_before;
            (refused + delivered >= sent && refused > 0).then_some(refused)
        },
    );
    let ring_cells = spright_core::rings::RING_CELLS as u64;
    let full = if routing == "poll" {
        ring_cells
    } else {
        QUEUE_LIMIT
    };
    // In user mode the relay's queue is full only once the socket buffers behind it are (they
    // hold a few thousand descriptors): the flood goes on until it is.
    // Full for good, not just while a write into those buffers is under way: it stays full.
    let is_full = || function(&chain, "back").queued >= full;
    wait_for("back's queue to be full", Duration::from_secs(30), || {
        if is_full() {
            std::thread::sleep(Duration::from_millis(200));
            if is_full() {
                return Some(());
            }
        }
        rogue.flood(FnId(2), 1_000);
        None
    });
    let back = function(&chain, "back");
    let limit = if routing == "poll" {
        ring_cells
    } else {
        QUEUE_LIMIT
    };
    assert!(
        back.queued <= limit,
        "{routing}: {} descriptors queued at a stopped receiver (limit {limit})",
        back.queued
    );
    println!(
        "{routing}: sent {sent} to a stopped receiver in {:?}: {busy} refused as busy, {} queued",
        started.elapsed(),
        back.queued
    );
    // The chain's own requests to it are answered at once, 503 with Retry-After.
    let t = Instant::now();
    let r = http::post(chain.addr, "/back/echo", b"x");
    assert_eq!(r.status, 503, "{routing}: {}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        r.text().contains("busy"),
        "{routing}: the answer says why: {}",
        r.text()
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "not after the timeout"
    );
    // Front does not depend on back for this: it answers.
    assert_eq!(
        http::post(chain.addr, "/front/echo", b"still here").text(),
        "still here"
    );
    let refusals = rogue.drain();
    assert!(refusals
        .iter()
        .any(|r| r.refusal().unwrap().0 == Some(RefuseReason::Busy)));

    // 3. Back reads again: it works through its queue and serves.
    drop(stopped);
    wait_for("back to serve again", Duration::from_secs(30), || {
        let r = http::post(chain.addr, "/back/echo", b"intact");
        (r.status == 200 && r.text() == "intact").then_some(())
    });
    assert_eq!(
        chain.pids("back"),
        vec![back_pid],
        "{routing}: back survived"
    );
    assert_eq!(
        http::post(chain.addr, "/front/call?to=back", b"y").text(),
        "200 via front: y"
    );
    chain.wait_pool_idle();
    chain.stop();
}

#[test]
fn a_flood_is_bounded_and_answered_as_back_pressure() {
    for routing in common::modes("a_flood_is_bounded_and_answered_as_back_pressure") {
        flooded(routing);
    }
}

fn rejected_buffers(routing: &'static str) {
    let chain = common::start(&yaml(), routing, &[]);
    chain.wait_instances("back", 1);
    let rogue = Rogue::register(&chain);
    let pool = rogue.pool.clone();
    let me = rogue.me;
    // A reply to the gateway longer than its buffer: the gateway rejects it (the request it
    // names is not in flight), and nothing claims the buffer.
    let lease = Lease::alloc(&pool, me, 991).unwrap();
    let buf = lease.buffer();
    std::mem::forget(lease);
    assert!(pool.mark_in_transit(buf, me, GATEWAY));
    let mut d = rogue.descriptor(GATEWAY, 991);
    d.kind = Kind::Reply as u8;
    pool.describe(buf, &mut d);
    d.len = pool.layout().buffer_size + 1;
    // The rogue may not send to the gateway at all: refused, and the buffer stays in transit.
    {
        let _rt = rogue.rt.enter();
        rogue.sender.send_raw(&d).unwrap();
    }
    // A request to back whose owner does not match its request id: back rejects it.
    let lease = Lease::alloc(&pool, me, 992).unwrap();
    let buf = lease.buffer();
    std::mem::forget(lease);
    assert!(pool.mark_in_transit(buf, me, FnId(2)));
    let mut d = rogue.descriptor(FnId(2), 993);
    pool.describe(buf, &mut d);
    d.len = 16;
    {
        let _rt = rogue.rt.enter();
        rogue.sender.send_raw(&d).unwrap();
    }
    // And a buffer marked in transit whose descriptor is never sent.
    let lease = Lease::alloc(&pool, me, 994).unwrap();
    let buf = lease.buffer();
    std::mem::forget(lease);
    assert!(pool.mark_in_transit(buf, me, FnId(2)));

    assert!(chain.pool_stats().in_transit >= 3, "{routing}");
    // Within the chain's timeout and the sweep's margin, all three are free again, with the
    // rogue still registered (no restart of anyone).
    wait_for(
        "the buffers left in transit to be reclaimed",
        Duration::from_secs(10),
        || {
            let s = chain.pool_stats();
            (s.free == s.total).then_some(())
        },
    );
    assert_eq!(function(&chain, "rogue").instances, 1);
    assert_eq!(http::post(chain.addr, "/back/echo", b"ok").text(), "ok");
    drop(rogue);
    chain.stop();
}

#[test]
fn buffers_left_in_transit_are_reclaimed_without_a_restart() {
    for routing in common::modes("buffers_left_in_transit_are_reclaimed_without_a_restart") {
        rejected_buffers(routing);
    }
}

#[test]
fn a_chain_interrupted_right_after_its_banner_stops_cleanly() {
    // Ctrl-C at the earliest moment a user can press it: the signal handlers are in place
    // before the banner (they used to be installed only once the shutdown was first awaited).
    for _ in 0..5 {
        common::start(&yaml(), "user", &[]).stop();
    }
}
