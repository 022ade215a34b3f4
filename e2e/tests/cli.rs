//! The `spright` command line: chain files are checked before anything starts.

use spright_e2e::bin_dir;
use std::process::Command;

fn spright(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_dir().join("spright"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_accepts_the_shipped_chains() {
    let configs = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
    for file in ["demo-chain.yaml", "demo-chain-containers.yaml"] {
        let (ok, text) = spright(&["check", &format!("{configs}/{file}")]);
        assert!(ok, "{file}: {text}");
        assert!(
            text.contains("chain demo is valid: 3 functions, 2 routes"),
            "{text}"
        );
    }
    // The chain file inside the Kubernetes ConfigMap.
    let manifest =
        std::fs::read_to_string(format!("{configs}/kubernetes/demo-chain.yaml")).unwrap();
    let start = manifest
        .find("chain.yaml: |\n")
        .expect("ConfigMap with chain.yaml")
        + 14;
    let chain: String = manifest[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k8s-chain.yaml");
    std::fs::write(&file, chain).unwrap();
    let (ok, text) = spright(&["check", file.to_str().unwrap()]);
    assert!(ok, "the Kubernetes ConfigMap's chain: {text}");
}

#[test]
fn malformed_chain_files_are_refused_with_the_field_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("chain: x\npool: {buffers: 8, buffer_size: 4KiB}\nfunctions: [{name: a, id: 1, colour: red}]\nroutes: [{path: /, function: a}]\n", "unknown field `colour`"),
        ("chain: x\npool: {buffers: 8, buffer_size: 4KiB}\nfunctions: [{name: a, id: 1}, {name: b, id: 1}]\nroutes: [{path: /, function: a}]\n", "functions[1].id: id 1 is already used by function \"a\""),
        ("chain: x\npool: {buffers: 8, buffer_size: 4KiB}\nfunctions: [{name: a, id: 1}]\nroutes: [{path: /, sequence: [a, ghost]}]\n", "routes[0].sequence[1]: function \"ghost\" is not defined"),
        ("chain: x\npool: {buffers: 0, buffer_size: 4KiB}\nfunctions: [{name: a, id: 1}]\nroutes: [{path: /, function: a}]\n", "pool: buffers must be at least 1"),
        ("chain: x\npool: {buffers: 8\n", "chain.yaml"),
    ];
    for (text, needle) in cases {
        let file = dir.path().join("chain.yaml");
        std::fs::write(&file, text).unwrap();
        let file = file.to_str().unwrap();
        let (ok, out) = spright(&["check", file]);
        assert!(!ok, "check accepted {text:?}");
        assert!(
            out.contains(needle),
            "check on {text:?} said {out:?}, not {needle:?}"
        );
        // `up` refuses it the same way, before creating anything.
        let run = dir.path().join("run");
        let (ok, out) = spright(&["up", file, "--runtime-root", run.to_str().unwrap()]);
        assert!(!ok && out.contains(needle), "up on {text:?} said {out:?}");
        assert!(
            !run.exists(),
            "up created a runtime directory for a bad chain"
        );
    }
    let (ok, out) = spright(&["check", "/nonexistent/chain.yaml"]);
    assert!(
        !ok && out.contains("cannot read chain file /nonexistent/chain.yaml"),
        "{out}"
    );
}

#[test]
fn status_into_a_closed_pipe_is_quiet() {
    if !spright_test_support::have_root("status_into_a_closed_pipe_is_quiet") {
        return;
    }
    let yaml = spright_e2e::demo_chain_yaml(false);
    let chain = spright_e2e::ChainUnderTest::start(spright_e2e::ChainSpec {
        yaml: &yaml,
        routing: "sockmap",
        args: &[],
    });
    // `spright status | head -0`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(bin_dir().join("spright"))
        .args(["status", &chain.name, "--runtime-root"])
        .arg(&chain.runtime_root)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(stderr.is_empty(), "said on stderr: {stderr}");
    // Into a reader, the same command prints the chain.
    let (ok, said) = spright(&[
        "status",
        &chain.name,
        "--runtime-root",
        chain.runtime_root.to_str().unwrap(),
    ]);
    assert!(
        ok && said.contains(&format!("chain {}", chain.name)),
        "{said}"
    );
}
