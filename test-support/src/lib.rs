//! Helpers for spright's tests.

pub mod netns;

use std::time::{Duration, Instant};

/// True when the test may use root-only facilities (BPF, mounts). Off root it returns false so
/// the test can return early, except under CI (`CI=true`), where a skipped root test is a
/// failure: CI runs as root, so not being root there means the run is broken.
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test} needs root and CI=true: refusing to skip");
    }
    eprintln!("skipping {test}: needs root");
    false
}

/// Waits until `cond` returns `Some`, polling every few milliseconds, failing with `what` after
/// `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
