//! The chain's own parts killed under load (the pool-manager, the gateway, a function again and
//! again): requests in flight fail at once, every answer that is given is right, and the chain
//! comes back by itself (`spright up` restarts what died) without leaking a buffer.

mod common;

use spright_e2e::load::{self, Load, Outcome};
use spright_e2e::{http, wait_for, ChainUnderTest};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn kill(pid: u32) {
    spright_e2e::signal(pid, libc::SIGKILL);
}

fn body(i: usize) -> Vec<u8> {
    format!("request {i}").into_bytes()
}

/// Echo requests through `back` on 8 keep-alive connections until stopped.
struct Running {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    handle: JoinHandle<Vec<(usize, Outcome)>>,
}

impl Running {
    fn start(chain: &ChainUnderTest) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let mut l = Load::new(chain.addr, "POST", "/back/echo", body);
        l.connections = 8;
        l.requests = usize::MAX;
        l.until = Some(stop.clone());
        let completed = l.completed.clone();
        let handle = std::thread::spawn(move || load::run(l));
        let running = Running {
            stop,
            completed,
            handle,
        };
        running.wait_more(1_000);
        running
    }

    fn wait_more(&self, n: usize) {
        let target = self.completed.load(Ordering::Relaxed) + n;
        wait_for(
            &format!("{n} more requests"),
            Duration::from_secs(30),
            || (self.completed.load(Ordering::Relaxed) >= target).then_some(()),
        );
    }

    fn finish(self) -> Vec<(usize, Outcome)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Waits until a fresh request through `back` succeeds again.
fn wait_serving(chain: &ChainUnderTest) -> Instant {
    wait_for("the chain to serve again", Duration::from_secs(30), || {
        http::try_request(chain.addr, "POST", "/back/echo", b"probe")
            .ok()
            .filter(|r| r.status == 200 && r.text() == "probe")
            .map(|_| Instant::now())
    })
}

/// Every answer given is the right one; failures (connection cut: 0, or 502/503 while a part
/// is missing) each end within `fast` of starting and fall between a kill and the recovery
/// after it; nothing fails once the chain is back.
fn check(
    what: &str,
    outcomes: &[(usize, Outcome)],
    outages: &[(Instant, Instant)],
    fast: Duration,
) -> usize {
    let mut failed = 0;
    for (i, o) in outcomes {
        if o.status == 200 {
            assert_eq!(o.body.as_ref(), body(*i).as_slice(), "{what}: request {i}");
            continue;
        }
        assert!(
            matches!(o.status, 0 | 502 | 503),
            "{what}: request {i} got {}: {}",
            o.status,
            String::from_utf8_lossy(&o.body)
        );
        failed += 1;
        let took = o.finished - o.started;
        assert!(took < fast, "{what}: request {i} took {took:?} to fail");
        let margin = Duration::from_millis(500);
        assert!(
            outages
                .iter()
                .any(|&(down, up)| o.finished + margin >= down && o.started <= up + margin),
            "{what}: request {i} failed ({}) outside any outage",
            o.status
        );
    }
    let (_, last_up) = *outages.last().unwrap();
    assert!(
        outcomes
            .iter()
            .any(|(_, o)| o.started > last_up && o.status == 200),
        "{what}: nothing served after the last recovery"
    );
    failed
}

/// A part of the chain that `spright up` starts again when it dies.
#[derive(Clone, Copy, Debug)]
enum Part {
    PoolManager,
    Gateway,
}

impl Part {
    fn pid(self, chain: &ChainUnderTest) -> Option<u32> {
        match self {
            // Read from disk: the manifest is the new pool-manager's once it is up.
            Part::PoolManager => spright_core::Manifest::load(
                &chain.runtime_root,
                &spright_core::manifest::ChainKey::chain(&chain.name),
            )
            .ok()
            .map(|m| m.pid),
            Part::Gateway => chain.pids("gateway").first().copied(),
        }
    }
}

fn part_killed(routing: &'static str, part: Part) {
    let chain = common::start(common::TESTFN_YAML, routing, &[]);
    chain.wait_instances("back", 1);
    let load = Running::start(&chain);
    let old = part.pid(&chain).expect("running");
    let down = Instant::now();
    kill(old);
    wait_for(&format!("a new {part:?}"), Duration::from_secs(30), || {
        part.pid(&chain).filter(|&p| p != old)
    });
    let up = wait_serving(&chain);
    load.wait_more(2_000);
    let outcomes = load.finish();
    let failed = check(
        &format!("{routing}, {part:?} killed"),
        &outcomes,
        &[(down, up)],
        Duration::from_secs(2),
    );
    println!(
        "{routing}: {part:?} killed: {} requests, {failed} failed, serving again after {:?} at {}",
        outcomes.len(),
        up - down,
        chain.addr
    );
    chain.wait_pool_idle();
    chain.stop();
}

#[test]
fn a_killed_pool_manager_is_replaced_and_the_chain_recovers() {
    for routing in common::modes("a_killed_pool_manager_is_replaced_and_the_chain_recovers") {
        part_killed(routing, Part::PoolManager);
    }
}

/// The address is the runner's listening socket: `chain.addr` is the one the banner gave.
#[test]
fn a_killed_gateway_is_replaced_on_the_same_address() {
    for routing in common::modes("a_killed_gateway_is_replaced_on_the_same_address") {
        part_killed(routing, Part::Gateway);
    }
}

/// How often the repeated-kill test kills `back`, and how many times.
const KILL_EVERY: Duration = Duration::from_secs(5);
const KILLS: usize = 3;

fn function_killed_again_and_again(routing: &'static str) {
    let chain = common::start(common::TESTFN_YAML, routing, &[]);
    let mut pid = chain.wait_instances("back", 1)[0];
    let load = Running::start(&chain);
    let mut outages = Vec::new();
    for _ in 0..KILLS {
        let next_kill = Instant::now() + KILL_EVERY;
        let down = Instant::now();
        kill(pid);
        let new = wait_for("back to be restarted", Duration::from_secs(20), || {
            chain.pids("back").into_iter().find(|&p| p != pid)
        });
        outages.push((down, wait_serving(&chain)));
        pid = new;
        load.wait_more(500);
        std::thread::sleep(next_kill.saturating_duration_since(Instant::now()));
    }
    let outcomes = load.finish();
    // A killed function's requests are answered 502 at once (the gateway hears it leave).
    let failed = check(
        &format!("{routing}, back killed every {KILL_EVERY:?}"),
        &outcomes,
        &outages,
        Duration::from_secs(1),
    );
    for (i, o) in &outcomes {
        assert!(
            o.status == 200 || o.status == 502,
            "{routing}: request {i} got {} (a function's death is a 502)",
            o.status
        );
    }
    println!(
        "{routing}: back killed {KILLS} times: {} requests, {failed} failed (502)",
        outcomes.len()
    );
    chain.wait_pool_idle();
    chain.stop();
}

#[test]
fn a_function_killed_every_few_seconds_costs_only_its_own_requests() {
    for routing in common::modes("a_function_killed_every_few_seconds_costs_only_its_own_requests")
    {
        function_killed_again_and_again(routing);
    }
}
