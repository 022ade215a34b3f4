//! The workload benchmark in its quick form, on every data plane: it must run end to end and
//! report no wrong answers, so that it cannot rot between real runs. Timings are not checked.

use spright_e2e::{bin_dir, have_root};
use std::process::Command;

fn quick(workload: &str, planes: &str, port_base: u16, test: &str) {
    // The script puts each plane in a cpuacct cgroup: root only (CI runs as root).
    if !have_root(test) {
        return;
    }
    let out_dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/workloads.py");
    let out = Command::new("python3")
        .arg(script)
        .args([
            "--workload",
            workload,
            "--planes",
            planes,
            "--quick",
            "--no-build",
        ])
        .arg("--bin-dir")
        .arg(bin_dir())
        .arg("--out")
        .arg(out_dir.path())
        .args(["--port-base", &port_base.to_string()])
        .output()
        .expect("run workloads.py");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "workloads.py --workload {workload} failed:\n{said}"
    );
    let report = std::fs::read_to_string(out_dir.path().join(format!("{workload}.md")))
        .unwrap_or_else(|e| panic!("no report ({e}):\n{said}"));
    for plane in planes.split(',') {
        assert!(
            report.contains(&format!("| {plane} |")),
            "{plane} missing from the report:\n{report}"
        );
    }
    let plots = std::fs::read_dir(out_dir.path().join(workload))
        .unwrap()
        .flatten();
    assert!(
        plots
            .filter(|p| p.path().extension().is_some_and(|e| e == "png"))
            .count()
            >= 2,
        "the report's plots are missing"
    );
}

#[test]
fn boutique_benchmark_runs_on_every_plane() {
    quick(
        "boutique",
        "sockmap,poll,knative,grpc",
        19080,
        "boutique_benchmark_runs_on_every_plane",
    );
}

#[test]
fn motion_benchmark_runs_with_scale_to_zero() {
    quick(
        "motion",
        "sockmap,knative-s2z",
        19180,
        "motion_benchmark_runs_with_scale_to_zero",
    );
}

#[test]
fn parking_benchmark_runs() {
    quick(
        "parking",
        "sockmap,poll,knative",
        19280,
        "parking_benchmark_runs",
    );
}
