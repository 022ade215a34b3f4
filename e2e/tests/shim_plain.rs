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

#[test]
fn a_terminal_container_behaves_as_under_runc() {
    if !have_root("a_terminal_container_behaves_as_under_runc") {
        return;
    }
    let run_root = tempfile::tempdir().unwrap();
    let c = Containerd::start(run_root.path());
    let mut results = Vec::new();
    for (i, runtime) in [RUNC, SPRIGHT].iter().enumerate() {
        // `ctr run -t` needs a terminal of its own: script(1) gives it one.
        let ctr = format!(
            "ctr --address {} --namespace {} run --rm -t --runtime {runtime} \
             spright.local/functions:latest tty-{i} /bin/sh -c 'tty; echo hello; exit 5'",
            c.address.display(),
            c.namespace
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &ctr, "/dev/null"])
            .output()
            .expect("script(1)");
        results.push((
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    assert_eq!(results[0].0, Some(5), "runc: {:?}\n{}", results[0], c.log());
    assert!(
        results[0].1.contains("/dev/pts/"),
        "runc gave no terminal: {:?}",
        results[0]
    );
    assert_eq!(
        results[1],
        results[0],
        "spright differs from runc\n{}",
        c.log()
    );
}

#[test]
fn task_operations_work_under_spright() {
    if !have_root("task_operations_work_under_spright") {
        return;
    }
    let run_root = tempfile::tempdir().unwrap();
    let c = Containerd::start(run_root.path());
    let ok = |args: &[&str]| {
        let out = c.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\n{}",
            text(&out),
            c.log()
        );
        text(&out)
    };
    ok(&[
        "run",
        "-d",
        "--runtime",
        SPRIGHT,
        "spright.local/functions:latest",
        "ops",
        "/bin/sleep",
        "300",
    ]);
    let status = |want: &str| {
        let list = ok(&["tasks", "ls"]);
        let line = list
            .lines()
            .find(|l| l.starts_with("ops "))
            .unwrap_or_default()
            .to_owned();
        assert!(line.contains(want), "wanted {want}: {list}");
        line
    };
    let line = status("RUNNING");
    let pid = line.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        ok(&["tasks", "ps", "ops"]).contains(&pid),
        "ps lists the init pid {pid}"
    );
    assert!(ok(&["tasks", "metrics", "ops"])
        .to_lowercase()
        .contains("memory"));
    ok(&["tasks", "pause", "ops"]);
    status("PAUSED");
    ok(&["tasks", "resume", "ops"]);
    status("RUNNING");

    // stdin reaches an exec'd process, and its end (CloseIO) ends the process.
    let mut exec = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&c.address)
        .args([
            "--namespace",
            &c.namespace,
            "tasks",
            "exec",
            "--exec-id",
            "cat",
            "ops",
            "/bin/cat",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = exec.stdin.take().unwrap();
        stdin.write_all(b"through stdin\n").unwrap();
    }
    let out = exec.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");

    ok(&["tasks", "kill", "--signal", "SIGKILL", "ops"]);
    spright_e2e::wait_for(
        "the task to stop",
        std::time::Duration::from_secs(10),
        || {
            let list = ok(&["tasks", "ls"]);
            list.lines()
                .any(|l| l.starts_with("ops ") && l.contains("STOPPED"))
                .then_some(())
        },
    );
    ok(&["tasks", "delete", "ops"]);
    ok(&["containers", "delete", "ops"]);
}
