//! Containers without SPRIGHT annotations run under the spright runtime exactly as under runc.

use spright_e2e::containerd::{text, Containerd};
use spright_e2e::have_root;

const SPRIGHT: &str = "io.containerd.spright.v1";
const RUNC: &str = "io.containerd.runc.v2";

#[test]
fn a_plain_container_behaves_as_under_runc() {
    if !have_root("a_plain_container_behaves_as_under_runc") {
        return;
    }
    let run_root = tempfile::tempdir().unwrap();
    let c = Containerd::start(run_root.path());
    let script = "echo out; echo err >&2; cat /etc/passwd | head -1; id -u; exit 7";
    let mut results = Vec::new();
    for (i, runtime) in [RUNC, SPRIGHT].iter().enumerate() {
        let id = format!("plain-{i}");
        let out = c.ctr(&[
            "run",
            "--rm",
            "--runtime",
            runtime,
            "spright.local/functions:latest",
            &id,
            "/bin/sh",
            "-c",
            script,
        ]);
        results.push((out.status.code(), text(&out)));
    }
    assert_eq!(results[0].0, Some(7), "runc: {}\n{}", results[0].1, c.log());
    assert_eq!(
        results[1],
        results[0],
        "spright differs from runc\n{}",
        c.log()
    );
    assert!(
        results[1].1.contains("out") && results[1].1.contains("err"),
        "{:?}",
        results[1]
    );
}
