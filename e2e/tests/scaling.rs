//! Instances that come and go under load lose no request: a stopping instance is taken out of
//! load balancing first and finishes what it has.

mod common;

use spright_e2e::{http, wait_for, ChainUnderTest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
