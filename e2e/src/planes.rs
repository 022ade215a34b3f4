//! The data planes the workloads run on, started for a test: spright itself (`spright up` with
//! a routing mode) or one of the baselines (`spright-baseline knative|grpc`), all serving the
//! same chain file and HTTP API.

use crate::{bin_dir, launcher, wait_for, watch_stdout, ChainSpec, ChainUnderTest};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// A data plane to run a workload on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaneKind {
    /// spright with a routing mode: "sockmap", "poll" or "user".
    Spright(&'static str),
    /// Functions as HTTP servers behind nginx sidecars, every hop through a gateway.
    Knative,
    /// The same, with idle functions stopped after `grace` and cold-started on demand.
    KnativeScaleToZero { grace_ms: u64 },
    /// Services calling each other directly over gRPC.
    Grpc,
}

impl std::fmt::Display for PlaneKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlaneKind::Spright(routing) => f.write_str(routing),
            PlaneKind::Knative => f.write_str("knative"),
            PlaneKind::KnativeScaleToZero { .. } => f.write_str("knative-s2z"),
            PlaneKind::Grpc => f.write_str("grpc"),
        }
    }
}

/// A running data plane; stopped when dropped.
pub struct Plane {
    pub kind: PlaneKind,
    pub addr: SocketAddr,
    running: Running,
}

enum Running {
    Chain(Box<ChainUnderTest>),
    Baseline(Child),
}

impl Plane {
    /// Starts `kind` serving the chain file at `chain_file` (a shipped workload's chain).
    pub fn start(kind: PlaneKind, chain_file: &Path) -> Plane {
        let text = std::fs::read_to_string(chain_file)
            .unwrap_or_else(|e| panic!("{}: {e}", chain_file.display()));
        match kind {
            PlaneKind::Spright(routing) => {
                let yaml = rename_chain(&text);
                let chain = ChainUnderTest::start(ChainSpec {
                    yaml: &yaml,
                    routing,
                    args: &[],
                });
                Plane {
                    kind,
                    addr: chain.addr,
                    running: Running::Chain(Box::new(chain)),
                }
            }
            PlaneKind::Knative | PlaneKind::KnativeScaleToZero { .. } | PlaneKind::Grpc => {
                let (child, addr) = start_baseline(kind, chain_file);
                Plane {
                    kind,
                    addr,
                    running: Running::Baseline(child),
                }
            }
        }
    }

    /// Pids of the processes the plane runs (below its launcher) whose argv[0] ends with
    /// `binary`.
    pub fn processes(&self, binary: &str) -> Vec<u32> {
        let root = match &self.running {
            Running::Chain(c) => c.launcher_pid(),
            Running::Baseline(child) => child.id(),
        };
        descendants(root)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .and_then(|c| c.split(|&b| b == 0).next().map(<[u8]>::to_vec))
                    .is_some_and(|argv0| argv0.ends_with(binary.as_bytes()))
            })
            .collect()
    }

    /// The spright chain, for planes that are one.
    pub fn chain(&self) -> Option<&ChainUnderTest> {
        match &self.running {
            Running::Chain(c) => Some(c),
            Running::Baseline(_) => None,
        }
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if let Running::Baseline(child) = &mut self.running {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let stopped = (0..400).any(|_| {
                let done = matches!(child.try_wait(), Ok(Some(_)));
                if !done {
                    std::thread::sleep(Duration::from_millis(25));
                }
                done
            });
            if !stopped {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// `root`'s descendants, from /proc.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some(c) = children.get(&p) {
            out.extend(c);
            todo.extend(c);
        }
    }
    out
}

/// The chain file with `{name}` for its name, so that tests running side by side do not share
/// a runtime directory or pool.
fn rename_chain(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.starts_with("chain:") {
                "chain: {name}"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_baseline(kind: PlaneKind, chain_file: &Path) -> (Child, SocketAddr) {
    let bins = bin_dir();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = launcher(&bins, "spright-baseline");
    match kind {
        PlaneKind::Knative => cmd.arg("knative"),
        PlaneKind::KnativeScaleToZero { grace_ms } => cmd
            .arg("knative")
            .arg("--scale-to-zero")
            .arg(format!("{grace_ms}ms")),
        PlaneKind::Grpc => cmd.arg("grpc"),
        PlaneKind::Spright(_) => unreachable!(),
    };
    cmd.arg(chain_file).arg("--listen").arg(addr.to_string());
    let mut child = cmd.spawn().expect("start spright-baseline");
    let rx = watch_stdout(&mut child, |line| line.starts_with("ready").then_some(()));
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let status = child.wait();
        panic!("spright-baseline {kind} did not come up within 30 s ({status:?}); run with SPRIGHT_TEST_LOGS=1 to see why");
    }
    // Ready means every part answered; the listening socket is the last thing to check.
    wait_for("the baseline to accept", Duration::from_secs(10), || {
        std::net::TcpStream::connect(addr).ok()
    });
    (child, addr)
}
