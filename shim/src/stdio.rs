//! A process's standard streams: the fifos containerd hands the shim on one side, pipes or a
//! pseudo-terminal to the process on the other, and a thread copying each way.

use crate::runc::ChildIo;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The fifo paths containerd gave for a process ("" for a stream it does not want).
#[derive(Debug, Clone, Default)]
pub struct Fifos {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Counts output copiers still running, so an exit can be reported after its output.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    done: Condvar,
}

impl Pending {
    fn start(self: &Arc<Self>) -> PendingGuard {
        *self.count.lock().unwrap() += 1;
        PendingGuard(self.clone())
    }
}

struct PendingGuard(Arc<Pending>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut n = self.0.count.lock().unwrap();
        *n -= 1;
        if *n == 0 {
            self.0.done.notify_all();
        }
    }
}

/// Where the stdin copier writes. The copier writes outside the lock (a write into a full pipe
/// blocks), so closing never waits for it; the process sees end-of-file once the last write
/// in progress is done.
type StdinSlot = Arc<Mutex<Option<Arc<File>>>>;

/// Closes a process's stdin (CloseIO), usable without holding anything else.
#[derive(Clone)]
pub struct StdinCloser(StdinSlot);

impl StdinCloser {
    pub fn close(&self) {
        self.0.lock().unwrap().take();
    }
}

/// The shim's side of a process's streams.
pub struct ProcessIo {
    /// Where the stdin copier writes; taken (closed) by `close_stdin`.
    stdin: StdinSlot,
    /// The pseudo-terminal's master, for resizing.
    console: Option<File>,
    output: Arc<Pending>,
}

impl ProcessIo {
    fn new() -> ProcessIo {
        ProcessIo {
            stdin: Arc::new(Mutex::new(None)),
            console: None,
            output: Arc::new(Pending::default()),
        }
    }

    /// Something that closes the process's stdin (CloseIO): it reads end-of-file.
    pub fn stdin_closer(&self) -> StdinCloser {
        StdinCloser(self.stdin.clone())
    }

    /// Sets the terminal size (ResizePty).
    pub fn resize(&self, width: u32, height: u32) -> io::Result<()> {
        let Some(console) = &self.console else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the process has no terminal",
            ));
        };
        let size = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        if unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Something to wait on until all of the process's output has been copied out.
    pub fn output_waiter(&self) -> OutputWaiter {
        OutputWaiter(self.output.clone())
    }
}

/// Waits for a process's output copiers to finish.
pub struct OutputWaiter(Arc<Pending>);

impl OutputWaiter {
    /// Blocks until the output is out, or `limit` passed.
    pub fn wait(&self, limit: Duration) {
        let n = self.0.count.lock().unwrap();
        let _ = self.0.done.wait_timeout_while(n, limit, |n| *n > 0);
    }
}

/// Copies `from` into the fifo at `path` until end of input. The fifo is opened for writing
/// once the client reads it (no output is written into the void), then the shim opens it for
/// reading too and keeps that open: a client that goes away later (containerd restarting, ctr
/// detaching) never turns the process's writes into SIGPIPE. If writing fails anyway, the
/// output is drained and dropped rather than left to block the process.
fn copy_out(mut from: File, path: String, guard: PendingGuard) {
    std::thread::spawn(move || {
        let _guard = guard;
        let mut to = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .ok();
        let _keep_reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path);
        let mut buf = [0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                // EIO is how a pseudo-terminal reports that its last writer is gone.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Some(t) = to.as_mut() {
                        if t.write_all(&buf[..n]).is_err() {
                            to = None;
                        }
                    }
                }
            }
        }
    });
}

/// Copies the stdin fifo into the process until the client closes it or CloseIO.
fn copy_in(path: String, to: StdinSlot, close_at_end: bool) {
    std::thread::spawn(move || {
        let Ok(mut from) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        else {
            return;
        };
        let mut buf = [0u8; 32 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let Some(target) = to.lock().unwrap().clone() else {
                return;
            };
            if (&*target).write_all(&buf[..n]).is_err() {
                return;
            }
        }
        if close_at_end {
            to.lock().unwrap().take();
        }
    });
}

fn pipe() -> io::Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    Ok((File::from(r), File::from(w)))
}

/// Pipes between the process and the fifos: what runc passes on, and the shim's side.
///
/// containerd may give URIs instead of fifo paths for the output, as for the runc v2 shim
/// (`nerdctl run -d` does: nerdctl is its own logging driver): `binary:///path?k=v` starts that
/// logging binary with the process's stdout and stderr as its descriptors 3 and 4 and waits
/// until it closes descriptor 5 (ready); `file:///path` appends both streams to the file;
/// `fifo://path` or a plain path is a fifo. `id` and `namespace` are the container's, for the
/// logging binary (`CONTAINER_ID`, `CONTAINER_NAMESPACE`).
pub fn pipes(fifos: &Fifos, id: &str, namespace: &str) -> io::Result<(ChildIo, ProcessIo)> {
    let io = ProcessIo::new();
    let mut child = ChildIo::default();
    if !fifos.stdin.is_empty() {
        let (r, w) = pipe()?;
        child.stdin = Some(OwnedFd::from(r));
        *io.stdin.lock().unwrap() = Some(Arc::new(w));
        copy_in(fifos.stdin.clone(), io.stdin.clone(), true);
    }
    if let Some(rest) = fifos.stdout.strip_prefix("binary://") {
        let (out, err) = start_logging_binary(rest, id, namespace)?;
        child.stdout = Some(OwnedFd::from(out));
        child.stderr = Some(OwnedFd::from(err));
        return Ok((child, io));
    }
    if let Some(rest) = fifos.stdout.strip_prefix("file://") {
        let path = PathBuf::from(percent_decode(rest.split('?').next().unwrap_or(rest)));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        child.stderr = Some(OwnedFd::from(file.try_clone()?));
        child.stdout = Some(OwnedFd::from(file));
        return Ok((child, io));
    }
    for (path, slot) in [
        (&fifos.stdout, &mut child.stdout),
        (&fifos.stderr, &mut child.stderr),
    ] {
        let path = path.strip_prefix("fifo://").unwrap_or(path);
        if path.is_empty() {
            continue;
        }
        let (r, w) = pipe()?;
        *slot = Some(OwnedFd::from(w));
        copy_out(r, path.to_owned(), io.output.start());
    }
    Ok((child, io))
}

/// `%XX` escapes of a URI component decoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts the logging binary of a `binary://` URI (`rest` is what follows the scheme): its path,
/// and for each query pair the key and the value as arguments, as containerd's runc shim does.
/// Returns the write ends of the stdout and stderr pipes it reads, once it is ready.
fn start_logging_binary(rest: &str, id: &str, namespace: &str) -> io::Result<(File, File)> {
    use std::os::unix::process::CommandExt;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(percent_decode(k));
        if pair.contains('=') {
            args.push(percent_decode(v));
        }
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (mut ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = std::process::Command::new(percent_decode(path));
    // Only these two variables, as the runc v2 shim gives it.
    cmd.args(&args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so placing one never overwrites another.
            let mut high = [0; 3];
            for (h, fd) in high.iter_mut().zip(fds) {
                *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *h < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // Not waited for here: the shim's reaper reaps it once the process's output has ended.
    let _logger = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting logging binary {path}: {e}")))?;
    drop((out_r, err_r, ready_w));
    // Ready when it writes or closes descriptor 5 (exits included); one that says nothing
    // for 10 s fails the create rather than hanging it.
    let mut ready = libc::pollfd {
        fd: ready_r.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one descriptor we own.
    if unsafe { libc::poll(&mut ready, 1, 10_000) } == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("logging binary {path} was not ready within 10 s"),
        ));
    }
    let mut byte = [0u8; 1];
    match ready_r.read(&mut byte) {
        Ok(0 | 1) => Ok((out_w, err_w)),
        Ok(_) => unreachable!("a one-byte read"),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("logging binary {path}: {e}"),
        )),
    }
}

/// A socket runc sends a new pseudo-terminal's master to (`--console-socket`).
pub struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> io::Result<ConsoleSocket> {
        let dir = Path::new("/run/containerd/spright");
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!(
            "pty-{}-{}.sock",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master runc sent (it has, once `runc create`/`exec` returned successfully).
    pub fn receive(&self) -> io::Result<OwnedFd> {
        self.listener.set_nonblocking(true)?;
        let (conn, _) = self.listener.accept()?;
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 4096];
        let (_, fd) = spright_core::fdpass::recv_with_fd(conn.as_raw_fd(), &mut buf)?;
        fd.ok_or_else(|| io::Error::other("runc sent no terminal"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connects a process's pseudo-terminal master to the fifos.
pub fn console(master: OwnedFd, fifos: &Fifos) -> io::Result<ProcessIo> {
    let master = File::from(master);
    let mut io = ProcessIo::new();
    if !fifos.stdin.is_empty() {
        *io.stdin.lock().unwrap() = Some(Arc::new(master.try_clone()?));
        // Closing the master would hang the terminal up; stdin ends by stopping the copy.
        copy_in(fifos.stdin.clone(), io.stdin.clone(), false);
    }
    if !fifos.stdout.is_empty() {
        copy_out(master.try_clone()?, fifos.stdout.clone(), io.output.start());
    }
    io.console = Some(master);
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn output_reaches_the_fifo_and_the_end_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        mkfifo(&out);
        let fifos = Fifos {
            stdout: out.to_string_lossy().into(),
            ..Fifos::default()
        };
        let reader = std::thread::spawn({
            let out = out.clone();
            move || {
                let mut s = String::new();
                File::open(out).unwrap().read_to_string(&mut s).unwrap();
                s
            }
        });
        let (child, io) = pipes(&fifos, "c", "ns").unwrap();
        let mut w = File::from(child.stdout.unwrap());
        w.write_all(b"hello from the container\n").unwrap();
        drop(w); // the process exits
        io.output_waiter().wait(Duration::from_secs(5));
        assert_eq!(*io.output.count.lock().unwrap(), 0);
        assert_eq!(reader.join().unwrap(), "hello from the container\n");
    }

    #[test]
    fn stdin_is_copied_and_close_io_ends_it() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        mkfifo(&input);
        let fifos = Fifos {
            stdin: input.to_string_lossy().into(),
            ..Fifos::default()
        };
        let (child, io) = pipes(&fifos, "c", "ns").unwrap();
        let mut client = OpenOptions::new().write(true).open(&input).unwrap();
        client.write_all(b"abc").unwrap();
        let mut r = File::from(child.stdin.unwrap());
        let mut got = [0u8; 3];
        r.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"abc");
        io.stdin_closer().close();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "the process reads end-of-file after CloseIO"
        );
    }
}
