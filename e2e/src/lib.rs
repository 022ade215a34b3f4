//! Harness for spright's end-to-end tests: runs a chain with the real `spright up` (real
//! pool-manager, SPROXY in the kernel or the relay, gateway, function processes) in a private
//! runtime directory, and talks real HTTP to it.

pub mod containerd;
pub mod http;
pub mod kubernetes;
pub mod load;
pub mod nerdctl;
pub mod netns;
pub mod planes;
pub mod rogue;
pub mod workloads;

use spright_core::manifest::{ChainKey, Manifest};
use spright_core::pool::{Pool, PoolStats};
use spright_core::protocol::RouterStats;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use spright_test_support::{have_root, wait_for};

/// The directory holding the workspace's built binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>; a benchmark binary is in target/<profile>
    let mut dir = exe.parent().expect("target dir").to_owned();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    for b in [
        "spright",
        "spright-pool-manager",
        "spright-gateway",
        "spright-testfn",
    ] {
        assert!(
            dir.join(b).is_file(),
            "{} is missing: build the workspace first (cargo build --workspace --bins)",
            dir.join(b).display()
        );
    }
    dir
}

/// The shipped demo chain, `{name}` in place of its name, with a generous timeout (tests
/// decide what is slow); with `containers`, its functions are images instead of commands, so
/// `spright up` runs only the pool-manager and the gateway.
pub fn demo_chain_yaml(containers: bool) -> String {
    let mut text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/demo-chain.yaml"
    ))
    .expect("configs/demo-chain.yaml")
    .replace("chain: demo", "chain: {name}")
    .replace("timeout: 5s", "timeout: 30s");
    if containers {
        for f in ["parse", "transform", "render"] {
            text = text.replace(
                &format!("command: [spright-demo-{f}]"),
                "image: spright.local/functions:latest",
            );
        }
    }
    text
}

/// Two test functions: `front` may call `back`; `rogue` is declared but never started (a test
/// or a benchmark registers in its place, to send what it likes).
pub const TESTFN_YAML: &str = r#"
chain: {name}
pool:
  buffers: 64
  buffer_size: 16KiB
gateway:
  timeout: 30s
functions:
  - name: front
    id: 1
    command: [spright-testfn]
    calls: [back]
  - name: back
    id: 2
    command: [spright-testfn]
  - name: rogue
    id: 9
    calls: [back]
routes:
  - path: /front
    function: front
  - path: /back
    function: back
  - path: /pipe
    sequence: [front, back]
"#;

/// Sends `signal` to a process of a chain under test (a pid of 0 or 1 is a test's mistake).
pub fn signal(pid: u32, signal: libc::c_int) {
    assert!(pid > 1, "no process to signal (pid {pid})");
    // SAFETY: signalling a process the test or benchmark started.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill -{signal} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

/// A unique, valid chain name for this test process.
pub fn unique_chain_name(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        tag
    )
}

/// A command for one of the workspace's launchers (`spright`, `spright-baseline`): the
/// functions its chain file names are found beside it, its stdout is piped for the caller to
/// watch, its stderr shown only with `SPRIGHT_TEST_LOGS` set.
pub(crate) fn launcher(bins: &Path, program: &str) -> Command {
    let mut cmd = Command::new(bins.join(program));
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    )
    .stdout(Stdio::piped())
    .stderr(if std::env::var_os("SPRIGHT_TEST_LOGS").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    cmd
}

/// Sends what `matches` finds in each (trimmed) line `child` prints.
pub(crate) fn watch_stdout<T: Send + 'static>(
    child: &mut Child,
    matches: impl Fn(&str) -> Option<T> + Send + 'static,
) -> std::sync::mpsc::Receiver<T> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(found) = matches(line.trim()) {
                let _ = tx.send(found);
            }
        }
    });
    rx
}

/// A running chain.
pub struct ChainUnderTest {
    pub name: String,
    pub addr: SocketAddr,
    pub runtime_root: PathBuf,
    pub chain_file: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// What to start.
pub struct ChainSpec<'a> {
    /// The chain file, with `{name}` where the chain's name goes; `listen` is supplied.
    pub yaml: &'a str,
    pub routing: &'a str,
    /// Extra arguments for `spright up`.
    pub args: &'a [&'a str],
}

impl ChainUnderTest {
    /// Starts `spright up` and waits for its ready banner.
    pub fn start(spec: ChainSpec<'_>) -> ChainUnderTest {
        let bins = bin_dir();
        let dir = tempfile::tempdir().expect("temp dir");
        let name = unique_chain_name(spec.routing);
        let chain_file = dir.path().join("chain.yaml");
        std::fs::write(&chain_file, spec.yaml.replace("{name}", &name)).unwrap();
        let runtime_root = dir.path().join("run");
        let mut cmd = launcher(&bins, "spright");
        cmd.arg("up")
            .arg(&chain_file)
            .args(["--routing", spec.routing, "--listen", "127.0.0.1:0"])
            .arg("--runtime-root")
            .arg(&runtime_root)
            .args(spec.args);
        let mut child = cmd.spawn().expect("start spright up");
        let rx = watch_stdout(&mut child, |line| {
            line.strip_prefix("gateway  http://").map(str::to_owned)
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().expect("gateway address"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("spright up did not come up within 30 s ({status:?}); run with SPRIGHT_TEST_LOGS=1 to see why");
            }
        };
        ChainUnderTest {
            name,
            addr,
            runtime_root,
            chain_file,
            child: Some(child),
            _dir: dir,
        }
    }

    pub fn manifest(&self) -> Manifest {
        Manifest::load(&self.runtime_root, &ChainKey::chain(&self.name)).expect("manifest")
    }

    pub fn stats(&self) -> RouterStats {
        spright_core::protocol::query_stats(&self.manifest().control_socket, Duration::from_secs(2))
            .expect("router stats")
    }

    pub fn pool_stats(&self) -> PoolStats {
        Pool::open(&self.manifest().pool.path)
            .expect("pool")
            .stats()
    }

    /// Pids of `function`'s registered instances.
    pub fn pids(&self, function: &str) -> Vec<u32> {
        self.stats()
            .functions
            .into_iter()
            .find(|f| f.name == function)
            .map(|f| f.pids)
            .unwrap_or_default()
    }

    /// Waits until every buffer of the pool is free again.
    pub fn wait_pool_idle(&self) -> PoolStats {
        let pool = Pool::open(&self.manifest().pool.path).expect("pool");
        wait_for(
            "every pool buffer to be free",
            Duration::from_secs(10),
            || {
                let s = pool.stats();
                (s.free == s.total).then_some(s)
            },
        )
    }

    /// Waits until `function` has `n` registered instances; returns their pids.
    pub fn wait_instances(&self, function: &str, n: usize) -> Vec<u32> {
        wait_for(
            &format!("{n} instance(s) of {function}"),
            Duration::from_secs(10),
            || {
                let pids = self.pids(function);
                (pids.len() == n).then_some(pids)
            },
        )
    }

    /// The value of an unlabelled metric from the gateway's `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text = http::get(self.addr, "/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// The pid of `spright up`.
    pub fn launcher_pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the chain with SIGINT, as Ctrl-C would, and checks it removed its pool, pins and
    /// runtime directory.
    pub fn stop(mut self) {
        let manifest = self.manifest();
        self.interrupt();
        assert!(!manifest.pool.path.exists(), "pool file left behind");
        assert!(
            !spright_core::load::load_path(&manifest.pool.path).exists(),
            "load board left behind"
        );
        assert!(
            !manifest.runtime_dir.exists(),
            "runtime directory left behind"
        );
        let pins = Path::new("/sys/fs/bpf/spright").join(&self.name);
        assert!(!pins.exists(), "map pins left behind at {}", pins.display());
    }

    fn interrupt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
        let status = wait_for("spright up to stop", Duration::from_secs(20), || {
            child.try_wait().ok().flatten()
        });
        assert!(status.success(), "spright up exited with {status}");
    }
}

impl Drop for ChainUnderTest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            for _ in 0..400 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
