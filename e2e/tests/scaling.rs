//! Instances that come and go under load lose no request: a stopping instance is taken out of
//! load balancing first and finishes what it has.

mod common;

use spright_e2e::{http, wait_for, ChainUnderTest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tests here time instances under load: one at a time on a small machine (poll mode's
/// spinning processes would starve the other's clients).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Clients that send numbered requests until stopped and check every answer; returns how
/// many each sent.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Load {
    fn start(chain: &ChainUnderTest, path: &'static str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let clients = (0..clients)
            .map(|c| {
                let (stop, addr) = (stop.clone(), chain.addr);
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let body = format!("client {c} request {sent}");
                        let r = http::post(addr, path, body.as_bytes());
                        if r.status != 200 || r.body != body.as_bytes() {
                            return Err(format!("{body}: {} {}", r.status, r.text()));
                        }
                        sent += 1;
                    }
                    Ok(sent)
                })
            })
            .collect();
        Load { stop, clients }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.clients
            .into_iter()
            .map(|c| {
                c.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("a request failed: {e}"))
            })
            .sum()
    }
}

#[test]
fn an_instance_stopped_under_load_finishes_its_requests_and_loses_none() {
    let _serial = one_at_a_time();
    for routing in
        common::modes("an_instance_stopped_under_load_finishes_its_requests_and_loses_none")
    {
        let yaml = common::TESTFN_YAML.replace(
            "  - name: back\n    id: 2\n",
            "  - name: back\n    id: 2\n    instances: 2\n",
        );
        let chain = common::start(&yaml, routing, &[]);
        let pids = chain.wait_instances("back", 2);
        let load = Load::start(&chain, "/pipe/echo", 4);
        wait_for(
            "load through both instances",
            Duration::from_secs(10),
            || {
                let s = chain.stats();
                let back = s.functions.iter().find(|f| f.name == "back")?;
                (back.received > 200).then_some(())
            },
        );
        let stopped = pids[0];
        let asked = Instant::now();
        spright_e2e::signal(stopped, libc::SIGTERM);
        // Withdrawn, it has only its own requests to finish: it leaves long before the chain's
        // 30 s timeout (which bounds an instance that stays routed, as the last one does).
        wait_for(
            "the stopped instance to exit",
            Duration::from_secs(10),
            || {
                (!std::path::Path::new(&format!("/proc/{stopped}")).exists()
                    || std::fs::read_to_string(format!("/proc/{stopped}/stat"))
                        .is_ok_and(|s| s.contains(") Z ")))
                .then_some(())
            },
        );
        let took = asked.elapsed();
        // The runner starts it again; the load goes on through the change.
        wait_for(
            "back to have 2 instances again",
            Duration::from_secs(20),
            || {
                let now = chain.pids("back");
                (now.len() == 2 && !now.contains(&stopped)).then_some(())
            },
        );
        let sent = load.finish();
        let s = chain.stats();
        let refused: u64 = s.functions.iter().map(|f| f.refused).sum();
        assert_eq!(
            refused, 0,
            "{routing}: refused sends during the change: {s:?}"
        );
        eprintln!(
            "{routing}: {sent} requests, all answered; the stopped instance left after {took:?}"
        );
        chain.wait_pool_idle();
        chain.stop();
    }
}

fn instances_of(chain: &ChainUnderTest, function: &str) -> usize {
    chain.pids(function).len()
}

#[test]
fn instances_rise_with_a_step_of_load_and_fall_after_it_losing_no_request() {
    let _serial = one_at_a_time();
    let mut modes =
        common::modes("instances_rise_with_a_step_of_load_and_fall_after_it_losing_no_request");
    // The kernel's router (or without root the relay alone) and the relay; poll mode's
    // spinning instances would each need a core of this small machine.
    modes.retain(|m| *m != "poll");
    for routing in modes {
        let yaml = common::TESTFN_YAML.replace(
            "  - name: back\n    id: 2\n",
            "  - name: back\n    id: 2\n    instances: {min: 1, max: 4, target_concurrency: 2, window: 6s}\n",
        );
        let chain = common::start(&yaml, routing, &[]);
        assert_eq!(
            chain.wait_instances("back", 1).len(),
            1,
            "{routing}: starts at its minimum"
        );
        // One client throughout; seven more for the step. Each keeps a 200 ms request in
        // flight: 8 in flight over a target of 2 each asks for 4 instances.
        let steady = Load::start(&chain, "/back/sleep?ms=200", 1);
        let step = Load::start(&chain, "/back/sleep?ms=200", 7);
        let up = Instant::now();
        wait_for("back to scale up to 4", Duration::from_secs(30), || {
            (instances_of(&chain, "back") == 4).then_some(())
        });
        let rose_in = up.elapsed();
        // Held at 4 while the step lasts (the stable window now sees it too).
        let held_from = Instant::now();
        while held_from.elapsed() < Duration::from_secs(8) {
            assert_eq!(
                instances_of(&chain, "back"),
                4,
                "{routing}: not held under the step"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let stepped = step.finish();
        let down = Instant::now();
        wait_for("back to scale down to 1", Duration::from_secs(60), || {
            (instances_of(&chain, "back") == 1).then_some(())
        });
        let fell_in = down.elapsed();
        let steady_sent = steady.finish();
        let s = chain.stats();
        let refused: u64 = s.functions.iter().map(|f| f.refused).sum();
        assert_eq!(refused, 0, "{routing}: refused sends while scaling: {s:?}");
        eprintln!(
            "{routing}: 1 -> 4 in {rose_in:?}, 4 -> 1 in {fell_in:?} after the step; {} requests, all answered",
            stepped + steady_sent
        );
        chain.wait_pool_idle();
        chain.stop();
    }
}
