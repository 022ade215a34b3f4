//! What the baseline tests share: starting the launcher and the test function as real
//! processes, a small HTTP/1.1 client, and looking at process trees in /proc.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub use spright_test_support::wait_for;

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_spright-baseline");
pub const TESTFN: &str = env!("CARGO_BIN_EXE_spright-baseline-testfn");

/// The test chain: `echo` (HTTP entry, calls `shout`) and `shout` (method `Upper`), with an
/// RPC-style route and, unless `rpc_only`, a sequence route.
pub fn chain_yaml(rpc_only: bool) -> String {
    let mut text = String::from(
        "chain: baseline-test
pool: { buffers: 64, buffer_size: 64KiB }
gateway: { timeout: 30s }
functions:
  - { name: echo, id: 1, command: [spright-baseline-testfn, echo], calls: [shout] }
  - { name: shout, id: 2, command: [spright-baseline-testfn, shout] }
routes:
  - { method: POST, path: /echo, function: echo }
",
    );
    if !rpc_only {
        text.push_str("  - { method: POST, path: /twice, sequence: [echo, echo] }\n");
    }
    text
}

/// A loopback address that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// PATH with the test function's directory first, so chain files can name it bare.
fn path_with_testfn() -> String {
    let dir = Path::new(TESTFN).parent().unwrap().display().to_string();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

/// A child process, killed if the test ends without stopping it; its stderr is collected.
pub struct Proc {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    /// Says when stderr has reached its end.
    stderr_end: mpsc::Receiver<()>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> (Proc, Option<std::process::ChildStdout>) {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        let (end, stderr_end) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
            let _ = end.send(());
        });
        let stdout = child.stdout.take();
        let proc = Proc {
            child,
            stderr,
            stderr_end,
        };
        (proc, stdout)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then waits (10 s at most) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        self.wait(Duration::from_secs(10))
    }

    /// Waits for the exit, and for its stderr to be read to the end (children it started
    /// share the pipe, so this also waits a little for them).
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let child = &mut self.child;
        let status = wait_for("the process to exit", within, || child.try_wait().unwrap());
        let _ = self.stderr_end.recv_timeout(Duration::from_secs(5));
        status
    }
}

impl Drop for Proc {
    /// A failed test still stops the process politely, so the launcher cleans up after itself.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test function run by hand, hosted as `env` says.
pub fn testfn(service: &str, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(TESTFN);
    cmd.arg(service).env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(&mut cmd).0
}

/// A running `spright-baseline`, and the directory of its chain file.
pub struct Launched {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// Starts `spright-baseline <mode> <chain> --listen <free> <extra>` and waits for `ready:`.
pub fn launch(mode: &str, chain: &str, extra: &[&str]) -> Result<Launched, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chain.yaml");
    std::fs::write(&file, chain).unwrap();
    let addr = free_addr();
    let (mut proc, stdout) = Proc::spawn(
        Command::new(LAUNCHER)
            .arg(mode)
            .arg(&file)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("PATH", path_with_testfn())
            .env("RUST_BACKTRACE", "0"),
    );
    let (tx, rx) = mpsc::channel();
    let stdout = stdout.unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) if line == format!("ready: http://{addr}") => Ok(Launched {
            proc,
            addr,
            _dir: dir,
        }),
        Ok(line) => panic!("unexpected first line {line:?}"),
        Err(_) => {
            let status = proc.wait(Duration::from_secs(30));
            Err(format!("{status}: {}", proc.stderr()))
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Conn {
            reader: BufReader::new(s),
        }
    }

    pub fn request(&mut self, method: &str, target: &str, body: &[u8]) -> Response {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let s = self.reader.get_mut();
        s.write_all(head.as_bytes()).unwrap();
        // A server may answer (413) and close before taking the whole body: read the answer.
        let _ = s.write_all(body);
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {target}: bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        let r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let len: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{method} {target}: no content-length in {:?}", r.headers));
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        Response { body, ..r }
    }
}

pub fn request(addr: SocketAddr, method: &str, target: &str, body: &[u8]) -> Response {
    Conn::open(addr).request(method, target, body)
}

pub fn post(addr: SocketAddr, target: &str, body: &str) -> Response {
    request(addr, "POST", target, body.as_bytes())
}

pub fn get(addr: SocketAddr, target: &str) -> Response {
    request(addr, "GET", target, b"")
}

/// Waits until `addr` accepts connections.
pub fn wait_listening(addr: SocketAddr) {
    wait_for(
        &format!("{addr} to accept"),
        Duration::from_secs(20),
        || TcpStream::connect(addr).ok(),
    );
}

/// Every live process below `pid`, as (pid, command name).
pub fn descendants(pid: i32) -> Vec<(i32, String)> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold anything, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next();
        let ppid: i32 = rest.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if state != Some("Z") {
            parents.push((p, ppid, comm));
        }
    }
    let mut found: Vec<(i32, String)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, ppid, comm) in &parents {
            if *ppid == parent {
                found.push((*p, comm.clone()));
                frontier.push(*p);
            }
        }
    }
    found
}

/// Whether process `pid` still exists (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// The directories named by `-p` on the command lines of `pids` (nginx's private dirs).
pub fn nginx_dirs(pids: &[i32]) -> Vec<PathBuf> {
    pids.iter()
        .filter_map(|p| std::fs::read(format!("/proc/{p}/cmdline")).ok())
        .filter_map(|cmd| {
            let args: Vec<String> = cmd
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let i = args.iter().position(|a| a == "-p")?;
            args.get(i + 1).map(PathBuf::from)
        })
        .collect()
}

/// Stops the launcher with SIGTERM and checks it leaves nothing behind: it exits 0, and every
/// process it had started is gone, as are nginx's directories.
pub fn terminate_cleanly(launched: &mut Launched) {
    let pid = launched.proc.pid();
    let children: Vec<i32> = descendants(pid).into_iter().map(|(p, _)| p).collect();
    let dirs = nginx_dirs(&children);
    let status = launched.proc.terminate();
    assert!(
        status.success(),
        "launcher {status}: {}",
        launched.proc.stderr()
    );
    let started = Instant::now();
    for p in children {
        wait_for(
            &format!("process {p} to be gone"),
            Duration::from_secs(5),
            || (!alive(p)).then_some(()),
        );
    }
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
        let tmp = d.parent().unwrap();
        assert!(!tmp.exists(), "{} left behind", tmp.display());
    }
    eprintln!("launcher and children gone in {:?}", started.elapsed());
}
