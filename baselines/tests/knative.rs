//! `spright-baseline knative`: real function processes behind real nginx sidecars, the
//! gateway in front, real HTTP over loopback.

mod common;

use common::*;
use std::time::Duration;

fn launch_knative(extra: &[&str]) -> Launched {
    launch("knative", &chain_yaml(false), extra).unwrap_or_else(|e| panic!("launch: {e}"))
}

#[test]
fn answers_through_sidecars_and_the_gateway() {
    let mut l = launch_knative(&[]);
    let a = l.addr;

    // RPC style: echo's HTTP entry calls shout through the gateway.
    let r = post(a, "/echo", "hello");
    assert_eq!((r.status, r.text().as_str()), (200, "echo: HELLO"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // A sequence: the second echo gets the first one's answer.
    let r = post(a, "/twice", "hi");
    assert_eq!((r.status, r.text().as_str()), (200, "echo: ECHO: HI"));
    // A call as another function makes it, on one keep-alive connection.
    let mut conn = Conn::open(a);
    for _ in 0..3 {
        let r = conn.request("POST", "/_fn/shout/rpc/Upper", br#"{"text":"abc"}"#);
        assert_eq!((r.status, r.text().as_str()), (200, r#"{"text":"ABC"}"#));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // Bodies past nginx's in-memory buffer go through whole.
    let big = vec![b'x'; 300_000];
    let r = request(a, "POST", "/_fn/echo/size", &big);
    assert_eq!((r.status, r.text().as_str()), (200, "300000"));

    // Every part is a real process: two functions, two nginx masters and their workers.
    let names: Vec<String> = descendants(l.proc.pid())
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with("nginx")).count(),
        4,
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("spright-baselin"))
            .count(), // comm: 15 bytes
        2,
        "{names:?}"
    );

    terminate_cleanly(&mut l);
}

#[test]
fn errors_say_what_went_wrong() {
    let mut l = launch_knative(&[]);
    let a = l.addr;
    let check = |r: Response, status: u16, says: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        assert!(
            r.text().contains(says),
            "{:?} does not say {says:?}",
            r.text()
        );
        assert_eq!(
            r.text().matches('\n').count(),
            1,
            "one line: {:?}",
            r.text()
        );
    };
    let upper = "/_fn/shout/rpc/Upper";
    check(
        post(a, "/_fn/shout/rpc/Nope", "{}"),
        404,
        "shout has no method \"Nope\"",
    );
    check(post(a, upper, r#"{"txt":"a"}"#), 400, "malformed JSON");
    check(post(a, upper, r#"{"text":"fail"}"#), 500, "asked to fail");
    // A failed call fails the caller, naming both.
    let r = post(a, "/echo", "fail");
    check(r, 500, "echo failed: call to shout failed");
    // A sequence stops at the first error.
    check(post(a, "/twice", "fail"), 500, "echo failed");
    check(get(a, "/echo"), 405, "/echo does not take GET");
    check(post(a, "/nowhere", ""), 404, "no route for /nowhere");
    check(get(a, "/_fn/nobody/x"), 404, "no function named \"nobody\"");
    check(get(a, "/_fn/shout/x"), 404, "shout serves no HTTP requests");
    let huge = vec![0u8; 9 << 20];
    check(request(a, "POST", "/echo", &huge), 413, "larger than");
    terminate_cleanly(&mut l);
}

#[test]
fn scale_to_zero_stops_idle_functions_and_starts_them_on_demand() {
    // A grace long enough that a function is surely still up right after it answered, even on
    // a loaded machine.
    let mut l = launch_knative(&["--scale-to-zero", "1s"]);
    let a = l.addr;
    let launcher = l.proc.pid();
    assert!(
        descendants(launcher).is_empty(),
        "functions start scaled to zero"
    );
    let all_gone = |what: &str| {
        wait_for(what, Duration::from_secs(10), || {
            descendants(launcher).is_empty().then_some(())
        })
    };

    // Cold start of echo, then of shout (called by echo).
    let first = get(a, "/_fn/echo/pid").text().parse::<i32>().unwrap();
    let r = post(a, "/echo", "hello");
    assert_eq!((r.status, r.text().as_str()), (200, "echo: HELLO"));
    assert!(alive(first));

    // Idle past the grace period: both pods really stop.
    wait_for("echo's process to stop", Duration::from_secs(10), || {
        (!alive(first)).then_some(())
    });
    all_gone("every function and sidecar to stop");

    // The next request starts them again and is answered as usual.
    let r = post(a, "/echo", "again");
    assert_eq!((r.status, r.text().as_str()), (200, "echo: AGAIN"));
    let second = get(a, "/_fn/echo/pid").text().parse::<i32>().unwrap();
    assert_ne!(first, second, "a new process");
    all_gone("everything to stop again");

    // Requests arriving together wait on one cold start (per function).
    let log = l.proc.stderr();
    let before = (cold_starts(&log, "echo"), cold_starts(&log, "shout"));
    let barrier = std::sync::Barrier::new(8);
    std::thread::scope(|s| {
        for i in 0..8 {
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let r = post(a, "/echo", &format!("c{i}"));
                assert_eq!((r.status, r.text()), (200, format!("echo: C{i}")));
            });
        }
    });
    terminate_cleanly(&mut l);
    wait_for("the cold-start summary", Duration::from_secs(5), || {
        l.proc.stderr().contains("cold starts: echo ").then_some(())
    });
    let log = l.proc.stderr();
    let after = (cold_starts(&log, "echo"), cold_starts(&log, "shout"));
    assert_eq!(after, (before.0 + 1, before.1 + 1), "{}", l.proc.stderr());
    assert!(before.0 >= 2 && before.1 >= 2, "{}", l.proc.stderr());
}

#[test]
fn a_function_that_dies_is_named_then_started_again() {
    let mut l = launch_knative(&[]);
    let a = l.addr;
    let shout = descendants(l.proc.pid())
        .into_iter()
        .map(|(p, _)| p)
        .find(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmd.ends_with(b"testfn\0shout\0")
        })
        .expect("shout's process");
    // SAFETY: killing a process this test's launcher started.
    unsafe { libc::kill(shout, libc::SIGKILL) };
    wait_for("shout to die", Duration::from_secs(5), || {
        (!alive(shout)).then_some(())
    });
    // Until the launcher notices, its sidecar answers for it.
    let r = post(a, "/_fn/shout/rpc/Upper", r#"{"text":"a"}"#);
    if r.status != 200 {
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("shout is not answering"), "{}", r.text());
    }
    wait_for("the launcher to notice", Duration::from_secs(5), || {
        let says = format!("function shout (pid {shout}) was killed by signal 9");
        l.proc.stderr().contains(&says).then_some(())
    });
    // The next request starts it again.
    let r = post(a, "/echo", "back");
    assert_eq!((r.status, r.text().as_str()), (200, "echo: BACK"));
    terminate_cleanly(&mut l);
}

/// How many cold starts of `function` the launcher logged.
fn cold_starts(log: &str, function: &str) -> usize {
    let of = format!(" of {function}: pid ");
    log.lines()
        .filter(|line| line.starts_with("cold start #") && line.contains(&of))
        .count()
}

#[test]
fn a_function_that_cannot_start_is_named() {
    let chain = chain_yaml(false).replace("testfn, shout]", "testfn, bogus]");
    let Err(e) = launch("knative", &chain, &["--ready-timeout", "10s"]) else {
        panic!("a chain whose function exits at once launched");
    };
    assert!(e.contains("function shout (pid"), "{e}");
    assert!(
        e.contains("exited with status 1 before it was ready"),
        "{e}"
    );
    let chain = chain_yaml(false).replace("spright-baseline-testfn, shout", "no-such-fn");
    let e = launch("knative", &chain, &[]).err().unwrap();
    assert!(
        e.contains("function shout: command \"no-such-fn\" is not an executable"),
        "{e}"
    );
}
