//! The single-node Kubernetes cluster of `e2e/kubernetes/cluster.sh`, driven from tests: `up`
//! on start, `down` on drop, kubectl with the cluster's admin kubeconfig.

use crate::containerd::text;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// How long one kubectl command may take before the test calls it hung.
const KUBECTL_LIMIT: Duration = Duration::from_secs(120);

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kubernetes/cluster.sh")
}

/// A running cluster; `cluster.sh down` when dropped.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    /// The node's name (the cluster has one node).
    pub node: String,
    up: bool,
}

impl Cluster {
    /// `cluster.sh up`, failing the test with what it printed if the cluster does not start.
    pub fn up() -> Cluster {
        // A cluster a failed earlier run left behind would make `up` refuse.
        let _ = Command::new(script())
            .arg("down")
            .stdout(Stdio::null())
            .status();
        let out = Command::new(script())
            .arg("up")
            .output()
            .expect("run e2e/kubernetes/cluster.sh");
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let _ = Command::new(script()).arg("down").status();
            panic!("cluster.sh up failed ({}):\n{}", out.status, text(&out));
        }
        let export = |var: &str| {
            said.lines()
                .find_map(|l| l.strip_prefix(&format!("export {var}=")))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("cluster.sh up printed no {var} line:\n{said}"))
        };
        let kubeconfig = PathBuf::from(export("KUBECONFIG"));
        let bin = export("PATH");
        let bin = bin.strip_suffix(":$PATH").unwrap_or(&bin);
        let mut cluster = Cluster {
            kubeconfig,
            kubectl: Path::new(bin).join("kubectl"),
            node: String::new(),
            up: true,
        };
        cluster.node = cluster.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
        cluster
    }

    /// `kubectl <args>` against the cluster, failing the test if it hangs.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start kubectl");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            stdin.write_all(input.as_bytes()).expect("kubectl stdin");
        }
        // Output is read while kubectl runs (a full pipe would stall it), on a thread, so the
        // wait has a deadline.
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(KUBECTL_LIMIT) {
            Ok(out) => out.expect("kubectl output"),
            Err(_) => {
                // SAFETY: kill(2) of the kubectl we started, which has not been reaped.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                panic!("kubectl {args:?} hung for {KUBECTL_LIMIT:?}");
            }
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_input(args, None)
    }

    /// `kubectl <args>`, failing the test unless it succeeds; its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits for `kubectl rollout status deployment/<name>`, failing the test with the pods and
    /// the node's logs if it does not finish within `timeout_s` seconds.
    pub fn rolled_out(&self, deployment: &str, timeout_s: u32) {
        let out = self.kubectl(&[
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            &format!("--timeout={timeout_s}s"),
        ]);
        if !out.status.success() {
            let pods = self.kubectl(&["get", "pods", "-o", "wide"]);
            panic!(
                "deployment {deployment} did not roll out: {}\n{}\n{}",
                text(&out),
                String::from_utf8_lossy(&pods.stdout),
                self.logs()
            );
        }
    }

    /// The name of the first pod with label `app=<app>`.
    pub fn pod_of(&self, app: &str) -> String {
        self.ok(&[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply: {}\n{yaml}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The last lines of each component's log, for a failure message.
    pub fn logs(&self) -> String {
        let Some(dir) = self.kubeconfig.parent().and_then(Path::parent) else {
            return String::new();
        };
        let mut all = String::new();
        for c in ["kubelet", "containerd"] {
            let log = std::fs::read_to_string(dir.join(format!("log/{c}.log"))).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            all += &format!("--- {c} (last lines)\n");
            for l in &lines[lines.len().saturating_sub(30)..] {
                all += l;
                all.push('\n');
            }
        }
        all
    }

    /// `cluster.sh down`; true when it succeeded.
    pub fn down(&mut self) -> bool {
        if !self.up {
            return true;
        }
        self.up = false;
        Command::new(script())
            .arg("down")
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
    }
}
