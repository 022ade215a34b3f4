//! A private containerd for a test, of any version listed in `e2e/containerd/versions`: its own
//! root, state, sockets, namespace and pod network, that version's runc v2 shim and the spright
//! shim as runtimes, the CRI plugin on, and everything removed afterwards (also when the test
//! fails).
//!
//! Its configuration is a base for the version's config layout (1.x: config version 2, 2.x:
//! version 3) deep-merged with the shipped snippet for that layout,
//! `configs/containerd/spright-runtime-{1.x,2.x}.toml`, read from the file: the tests run
//! exactly what the README tells users to merge.

use crate::{bin_dir, have_root, wait_for};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The containerd series the tests cover, each a line of `e2e/containerd/versions`.
pub const SERIES: [&str; 6] = ["1.6", "1.7", "2.0", "2.1", "2.2", "2.3"];

/// The pause image the CRI plugin uses for pod sandboxes (from `e2e/images/build.sh`).
pub const PAUSE_IMAGE: &str = "spright.local/pause:latest";

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `e2e/containerd/versions`: which version of each series the tests run.
pub fn versions_file() -> PathBuf {
    workspace_root().join("e2e/containerd/versions")
}

/// Where `e2e/containerd/fetch.sh` puts containerd binaries: `$SPRIGHT_TEST_CACHE/containerd`
/// (default `/var/cache/spright-test/containerd`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SPRIGHT_TEST_CACHE")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/spright-test"))
        .join("containerd")
}

/// One containerd version of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// `1.6` .. `2.3`.
    pub series: String,
    /// As written in the versions file (also the name of its cache directory).
    pub version: String,
    /// Its `containerd`, `ctr` and `containerd-shim-runc-v2`.
    pub bin_dir: PathBuf,
}

/// The binaries a version needs.
const BINARIES: [&str; 3] = ["containerd", "ctr", "containerd-shim-runc-v2"];

impl Version {
    /// Every containerd version in `e2e/containerd/versions`.
    pub fn all() -> Vec<Version> {
        let path = versions_file();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        parse_versions(&text, &cache_dir()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The version of `series` in `e2e/containerd/versions`.
    pub fn of_series(series: &str) -> Version {
        Version::all()
            .into_iter()
            .find(|v| v.series == series)
            .unwrap_or_else(|| {
                panic!(
                    "{} has no line for containerd {series}",
                    versions_file().display()
                )
            })
    }

    pub fn major(&self) -> u32 {
        self.number().0
    }

    /// (major, minor) of the series.
    pub fn number(&self) -> (u32, u32) {
        series_number(&self.series).expect("series checked when parsed")
    }

    /// The directory holding the version's `bin/` and its `complete` stamp.
    pub fn dir(&self) -> PathBuf {
        self.bin_dir
            .parent()
            .expect("bin dir has a parent")
            .to_owned()
    }

    /// True once fetch.sh has finished with this version: its `complete` stamp (beside `bin/`)
    /// and every binary are there.
    pub fn is_fetched(&self) -> bool {
        self.dir().join("complete").is_file()
            && BINARIES.iter().all(|b| self.bin_dir.join(b).is_file())
    }

    /// The shipped config snippet for this version's config layout.
    pub fn snippet(&self) -> PathBuf {
        let layout = if self.major() >= 2 { "2.x" } else { "1.x" };
        workspace_root().join(format!("configs/containerd/spright-runtime-{layout}.toml"))
    }

    /// The config version this containerd's layout uses.
    pub fn config_version(&self) -> i64 {
        if self.major() >= 2 {
            3
        } else {
            2
        }
    }

    pub fn containerd(&self) -> PathBuf {
        self.bin_dir.join("containerd")
    }

    pub fn ctr(&self) -> PathBuf {
        self.bin_dir.join("ctr")
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd {} ({})", self.series, self.version)
    }
}

fn series_number(series: &str) -> Option<(u32, u32)> {
    let (major, minor) = series.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Parses the versions file: `#` comments, blank lines, and `<series> <source> <version>
/// [extra]` lines (a `nerdctl` line is not a containerd series and is skipped).
pub fn parse_versions(text: &str, cache: &Path) -> Result<Vec<Version>, String> {
    let mut versions: Vec<Version> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields[0] == "nerdctl" {
            continue;
        }
        let [series, _source, version, ..] = fields[..] else {
            return Err(format!(
                "line {}: want `<series> <source> <version> [extra]`, got {line:?}",
                n + 1
            ));
        };
        if series_number(series).is_none() {
            return Err(format!(
                "line {}: {series:?} is not a series like 2.1",
                n + 1
            ));
        }
        if versions.iter().any(|v| v.series == series) {
            return Err(format!(
                "line {}: a second line for containerd {series} (tests run one version per series)",
                n + 1
            ));
        }
        versions.push(Version {
            series: series.to_owned(),
            version: version.to_owned(),
            bin_dir: cache.join(version).join("bin"),
        });
    }
    Ok(versions)
}

/// For a test on containerd `series`: its version when the test may run. Off root, or when the
/// version's binaries have not been fetched, the test is skipped (a line says why), except under
/// CI (`CI=true`), where either fails the test.
pub fn containerd_for_test(series: &str, test: &str) -> Option<Version> {
    let test = format!("{test} on containerd {series}");
    if !have_root(&test) {
        return None;
    }
    let version = Version::of_series(series);
    if version.is_fetched() {
        return Some(version);
    }
    let why = format!(
        "{version} is not in {} (no complete stamp or binaries): run e2e/containerd/fetch.sh",
        version.dir().display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: {why}");
    }
    eprintln!("skipping {test}: {why}");
    None
}

/// Runs `scenario` on containerd `series` if it may run (see [`containerd_for_test`]).
pub fn run_on(series: &str, test: &str, scenario: fn(&Version)) {
    if let Some(version) = containerd_for_test(series, test) {
        scenario(&version);
    }
}

/// Makes each named scenario (a `fn(&Version)` in the calling file) a test per containerd
/// series: `scenario::on_1_6`, ..., `scenario::on_2_3`, so `cargo test -- on_2_1` runs one
/// version.
#[macro_export]
macro_rules! on_every_containerd {
    ($($scenario:ident),+ $(,)?) => {$(
        mod $scenario {
            #[test]
            fn on_1_6() {
                $crate::containerd::run_on("1.6", stringify!($scenario), super::$scenario)
            }
            #[test]
            fn on_1_7() {
                $crate::containerd::run_on("1.7", stringify!($scenario), super::$scenario)
            }
            #[test]
            fn on_2_0() {
                $crate::containerd::run_on("2.0", stringify!($scenario), super::$scenario)
            }
            #[test]
            fn on_2_1() {
                $crate::containerd::run_on("2.1", stringify!($scenario), super::$scenario)
            }
            #[test]
            fn on_2_2() {
                $crate::containerd::run_on("2.2", stringify!($scenario), super::$scenario)
            }
            #[test]
            fn on_2_3() {
                $crate::containerd::run_on("2.3", stringify!($scenario), super::$scenario)
            }
        }
    )+};
}

/// Where `e2e/images/build.sh` puts the test images.
pub fn images_dir() -> PathBuf {
    let dir = bin_dir().parent().expect("target dir").join("images");
    for image in ["functions.tar", "pause.tar"] {
        assert!(
            dir.join(image).is_file(),
            "{} is missing: run e2e/images/build.sh (scripts/test.sh does)",
            dir.join(image).display()
        );
    }
    dir
}

/// A TOML string (quoted and escaped).
fn q(s: impl AsRef<str>) -> String {
    toml::Value::from(s.as_ref()).to_string()
}

/// The configuration the tests need, for `version`'s layout, before the snippet is merged.
fn base_config(version: &Version, d: &Path, address: &Path) -> String {
    let common = format!(
        r#"version = {config_version}
root = {root}
state = {state}
# Nothing the tests use, or host-wide: NRI (on by default in 2.x) listens on /var/run/nri.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.nri.v1.nri"]

[grpc]
  address = {address}
[ttrpc]
  address = {ttrpc}
[debug]
  address = {debug}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"#,
        config_version = version.config_version(),
        root = q(d.join("root").to_string_lossy()),
        state = q(d.join("state").to_string_lossy()),
        address = q(address.to_string_lossy()),
        ttrpc = q(format!("{}.ttrpc", address.display())),
        debug = q(format!("{}.debug", address.display())),
        opt = q(d.join("opt").to_string_lossy()),
    );
    let cni = q(d.join("cni-conf").to_string_lossy());
    let cri = if version.major() < 2 {
        format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {pause}
  restrict_oom_score_adj = true
  # Pod network namespaces under our state directory, so cleanup finds them.
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = {cni}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
            pause = q(PAUSE_IMAGE),
        )
    } else {
        // 2.0 knows only `bin_dir`; 2.1 added `bin_dirs` and deprecated `bin_dir`.
        let bin_dirs = if version.number() >= (2, 1) {
            r#"bin_dirs = ["/usr/lib/cni"]"#
        } else {
            r#"bin_dir = "/usr/lib/cni""#
        };
        format!(
            r#"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = {pause}

[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  # Pod network namespaces under our state directory, so cleanup finds them.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    {bin_dirs}
    conf_dir = {cni}
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
            pause = q(PAUSE_IMAGE),
        )
    };
    common + &cri
}

/// Merges `over` into `base`: tables key by key, recursively; anything else in `over`
/// replaces what `base` has.
pub fn merge_toml(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_toml(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `version`'s whole configuration: the base deep-merged with the shipped snippet.
pub fn config_for(version: &Version, d: &Path, address: &Path) -> String {
    let mut config: toml::Table = base_config(version, d, address)
        .parse()
        .expect("base config is TOML");
    let path = version.snippet();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let snippet: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()));
    assert_eq!(
        snippet.get("version").and_then(toml::Value::as_integer),
        Some(version.config_version()),
        "{} is not for config version {} ({version})",
        path.display(),
        version.config_version()
    );
    merge_toml(&mut config, snippet);
    toml::to_string(&config).expect("config serialises")
}

pub struct Containerd {
    pub version: Version,
    pub dir: tempfile::TempDir,
    pub address: PathBuf,
    pub namespace: String,
    /// The spright runtime root the shim looks for chains in.
    pub runtime_root: PathBuf,
    network: String,
    bridge: String,
    child: Option<Child>,
}

impl Containerd {
    /// Starts `version`'s containerd with the spright shim and that version's runc shim on its
    /// PATH, looking for chains under `runtime_root`, checks its CRI plugins loaded, and
    /// imports the functions image into the test's namespace (see [`Containerd::import_for_cri`]
    /// for pods).
    pub fn start(version: &Version, runtime_root: &Path) -> Containerd {
        let begun = std::time::Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("spright-ctrd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let address = d.join("c.sock");
        for sub in ["root", "state", "cni-conf", "opt"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        // Unique per instance: runc's state directory is per namespace, and tests of one
        // process run their containerds side by side, each with its own pod network.
        static INSTANCES: AtomicU32 = AtomicU32::new(0);
        let n = INSTANCES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let namespace = format!("spright-test-{pid}-{n}");
        let network = format!("spright-test-{pid}-{n}");
        let bridge = format!("sp{}n{}", pid % 1_000_000, n % 1000);
        // A bridge network for pods, so function pods need no host network.
        std::fs::write(
            d.join("cni-conf/10-spright-test.conflist"),
            format!(
                r#"{{"cniVersion": "0.4.0", "name": "{network}", "plugins": [
                  {{"type": "bridge", "bridge": "{bridge}", "isGateway": true, "ipMasq": false,
                    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.{a}.{b}.0/24"}}]]}}}},
                  {{"type": "loopback"}}]}}"#,
                a = 100 + pid % 100,
                b = n % 250,
            ),
        )
        .unwrap();
        std::fs::write(d.join("config.toml"), config_for(version, d, &address)).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        // The spright shim first, then this version's runc shim (containerd looks shims up on
        // its PATH before beside its own binary).
        let path = format!(
            "{}:{}:{}",
            bin_dir().display(),
            version.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(version.containerd())
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .env("SPRIGHT_RUNTIME_ROOT", runtime_root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", version.containerd().display()));
        let c = Containerd {
            version: version.clone(),
            address,
            namespace,
            runtime_root: runtime_root.to_owned(),
            network,
            bridge,
            child: Some(child),
            dir,
        };
        wait_for(
            &format!("{version} to answer"),
            Duration::from_secs(30),
            || c.ctr(&["version"]).status.success().then_some(()),
        );
        c.check_cri_plugins();
        let started = begun.elapsed();
        c.import(&c.namespace, &["functions.tar"]);
        if std::env::var_os("SPRIGHT_TEST_LOGS").is_some() {
            eprintln!(
                "{version}: up in {started:?}, functions image imported in {:?}",
                begun.elapsed() - started
            );
        }
        c
    }

    /// The plugins this version's CRI is made of.
    fn cri_plugins(&self) -> &'static [(&'static str, &'static str)] {
        if self.version.major() < 2 {
            &[("io.containerd.grpc.v1", "cri")]
        } else {
            &[
                ("io.containerd.cri.v1", "images"),
                ("io.containerd.cri.v1", "runtime"),
                ("io.containerd.grpc.v1", "cri"),
            ]
        }
    }

    /// Fails unless `ctr plugins ls` shows every CRI plugin `ok`.
    pub fn check_cri_plugins(&self) {
        let out = self.ctr(&["plugins", "ls"]);
        let list = text(&out);
        assert!(out.status.success(), "ctr plugins ls: {list}");
        for (kind, id) in self.cri_plugins() {
            let status = list.lines().find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[0] == *kind && f[1] == *id).then(|| f[f.len() - 1].to_owned())
            });
            assert_eq!(
                status.as_deref(),
                Some("ok"),
                "{}: plugin {kind}.{id} not ok:\n{list}\n{}",
                self.version,
                self.log()
            );
        }
    }

    /// Imports the functions and pause images into `k8s.io`, CRI's namespace.
    pub fn import_for_cri(&self) {
        self.import("k8s.io", &["functions.tar", "pause.tar"]);
    }

    fn import(&self, namespace: &str, images: &[&str]) {
        let dir = images_dir();
        for image in images {
            let out = self.ctr_in(
                namespace,
                &["images", "import", dir.join(image).to_str().unwrap()],
            );
            assert!(
                out.status.success(),
                "{}: import {image} into {namespace}: {}\n{}",
                self.version,
                text(&out),
                self.log()
            );
        }
    }

    /// Runs this version's `ctr` against this containerd in the test's namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.namespace, args)
    }

    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        self.ctr_command_in(namespace)
            .args(args)
            .output()
            .expect("run ctr")
    }

    /// This version's `ctr`, pointed at this containerd and the test's namespace, for the
    /// caller to add arguments and stdio to.
    pub fn ctr_command(&self) -> Command {
        self.ctr_command_in(&self.namespace)
    }

    fn ctr_command_in(&self, namespace: &str) -> Command {
        let mut cmd = Command::new(self.version.ctr());
        cmd.arg("--address")
            .arg(&self.address)
            .args(["--namespace", namespace]);
        cmd
    }

    /// The same as a shell command line (for `script -c`); the paths are plain.
    pub fn ctr_shell(&self) -> String {
        format!(
            "{} --address {} --namespace {}",
            self.version.ctr().display(),
            self.address.display(),
            self.namespace
        )
    }

    /// containerd's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// Pids of the shims this containerd started that are still running: they name its
    /// address (`-address`, or `TTRPC_ADDRESS` in their environment).
    pub fn shim_pids(&self) -> Vec<u32> {
        self.shim_processes()
            .into_iter()
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Pids of this containerd's running shims started for `id` (`-id <id>`).
    pub fn shim_pids_for(&self, id: &str) -> Vec<u32> {
        self.shim_processes()
            .into_iter()
            .filter(|(_, args)| args.windows(2).any(|w| w[0] == "-id" && w[1] == id))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// This containerd's running shims: pid and command line.
    pub fn shim_processes(&self) -> Vec<(u32, Vec<String>)> {
        let address = self.address.to_string_lossy().into_owned();
        let ttrpc = format!("TTRPC_ADDRESS={address}.ttrpc");
        let own = self.child.as_ref().map(Child::id);
        let mut found = Vec::new();
        for pid in all_pids() {
            if Some(pid) == own {
                continue;
            }
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let Some(program) = args.first() else {
                continue;
            };
            if !Path::new(program)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("containerd-shim"))
            {
                continue;
            }
            let by_flag = args
                .windows(2)
                .any(|w| w[0] == "-address" && w[1] == address);
            let by_env = std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == ttrpc.as_bytes()));
            if by_flag || by_env {
                found.push((pid, args));
            }
        }
        found
    }

    /// Kills containerd itself at once (SIGKILL), leaving its shims and containers running:
    /// what a crash leaves for [`Drop`] to clean up.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn stop(&mut self) {
        // Containers first, so no shim outlives its containerd; remember CRI's (k8s.io is
        // shared by every containerd of the host, only these are ours).
        let mut ours_in_k8s = Vec::new();
        if self.child.is_some() {
            for ns in [self.namespace.clone(), "k8s.io".to_string()] {
                let tasks = self.ctr_in(&ns, &["tasks", "ls", "--quiet"]);
                for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
                    let _ = self.ctr_in(&ns, &["tasks", "kill", "--signal", "SIGKILL", id]);
                    let _ = self.ctr_in(&ns, &["tasks", "delete", "--force", id]);
                }
                let containers = self.ctr_in(&ns, &["containers", "ls", "--quiet"]);
                for id in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
                    if ns == "k8s.io" {
                        ours_in_k8s.push(id.to_owned());
                    }
                    let _ = self.ctr_in(&ns, &["containers", "delete", id]);
                }
            }
        }
        // Shims still around, and the sockets they listen on under /run/containerd/s.
        let shims = self.shim_pids();
        let sockets = shim_sockets(&shims);
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            for _ in 0..200 {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in shims.iter().copied().chain(self.shim_pids()) {
            // SAFETY: plain kill(2) of a shim this containerd started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        for pid in &shims {
            // Shims are not our children (they daemonise): wait for them to be gone.
            for _ in 0..200 {
                let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
                let gone = state.as_ref().is_none_or(|s| {
                    s.rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('Z'))
                });
                if gone {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // runc state: every container of our namespace, and ours in k8s.io, under both the
        // runc v2 shim's root and spright's; `runc delete --force` also kills what a killed
        // shim left running.
        for root in ["/run/containerd/runc", "/run/containerd/spright"] {
            let ns_root = Path::new(root).join(&self.namespace);
            let ids: Vec<String> = std::fs::read_dir(&ns_root)
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            for id in &ids {
                runc_delete(&ns_root, id);
            }
            let _ = std::fs::remove_dir_all(&ns_root);
            let k8s_root = Path::new(root).join("k8s.io");
            for id in &ours_in_k8s {
                if k8s_root.join(id).exists() {
                    runc_delete(&k8s_root, id);
                    let _ = std::fs::remove_dir_all(k8s_root.join(id));
                }
            }
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        // The namespace's cgroups (runc puts containers at /<namespace>/<id>, in every v1
        // hierarchy and, on hybrid hosts, the unified one): empty now, but left by runc.
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.filter_map(Result::ok) {
                remove_cgroup(&h.path().join(&self.namespace));
            }
        }
        remove_cgroup(&Path::new("/sys/fs/cgroup/unified").join(&self.namespace));
        // Mounts under our directory (rootfs, pod network namespaces, shm), innermost first.
        let root = self.dir.path().to_string_lossy().into_owned();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
            .filter(|m| m == &root || m.starts_with(&format!("{root}/")))
            .collect();
        mounts.sort_by(|a, b| b.cmp(a));
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: umount2 with a valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
        // The pod network's bridge, address leases and cached results.
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/var/lib/cni/networks/{}", self.network));
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            let prefix = format!("{}-", self.network);
            for e in entries.filter_map(Result::ok) {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The paths under `/run/containerd/s` of the unix sockets `pids` hold.
fn shim_sockets(pids: &[u32]) -> Vec<PathBuf> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    // /proc/net/unix: Num RefCount Protocol Flags Type St Inode Path
    std::fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (inode, path) = (f.get(6)?, f.get(7)?);
            (inodes.contains(*inode) && path.starts_with("/run/containerd/s/"))
                .then(|| PathBuf::from(path))
        })
        .collect()
}

/// Removes an (empty) cgroup and the cgroups below it, innermost first.
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.filter_map(Result::ok) {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}

fn runc_delete(root: &Path, id: &str) {
    let _ = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["delete", "--force", id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_versions_file_lists_every_series_once() {
        let versions = Version::all();
        let series: Vec<&str> = versions.iter().map(|v| v.series.as_str()).collect();
        assert_eq!(series.len(), SERIES.len(), "{series:?}");
        for s in SERIES {
            assert!(
                series.contains(&s),
                "no containerd {s} in the versions file"
            );
        }
    }

    #[test]
    fn versions_parse_with_comments_extras_and_nerdctl() {
        let text = "# series source version [extra]\n\n1.6 debian-bookworm 1.6.20~ds1-1+deb12u3\n\
                    2.3 go v2.3.4 built-with-go1.26   # trailing\nnerdctl go v2.1.6\n";
        let v = parse_versions(text, Path::new("/c")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].series, "1.6");
        assert_eq!(v[0].version, "1.6.20~ds1-1+deb12u3");
        assert_eq!(v[0].bin_dir, Path::new("/c/1.6.20~ds1-1+deb12u3/bin"));
        assert_eq!(v[1].number(), (2, 3));
        assert!(parse_versions("1.6 debian\n", Path::new("/c")).is_err());
        assert!(parse_versions("x.y go v1\n", Path::new("/c")).is_err());
        assert!(parse_versions("2.1 go v2.1.9\n2.1 go v2.1.8\n", Path::new("/c")).is_err());
    }

    #[test]
    fn each_layout_merges_its_snippet() {
        let d = Path::new("/tmp/x");
        for (series, table) in [
            (
                "1.7",
                r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes"#,
            ),
            (
                "2.1",
                r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes"#,
            ),
        ] {
            let v = Version {
                series: series.into(),
                version: "x".into(),
                bin_dir: "/x/bin".into(),
            };
            let config: toml::Table = config_for(&v, d, &d.join("c.sock")).parse().unwrap();
            let mut runtimes = toml::Value::Table(config.clone());
            for key in [
                "plugins",
                table.split('"').nth(1).unwrap(),
                "containerd",
                "runtimes",
            ] {
                runtimes = runtimes[key].clone();
            }
            // The base's runc and the snippet's spright, side by side.
            assert_eq!(
                runtimes["runc"]["runtime_type"].as_str(),
                Some("io.containerd.runc.v2")
            );
            let spright = &runtimes["spright"];
            assert_eq!(
                spright["runtime_type"].as_str(),
                Some("io.containerd.spright.v1")
            );
            for key in ["pod_annotations", "container_annotations"] {
                assert_eq!(
                    spright[key].as_array().unwrap()[0].as_str(),
                    Some("spright.io/*")
                );
            }
            assert_eq!(config["version"].as_integer(), Some(v.config_version()));
        }
    }

    #[test]
    fn a_snippet_overrides_leaves_and_keeps_siblings() {
        let mut base: toml::Table = "a = 1\n[t]\nx = 1\ny = [1]\n".parse().unwrap();
        merge_toml(&mut base, "a = 2\n[t]\ny = [2]\nz = 3\n".parse().unwrap());
        assert_eq!(
            base,
            "a = 2\n[t]\nx = 1\ny = [2]\nz = 3\n"
                .parse::<toml::Table>()
                .unwrap()
        );
    }
}
