//! nerdctl driven against a private containerd ([`Containerd`]) with nothing of the host's:
//! its own data root, CNI configuration directory, config file (`NERDCTL_TOML`), HOME and a
//! clean environment (nerdctl copies its environment into the OCI hooks it writes), and a bridge
//! network of its own on a subnet no route of the host uses. Everything it leaves is removed
//! on drop: containers, the network, its bridge, host-local leases, and the iptables rules CNI
//! added for the network (plus CNI's shared chains, if they were not there before).

use crate::containerd::{cache_dir, text, versions_file, Containerd};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one nerdctl command may take before the test calls it hung.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// The nerdctl commands that run CNI (ADD through the container's OCI hook, or network setup).
const CNI_COMMANDS: [&str; 5] = ["run", "create", "start", "restart", "network"];

/// Held while a CNI command runs: the CNI firewall plugin makes its shared chains
/// (`CNI-ISOLATION-STAGE-1`, ...) by check-then-create, so two first uses at once fail with
/// "CHAIN_USER_ADD failed (File exists)". Tests on several containerds run in parallel threads.
static CNI_SETUP: Mutex<()> = Mutex::new(());

/// The nerdctl version of `e2e/containerd/versions` (its `nerdctl` line).
pub fn version() -> String {
    let path = versions_file();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(|l| {
            l.split('#')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
        })
        .find_map(|f| (f.first() == Some(&"nerdctl")).then(|| f.get(2).map(|v| v.to_string())))
        .flatten()
        .unwrap_or_else(|| panic!("{} has no nerdctl line", path.display()))
}

/// Where `e2e/containerd/fetch.sh` puts that version: `$SPRIGHT_TEST_CACHE/nerdctl/<version>`.
pub fn dir() -> PathBuf {
    cache_dir()
        .parent()
        .expect("the cache has a parent")
        .join("nerdctl")
        .join(version())
}

/// The nerdctl binary for `test`, if fetched (its `complete` stamp and binary are there). If
/// not, the test is skipped with a line saying why, except under CI (`CI=true`), where it fails.
pub fn for_test(test: &str) -> Option<PathBuf> {
    let dir = dir();
    let binary = dir.join("bin/nerdctl");
    if dir.join("complete").is_file() && binary.is_file() {
        return Some(binary);
    }
    let why = format!(
        "nerdctl {} is not in {} (no complete stamp or binary): run e2e/containerd/fetch.sh",
        version(),
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: {why}");
    }
    eprintln!("skipping {test}: {why}");
    None
}

/// A private bridge network made with `nerdctl network create`.
#[derive(Clone, Debug)]
pub struct Network {
    pub name: String,
    /// The /24 it allocates from (the first three octets).
    pub subnet: [u8; 3],
    /// The Linux bridge CNI made for it (nerdctl names it after the network's id).
    pub bridge: String,
}

impl Network {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        ip.octets()[..3] == self.subnet
    }

    pub fn cidr(&self) -> String {
        let [a, b, c] = self.subnet;
        format!("{a}.{b}.{c}.0/24")
    }
}

/// nerdctl pointed at one private containerd.
pub struct Nerdctl<'a> {
    pub containerd: &'a Containerd,
    pub binary: PathBuf,
    dir: tempfile::TempDir,
    network: Option<Network>,
}

impl<'a> Nerdctl<'a> {
    pub fn new(containerd: &'a Containerd, binary: &Path) -> Nerdctl<'a> {
        let dir = tempfile::Builder::new()
            .prefix("spright-nerdctl-")
            .tempdir()
            .expect("temp dir");
        for sub in ["data", "cni", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // An empty config file: nothing from /etc/nerdctl/nerdctl.toml.
        std::fs::write(dir.path().join("nerdctl.toml"), "").unwrap();
        SharedChains::enter();
        Nerdctl {
            containerd,
            binary: binary.to_owned(),
            dir,
            network: None,
        }
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir.path().join("cni")
    }

    /// nerdctl with the global flags that keep it private, in a clean environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("HOME", self.dir.path().join("home"))
            .env("NERDCTL_TOML", self.dir.path().join("nerdctl.toml"))
            .arg("--address")
            .arg(&self.containerd.address)
            .args(["--namespace", &self.containerd.namespace])
            .arg("--data-root")
            .arg(self.data_root())
            .args(["--cni-path", "/usr/lib/cni"])
            .arg("--cni-netconfpath")
            .arg(self.cni_conf_dir())
            .args(["--snapshotter", "overlayfs", "--cgroup-manager", "cgroupfs"]);
        cmd
    }

    /// Runs `nerdctl <args>` with stdin from `input`, failing the test if it takes longer than
    /// a minute (a hung nerdctl is a finding, not a wait).
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let _cni = args
            .first()
            .is_some_and(|a| CNI_COMMANDS.contains(a))
            .then(|| CNI_SETUP.lock().unwrap_or_else(|e| e.into_inner()));
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start nerdctl");
        let mut stdin = child.stdin.take().expect("stdin piped");
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&input);
        });
        let mut stdout = child.stdout.take().expect("stdout piped");
        let mut stderr = child.stderr.take().expect("stderr piped");
        let out_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
            v
        });
        let err_reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
            v
        });
        let begun = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for nerdctl") {
                break status;
            }
            if begun.elapsed() > COMMAND_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "nerdctl {args:?} on {} hung for {COMMAND_LIMIT:?}\n{}",
                    self.containerd.version,
                    self.containerd.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = writer.join();
        Output {
            status,
            stdout: out_reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, b"")
    }

    /// Runs `nerdctl <args>`, fails the test unless it succeeds, returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "nerdctl {args:?} on {}: {}\n{}",
            self.containerd.version,
            text(&out),
            self.containerd.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `nerdctl inspect -f <format> <container>`, trimmed.
    pub fn inspect(&self, container: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, container])
            .trim()
            .to_owned()
    }

    /// Creates this nerdctl's network (once): a bridge network on a /24 in 10.0.0.0/8 that no
    /// route of the host overlaps, without masquerading (nothing leaves the host).
    pub fn network(&mut self) -> Network {
        if let Some(n) = &self.network {
            return n.clone();
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("spn-{pid}-{n}");
        let subnet = free_subnet(pid, n);
        let cidr = format!("{}.{}.{}.0/24", subnet[0], subnet[1], subnet[2]);
        self.ok(&[
            "network",
            "create",
            "--subnet",
            &cidr,
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=false",
            &name,
        ]);
        let conflist = self
            .cni_conf_dir()
            .join(&self.containerd.namespace)
            .join(format!("nerdctl-{name}.conflist"));
        let conf = std::fs::read_to_string(&conflist)
            .unwrap_or_else(|e| panic!("{}: {e}", conflist.display()));
        let bridge = json_string_after(&conf, "\"bridge\":")
            .unwrap_or_else(|| panic!("no bridge in {}:\n{conf}", conflist.display()));
        let network = Network {
            name,
            subnet,
            bridge,
        };
        self.network = Some(network.clone());
        network
    }

    fn cleanup(&mut self) {
        // Containers first: their removal runs CNI DEL (portmap and firewall rules, leases).
        let ids = self.run(&["ps", "-a", "-q", "--no-trunc"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.run(&["rm", "-f", id]);
        }
        if let Some(network) = self.network.take() {
            let _ = self.run(&["network", "rm", &network.name]);
            let _ = Command::new("ip")
                .args(["link", "delete", &network.bridge])
                .stderr(Stdio::null())
                .status();
            // The firewall plugin's per-bridge isolation rules outlive `network rm`; rules of
            // containers a failed test left are caught by the subnet.
            delete_rules_mentioning(&[&network.bridge, &format!("{}.", dotted(network.subnet))]);
            let _ = std::fs::remove_dir_all(format!("/var/lib/cni/networks/{}", network.name));
            if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
                let prefix = format!("{}-", network.name);
                for e in entries.filter_map(Result::ok) {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
    }
}

impl Drop for Nerdctl<'_> {
    fn drop(&mut self) {
        self.cleanup();
        SharedChains::leave();
    }
}

fn dotted([a, b, c]: [u8; 3]) -> String {
    format!("{a}.{b}.{c}")
}

/// The first string value after `key` in a JSON text.
fn json_string_after(json: &str, key: &str) -> Option<String> {
    let rest = &json[json.find(key)? + key.len()..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// A /24 in 10.0.0.0/8 for network `n` of this process that no IPv4 route of the host
/// overlaps (so the bridge shadows nothing and traffic to it stays on the host).
fn free_subnet(pid: u32, n: u32) -> [u8; 3] {
    let routes = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let prefixes: Vec<(u32, u32)> = routes
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let mut first = words.next()?;
            if matches!(
                first,
                "local"
                    | "broadcast"
                    | "unicast"
                    | "unreachable"
                    | "blackhole"
                    | "prohibit"
                    | "throw"
                    | "multicast"
                    | "anycast"
            ) {
                first = words.next()?;
            }
            if first == "default" {
                return None;
            }
            let (addr, len) = first.split_once('/').unwrap_or((first, "32"));
            Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len.parse().ok()?))
        })
        .collect();
    for i in 0..250u32 {
        let b = (200 + (pid + i) % 50) as u8;
        let c = ((n * 7 + i) % 250) as u8;
        let net = u32::from(Ipv4Addr::new(10, b, c, 0));
        let overlaps = prefixes.iter().any(|&(addr, len)| {
            let len = len.min(24);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            addr & mask == net & mask
        });
        if !overlaps {
            return [10, b, c];
        }
    }
    panic!("no free /24 in 10.200.0.0/13 for a test network:\n{routes}");
}

/// `iptables-save` lines of every table that contain any of `needles`.
pub fn iptables_rules_mentioning(needles: &[&str]) -> Vec<String> {
    let out = Command::new("iptables-save").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("-A ") && needles.iter().any(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// One table of `iptables-save`.
struct Table {
    name: String,
    chains: Vec<String>,
    /// `-A CHAIN ...` lines.
    rules: Vec<String>,
}

/// `(table, chain)` pairs.
type Chains = BTreeSet<(String, String)>;

/// Every table's chains and rules.
fn iptables_state() -> Vec<Table> {
    let text = Command::new("iptables-save")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut tables: Vec<Table> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            tables.push(Table {
                name: name.to_owned(),
                chains: Vec::new(),
                rules: Vec::new(),
            });
        } else if let Some(chain) = line.strip_prefix(':') {
            if let Some(t) = tables.last_mut() {
                t.chains
                    .push(chain.split_whitespace().next().unwrap_or("").to_owned());
            }
        } else if line.starts_with("-A ") {
            if let Some(t) = tables.last_mut() {
                t.rules.push(line.to_owned());
            }
        }
    }
    tables
}

/// Splits an iptables-save rule into words as a shell would (its comments are quoted).
fn rule_words(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = rule.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Deletes `rule` (an iptables-save `-A CHAIN ...` line) from `table`.
fn delete_rule(table: &str, rule: &str) {
    let mut words = rule_words(rule);
    if words.first().map(String::as_str) != Some("-A") {
        return;
    }
    words[0] = "-D".into();
    let _ = Command::new("iptables")
        .args(["-w", "-t", table])
        .args(&words)
        .stderr(Stdio::null())
        .status();
}

/// Deletes every rule, of any table, that contains one of `needles`.
pub fn delete_rules_mentioning(needles: &[&str]) {
    for table in iptables_state() {
        for rule in &table.rules {
            if needles.iter().any(|n| rule.contains(n)) {
                delete_rule(&table.name, rule);
            }
        }
    }
}

/// CNI's shared chains (`CNI-FORWARD`, `CNI-HOSTPORT-DNAT`, ...): the first nerdctl of the
/// process notes which exist; when the last one is gone, those CNI made since are removed if
/// they hold no rule of any container or network any more (only their fixed scaffolding).
struct SharedChains;

/// How many nerdctls of this process are alive, and the CNI chains there were before the first.
static SHARED: Mutex<(usize, Option<Chains>)> = Mutex::new((0, None));

impl SharedChains {
    fn enter() {
        let mut s = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 == 0 {
            s.1 = Some(cni_chains());
        }
        s.0 += 1;
    }

    fn leave() {
        let mut s = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        s.0 -= 1;
        if s.0 > 0 {
            return;
        }
        let before = s.1.take().unwrap_or_default();
        let made: Chains = cni_chains().difference(&before).cloned().collect();
        if made.is_empty() {
            return;
        }
        let state = iptables_state();
        // A rule naming an address, port or interface belongs to someone's container or network.
        let specific = ["-s ", "-d ", "-i ", "-o ", "--dport", "--to-destination"];
        let in_use = state.iter().any(|table| {
            table.rules.iter().any(|r| {
                let chain = r.split_whitespace().nth(1).unwrap_or("");
                made.contains(&(table.name.clone(), chain.to_owned()))
                    && specific.iter().any(|s| r.contains(s))
            })
        });
        if in_use {
            eprintln!("leaving CNI's iptables chains {made:?}: rules of other containers in them");
            return;
        }
        for Table {
            name: table, rules, ..
        } in &state
        {
            // Jumps into the chains (from the built-in chains and from each other), then the
            // chains themselves.
            for rule in rules {
                let words = rule_words(rule);
                let target = words
                    .windows(2)
                    .find(|w| w[0] == "-j" || w[0] == "-g")
                    .map(|w| w[1].clone());
                if target.is_some_and(|t| made.contains(&(table.clone(), t))) {
                    delete_rule(table, rule);
                }
            }
            for (t, chain) in &made {
                if t == table {
                    let _ = Command::new("iptables")
                        .args(["-w", "-t", table, "-F", chain])
                        .stderr(Stdio::null())
                        .status();
                }
            }
            for (t, chain) in &made {
                if t == table {
                    let _ = Command::new("iptables")
                        .args(["-w", "-t", table, "-X", chain])
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

fn cni_chains() -> Chains {
    iptables_state()
        .into_iter()
        .flat_map(|t| {
            let name = t.name;
            t.chains
                .into_iter()
                .filter(|c| c.starts_with("CNI-"))
                .map(move |c| (name.clone(), c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_like_a_shell() {
        let rule = r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"n\" id: \"x\"" -j CNI-DN-1"#;
        assert_eq!(
            rule_words(rule),
            [
                "-A",
                "CNI-HOSTPORT-DNAT",
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "dnat name: \"n\" id: \"x\"",
                "-j",
                "CNI-DN-1"
            ]
        );
    }

    #[test]
    fn the_bridge_is_read_from_the_conflist() {
        let conf =
            r#"{"plugins": [{"type": "bridge", "bridge": "br-6e556e369f56", "isGateway": true}]}"#;
        assert_eq!(
            json_string_after(conf, "\"bridge\":").as_deref(),
            Some("br-6e556e369f56")
        );
    }
}
