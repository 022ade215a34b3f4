//! The paper's workloads on every data plane the benchmark compares, answering correctly:
//! the smoke version of `e2e/bench/workloads.py`, so that neither the workloads nor the
//! baselines can rot. No timings here.

use spright_e2e::http::post;
use spright_e2e::planes::{Plane, PlaneKind};
use spright_e2e::{have_root, wait_for, workloads};
use std::path::PathBuf;
use std::time::Duration;

fn chain_file(workload: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{workload}/chain.yaml"))
}

/// Starts `kind` for `workload`, or `None` when the kernel plane cannot run here (not root;
/// CI runs as root, and `have_root` fails the test there instead).
fn start(kind: PlaneKind, workload: &str, test: &str) -> Option<Plane> {
    if kind == PlaneKind::Spright("sockmap") && !have_root(test) {
        return None;
    }
    Some(Plane::start(kind, &chain_file(workload)))
}

fn boutique(kind: PlaneKind, test: &str) {
    if let Some(plane) = start(kind, "boutique", test) {
        workloads::boutique_visit(plane.addr, &kind.to_string());
    }
}

fn motion(kind: PlaneKind, test: &str) {
    if let Some(plane) = start(kind, "motion", test) {
        workloads::motion_readings(plane.addr, &kind.to_string());
    }
}

fn parking(kind: PlaneKind, test: &str) {
    if let Some(plane) = start(kind, "parking", test) {
        workloads::parking_visits(plane.addr, &kind.to_string());
    }
}

/// What the baselines run the workloads' functions in.
const BASELINE_HOST: &str = "spright-baseline-host";

// Long enough that a function is still up right after answering, and that no function of a
// visit is scaled to zero (losing its in-memory state, such as carts) while another one
// cold-starts, even with debug binaries on a busy machine.
const S2Z: PlaneKind = PlaneKind::KnativeScaleToZero { grace_ms: 3000 };

#[test]
fn boutique_on_sockmap() {
    boutique(PlaneKind::Spright("sockmap"), "boutique_on_sockmap");
}
#[test]
fn boutique_on_poll() {
    boutique(PlaneKind::Spright("poll"), "boutique_on_poll");
}
#[test]
fn boutique_knative_style() {
    boutique(PlaneKind::Knative, "boutique_knative_style");
}
#[test]
fn boutique_knative_style_scaled_to_zero() {
    boutique(S2Z, "boutique_knative_style_scaled_to_zero");
}
#[test]
fn boutique_grpc_style() {
    boutique(PlaneKind::Grpc, "boutique_grpc_style");
}
#[test]
fn motion_on_sockmap() {
    motion(PlaneKind::Spright("sockmap"), "motion_on_sockmap");
}
#[test]
fn motion_on_poll() {
    motion(PlaneKind::Spright("poll"), "motion_on_poll");
}
#[test]
fn motion_knative_style() {
    motion(PlaneKind::Knative, "motion_knative_style");
}
#[test]
fn parking_on_sockmap() {
    parking(PlaneKind::Spright("sockmap"), "parking_on_sockmap");
}
#[test]
fn parking_on_poll() {
    parking(PlaneKind::Spright("poll"), "parking_on_poll");
}
#[test]
fn parking_knative_style() {
    parking(PlaneKind::Knative, "parking_knative_style");
}

/// After an idle gap longer than the grace period, the scaled-to-zero functions are gone and
/// the next burst cold-starts them, still answering correctly.
#[test]
fn motion_knative_style_scaled_to_zero_cold_starts() {
    let plane = Plane::start(S2Z, &chain_file("motion"));
    let a = plane.addr;
    for burst in 0..2 {
        let r = post(a, "/motion", b"sensor=1&room=1&motion=1&lux=10");
        assert_eq!(r.status, 200, "burst {burst}: {}", r.text());
        assert!(
            r.text().starts_with("room 1: light on"),
            "burst {burst}: {}",
            r.text()
        );
        assert!(
            !plane.processes(BASELINE_HOST).is_empty(),
            "burst {burst}: the functions run"
        );
        wait_for(
            "the functions to be scaled to zero",
            Duration::from_secs(10),
            || plane.processes(BASELINE_HOST).is_empty().then_some(()),
        );
    }
    parking(S2Z, "parking_knative_style_scaled_to_zero");
}
