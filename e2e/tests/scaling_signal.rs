//! The scaling signal follows a known load: N clients that each keep one 200 ms request in
//! flight make the function's (and the gateway's) concurrency N and its rate 5N per second, and
//! both fall back to nothing once they stop.

mod common;

use spright_core::protocol::FunctionLoad;
use spright_e2e::{http, wait_for, ChainUnderTest};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CLIENTS: usize = 4;
const HOLD_MS: u64 = 200;

fn load_of(chain: &ChainUnderTest, function: &str) -> FunctionLoad {
    chain
        .stats()
        .functions
        .into_iter()
        .find(|f| f.name == function)
        .and_then(|f| f.load)
        .unwrap_or_else(|| panic!("no load figures for {function}"))
}

#[test]
fn concurrency_and_rate_follow_a_known_load() {
    let modes = common::modes("concurrency_and_rate_follow_a_known_load");
    // The board does not depend on the routing mode; the sockets' and the rings' runtimes both
    // report to it.
    for routing in [modes[0], "poll"] {
        let chain = common::start(common::TESTFN_YAML, routing, &[]);
        let idle = load_of(&chain, "front");
        assert_eq!(
            (idle.in_flight, idle.completed),
            (0, 0),
            "{routing}: {idle:?}"
        );

        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (stop, addr) = (stop.clone(), chain.addr);
                std::thread::spawn(move || {
                    let mut sent = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let r = http::get(addr, &format!("/front/sleep?ms={HOLD_MS}"));
                        assert_eq!(r.status, 200, "{}", r.text());
                        sent += 1;
                    }
                    sent
                })
            })
            .collect();
        let n = CLIENTS as f64;
        let rate = n * 1000.0 / HOLD_MS as f64;
        // The panic window (6 s) fills with the load: its mean concurrency nears N (never more:
        // only N requests are ever in flight) and its rate nears 5N per second.
        let busy = wait_for(
            "the panic window to show the load",
            Duration::from_secs(20),
            || {
                let f = load_of(&chain, "front");
                // A whole panic window of load first.
                let window_full = f.completed as f64 >= 6.0 * rate;
                // Each client's next request follows its last answer: the time between (a new
                // connection; in poll mode, processes spinning on a 2-core machine) keeps the
                // figures a little under N and 5N.
                (window_full
                    && f.panic_concurrency > 0.8 * n
                    && f.panic_requests_per_second > 0.7 * rate)
                    .then_some(f)
            },
        );
        // Never more than N in flight (a writer preempted between its clock and its update
        // shifts the integral by that instant: allow a hundredth).
        assert!(busy.panic_concurrency <= n * 1.01, "{routing}: {busy:?}");
        assert!(
            busy.panic_requests_per_second <= rate * 1.05,
            "{routing}: {busy:?}"
        );
        assert!(busy.in_flight as usize <= CLIENTS, "{routing}: {busy:?}");
        // The gauge of now sees the clients' requests (each has one in flight nearly always).
        wait_for(
            "every client's request in flight",
            Duration::from_secs(10),
            || (load_of(&chain, "front").in_flight as usize == CLIENTS).then_some(()),
        );
        // The stable window (60 s) is as old as the chain: the load is most of it.
        assert!(busy.stable_concurrency > 0.3 * n, "{routing}: {busy:?}");
        let gateway = load_of(&chain, "gateway");
        assert!(
            gateway.panic_concurrency > 0.8 * n && gateway.panic_concurrency <= n * 1.01,
            "{routing}: the gateway carries every request: {gateway:?}"
        );
        let back = load_of(&chain, "back");
        assert_eq!(
            back.completed, 0,
            "{routing}: back was not called: {back:?}"
        );

        // /metrics carries the same figures.
        let text = http::get(chain.addr, "/metrics").text();
        for metric in [
            "spright_function_panic_request_concurrency{function=\"front\"}",
            "spright_function_stable_requests_per_second{function=\"front\"}",
            "spright_function_requests_in_flight{function=\"gateway\"}",
            "spright_function_requests_completed_total{function=\"front\"}",
        ] {
            assert!(
                text.contains(metric),
                "{routing}: no {metric} in /metrics:\n{text}"
            );
        }

        stop.store(true, Ordering::Relaxed);
        let sent: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
        // Once quiet: nothing in flight, every request counted once, and the panic window
        // empties.
        let quiet = wait_for("the panic window to empty", Duration::from_secs(20), || {
            let f = load_of(&chain, "front");
            (f.in_flight == 0 && f.panic_concurrency < 0.01).then_some(f)
        });
        assert_eq!(quiet.completed, sent, "{routing}: {quiet:?}");
        assert_eq!(load_of(&chain, "gateway").completed, sent, "{routing}");
        assert!(
            quiet.stable_concurrency > 0.1 * n,
            "{routing}: the stable window remembers"
        );
        chain.wait_pool_idle();
        chain.stop();
    }
}
