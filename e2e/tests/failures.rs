//! Functions that crash, hang, fail or run the pool dry: each gets a clear HTTP error at once,
//! nothing leaks, and the chain serves again afterwards.

mod common;

use spright_e2e::http;
use spright_e2e::load::{self, Load};
use spright_e2e::wait_for;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn kill(pid: u32) {
    spright_e2e::signal(pid, libc::SIGKILL);
}

/// Kills transform while 32 connections keep the chain busy.
fn kill_mid_load(routing: &'static str) {
    let chain = common::start(&common::demo_yaml(), routing, &[]);
    let old = chain.wait_instances("transform", 1)[0];
    let stop = Arc::new(AtomicBool::new(false));
    let mut l = Load::new(chain.addr, "POST", "/render", |i| {
        format!("word {i} word").into_bytes()
    });
    l.connections = 32;
    l.requests = usize::MAX;
    l.until = Some(stop.clone());
    let completed = l.completed.clone();
    let runner = std::thread::spawn(move || load::run(l));

    wait_for("load to get going", Duration::from_secs(20), || {
        (completed.load(Ordering::Relaxed) > 2_000).then_some(())
    });
    let killed_at = Instant::now();
    kill(old);
    let new = wait_for("transform to be restarted", Duration::from_secs(20), || {
        chain.pids("transform").into_iter().find(|&p| p != old)
    });
    let restarted_at = Instant::now();
    let before = completed.load(Ordering::Relaxed);
    wait_for(
        "load to go on after the restart",
        Duration::from_secs(20),
        || (completed.load(Ordering::Relaxed) > before + 2_000).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    let outcomes = runner.join().unwrap();

    load::assert_failed_fast_and_recovered(
        &format!("{routing}, transform {old} -> {new}"),
        &outcomes,
        |i| spright_demo_chain::expected_page(format!("word {i} word").as_bytes()),
        killed_at,
        restarted_at,
    );
    chain.wait_pool_idle();
    chain.stop();
}

#[test]
fn killing_a_function_mid_load_gives_502s_at_once_and_leaks_nothing() {
    for routing in common::modes("killing_a_function_mid_load_gives_502s_at_once_and_leaks_nothing")
    {
        kill_mid_load(routing);
    }
}

/// With a second instance alive, the requests queued at the killed one (sent to it but not yet
/// read) must still fail at once: the pool-manager knows which buffers the router sent where.
/// `block` stalls an instance's only thread, so requests queue up in its socket.
#[test]
fn killing_one_of_two_instances_fails_its_queued_requests_at_once() {
    let yaml = common::TESTFN_YAML.replace(
        "  - name: back\n    id: 2\n    command: [spright-testfn]",
        "  - name: back\n    id: 2\n    command: [spright-testfn]\n    instances: 2",
    );
    assert!(yaml.contains("instances: 2"));
    for routing in common::modes("killing_one_of_two_instances_fails_its_queued_requests_at_once") {
        let chain = common::start(&yaml, routing, &[]);
        let pids = chain.wait_instances("back", 2);
        let requests: Vec<_> = (0..12)
            .map(|_| {
                let addr = chain.addr;
                std::thread::spawn(move || {
                    let r = http::post(addr, "/back/block?ms=300", b"queued");
                    (r, Instant::now())
                })
            })
            .collect();
        wait_for(
            "all 12 requests in the chain",
            Duration::from_secs(10),
            || (chain.metric("spright_gateway_in_flight_requests") == 12).then_some(()),
        );
        let killed_at = Instant::now();
        kill(pids[0]);
        let results: Vec<_> = requests.into_iter().map(|t| t.join().unwrap()).collect();
        let failed: Vec<_> = results.iter().filter(|(r, _)| r.status == 502).collect();
        assert!(
            !failed.is_empty(),
            "{routing}: none of 12 requests was at the killed instance"
        );
        for (r, at) in &failed {
            assert!(r.text().contains("back exited"), "{routing}: {}", r.text());
            assert!(
                *at < killed_at + Duration::from_secs(1),
                "{routing}: a request queued at the killed instance took {:?} to fail",
                *at - killed_at
            );
        }
        for (r, _) in results.iter().filter(|(r, _)| r.status != 502) {
            assert_eq!((r.status, r.text().as_str()), (200, "queued"), "{routing}");
        }
        chain.wait_pool_idle();
        chain.stop();
    }
}

#[test]
fn an_unregistered_function_gives_502_at_once() {
    for routing in common::modes("an_unregistered_function_gives_502_at_once") {
        let chain = common::start(common::TESTFN_YAML, routing, &["--no-restart"]);
        let pid = chain.wait_instances("back", 1)[0];
        kill(pid);
        chain.wait_instances("back", 0);
        let r = http::post(chain.addr, "/back/echo", b"x");
        assert_eq!(r.status, 502, "{routing}: {}", r.text());
        assert!(
            r.text().contains("back is not registered"),
            "{routing}: {}",
            r.text()
        );
        // Through a sequence: front answers, then back is missing.
        let r = http::post(chain.addr, "/pipe/echo", b"x");
        assert_eq!(r.status, 502, "{routing}: {}", r.text());
        // A call from front to the missing back fails front's handler with a 500 naming why.
        let r = http::post(chain.addr, "/front/call?to=back", b"x");
        assert_eq!(r.status, 500, "{routing}: {}", r.text());
        assert!(r.text().contains("back"), "{routing}: {}", r.text());
        assert_eq!(
            http::post(chain.addr, "/front/echo", b"still here").text(),
            "still here"
        );
        chain.wait_pool_idle();
        chain.stop();
    }
}

#[test]
fn a_function_crashing_mid_request_gives_502() {
    for routing in common::modes("a_function_crashing_mid_request_gives_502") {
        let chain = common::start(common::TESTFN_YAML, routing, &[]);
        let old = chain.wait_instances("back", 1)[0];
        let r = http::post(chain.addr, "/back/crash", b"bye");
        assert_eq!(r.status, 502, "{routing}: {}", r.text());
        assert!(r.text().contains("back exited"), "{routing}: {}", r.text());
        wait_for("back to be restarted", Duration::from_secs(20), || {
            chain.pids("back").into_iter().find(|&p| p != old)
        });
        assert_eq!(
            http::post(chain.addr, "/back/echo", b"again").text(),
            "again"
        );
        chain.wait_pool_idle();
        chain.stop();
    }
}

#[test]
fn a_panicking_handler_loses_its_request_and_nothing_else() {
    let yaml = common::TESTFN_YAML.replace("timeout: 30s", "timeout: 300ms");
    for routing in common::modes("a_panicking_handler_loses_its_request_and_nothing_else") {
        let chain = common::start(&yaml, routing, &[]);
        let before = chain.wait_instances("back", 1);
        let r = http::post(chain.addr, "/back/panic", b"");
        assert_eq!(r.status, 504, "{routing}: {}", r.text());
        // The same process serves on, and the request's buffer came back.
        assert_eq!(
            http::post(chain.addr, "/back/echo", b"still here").text(),
            "still here"
        );
        assert_eq!(chain.pids("back"), before, "{routing}: back was restarted");
        chain.wait_pool_idle();
        chain.stop();
    }
}

#[test]
fn a_slow_chain_times_out_with_504_and_its_buffers_come_back() {
    let yaml = common::TESTFN_YAML.replace("timeout: 30s", "timeout: 300ms");
    for routing in common::modes("a_slow_chain_times_out_with_504_and_its_buffers_come_back") {
        let chain = common::start(&yaml, routing, &[]);
        let r = http::post(chain.addr, "/back/sleep?ms=1500", b"late");
        assert_eq!(r.status, 504, "{routing}: {}", r.text());
        assert!(r.text().contains("300 ms"), "{routing}: {}", r.text());
        // The late answer reaches the gateway after the timeout and is freed there.
        chain.wait_pool_idle();
        assert_eq!(
            http::post(chain.addr, "/back/echo", b"on time").text(),
            "on time"
        );
        chain.stop();
    }
}

#[test]
fn handler_errors_are_500s_that_name_the_function() {
    for routing in common::modes("handler_errors_are_500s_that_name_the_function") {
        let chain = common::start(common::TESTFN_YAML, routing, &[]);
        let r = http::post(chain.addr, "/front/fail", b"");
        assert_eq!(r.status, 500);
        assert_eq!(r.text(), "front failed: deliberate failure");
        // A response larger than a buffer is the handler's error, not a crash.
        let r = http::post(chain.addr, "/front/big?bytes=100000", b"");
        assert_eq!(r.status, 500, "{}", r.text());
        assert!(r.text().contains("does not fit"), "{}", r.text());
        let r = http::post(chain.addr, "/front/big?bytes=1000", b"");
        assert_eq!((r.status, r.body.len()), (200, 1000));
        // RPC: front calls back and wraps its answer.
        let r = http::post(chain.addr, "/front/call?to=back", b"ping");
        assert_eq!(r.text(), "200 via front: ping");
        chain.wait_pool_idle();
        chain.stop();
    }
}

#[test]
fn an_exhausted_pool_gives_503_with_retry_after() {
    let yaml = common::TESTFN_YAML.replace("buffers: 64", "buffers: 4");
    for routing in common::modes("an_exhausted_pool_gives_503_with_retry_after") {
        let chain = common::start(&yaml, routing, &[]);
        let results: Vec<_> = (0..12)
            .map(|_| {
                let addr = chain.addr;
                std::thread::spawn(move || http::post(addr, "/back/sleep?ms=500", b"hold"))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let busy: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
        assert!(
            !busy.is_empty(),
            "{routing}: 12 requests on 4 buffers, no 503: {results:?}"
        );
        for r in &busy {
            assert_eq!(r.header("retry-after"), Some("1"), "{routing}: {r:?}");
            assert!(r.text().contains("exhausted"), "{routing}: {}", r.text());
        }
        assert!(
            results.iter().all(|r| r.status == 503 || r.status == 200),
            "{routing}: {results:?}"
        );
        chain.wait_pool_idle();
        assert_eq!(
            http::post(chain.addr, "/back/echo", b"room again").text(),
            "room again"
        );
        chain.stop();
    }
}

#[test]
fn stopping_a_chain_answers_the_requests_it_took_first() {
    for routing in common::modes("stopping_a_chain_answers_the_requests_it_took_first") {
        let chain = common::start(common::TESTFN_YAML, routing, &[]);
        let addr = chain.addr;
        let slow = std::thread::spawn(move || http::post(addr, "/back/sleep?ms=1500", b"late"));
        wait_for(
            "the slow request in flight",
            Duration::from_secs(10),
            || (chain.metric("spright_gateway_in_flight_requests") == 1).then_some(()),
        );
        let asked = Instant::now();
        // Ctrl-C: the gateway drains before the functions stop.
        chain.stop();
        let r = slow.join().expect("slow request");
        assert_eq!(r.status, 200, "{routing}: {}", r.text());
        assert_eq!(r.text(), "late", "{routing}");
        assert_eq!(r.header("connection"), Some("close"), "{routing}");
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "{routing}: the stop waited {:?}",
            asked.elapsed()
        );
    }
}
