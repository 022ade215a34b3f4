//! `start`: containerd asks for the address of the shim that will serve a container. The
//! container's group (its pod) may have a server already; otherwise one is spawned on a socket
//! this process binds, and only once it serves is its address given. A server that fails to
//! come up is killed and its socket removed: a failed start leaves nothing running.

use super::handshake::{self, LegacyInputs, Protocol, StartRequest};
use super::{LaunchError, MAX_STDIN, RUNTIME};
use containerd_shim::Flags;
use log::warn;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a new server may take to listen.
const SERVER_READY: Duration = Duration::from_secs(10);
/// Where shim sockets go unless containerd names a directory (containerd's own default).
const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";
/// The listening socket's descriptor in the server (and the variable that says so).
pub const LISTENER_FD: i32 = 3;
pub const LISTENER_FD_ENV: &str = "SPRIGHT_SHIM_LISTENER_FD";
/// What the server prints, alone, once it serves (anything else it prints is its error).
pub const READY: &str = "ready";

/// Annotations that put containers in one shim, as the runc v2 shim groups them: one shim per
/// pod (CRI's sandbox id), or per explicit group.
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

pub fn start(flags: &Flags) -> Result<(), LaunchError> {
    let mut stdin = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN)
        .read_to_end(&mut stdin)
        .map_err(LaunchError::io(
            "reading containerd's start parameters on stdin",
        ))?;
    let legacy = LegacyInputs {
        id: flags.id.clone(),
        namespace: flags.namespace.clone(),
        grpc_address: flags.address.clone(),
        publish_binary: flags.publish_binary.clone(),
        debug: flags.debug,
        ttrpc_address: std::env::var("TTRPC_ADDRESS").ok(),
    };
    let request = handshake::read_start_request(&stdin, &legacy)?;
    let bundle = std::env::current_dir().map_err(LaunchError::io("the bundle directory"))?;
    let address = socket_address(&request, &group_of(&bundle, &request.id));
    let path = PathBuf::from(address.trim_start_matches("unix://"));
    let dir = path.parent().expect("a socket directory");
    // Private to containerd (root), as containerd's own shims keep it.
    create_private_dir(dir)?;
    // One start at a time per socket directory: a second start for a group waits until the
    // first one's server serves (or is gone), and two never replace a stale socket together.
    let _serialized = StartLock::take(dir)?;
    let mut spawned = None;
    if let Some(listener) = bind_or_join(&path)? {
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        let mut server = match spawn_server(&request, &address, listener) {
            Ok(server) => server,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        if let Err(e) = server.prepare(&request).and_then(|()| server.wait_ready()) {
            server.abandon(&path);
            return Err(e);
        }
        spawned = Some(server);
    }
    let answered = answer(&bundle, &address, request.protocol);
    if let (Err(_), Some(server)) = (&answered, spawned) {
        // containerd will not use a server it was not told about.
        server.abandon(&path);
        let _ = std::fs::remove_file(bundle.join("address"));
    }
    answered
}

fn answer(bundle: &Path, address: &str, protocol: Protocol) -> Result<(), LaunchError> {
    // containerd 1.x and `delete` read the address back from the bundle.
    std::fs::write(bundle.join("address"), address)
        .map_err(LaunchError::io("writing the bundle's address file"))?;
    let answer = match protocol {
        Protocol::Legacy => address.as_bytes().to_vec(),
        Protocol::Bootstrap => handshake::bootstrap_result(address),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&answer)
        .and_then(|()| stdout.flush())
        .map_err(LaunchError::io("answering containerd on stdout"))
}

fn create_private_dir(dir: &Path) -> Result<(), LaunchError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(LaunchError::io(format!("creating {}", dir.display())))
}

/// An exclusive `flock` on the socket directory's start lock, held until dropped.
struct StartLock {
    _file: std::fs::File,
}

impl StartLock {
    fn take(dir: &Path) -> Result<StartLock, LaunchError> {
        let path = dir.join(".spright-start.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(LaunchError::io(format!("opening {}", path.display())))?;
        // SAFETY: flock on a descriptor we own; released when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(LaunchError::Io {
                context: format!("locking {}", path.display()),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(StartLock { _file: file })
    }
}

/// The group a container's shim serves: its pod, or the container alone.
fn group_of(bundle: &Path, id: &str) -> String {
    // The spec is read as plain JSON: a field this build does not know must not stop a
    // container from starting.
    let annotations = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .map(|spec| crate::wiring::annotations(&spec))
        .unwrap_or_default();
    GROUP_LABELS
        .iter()
        .find_map(|l| annotations.get(*l).cloned())
        .unwrap_or_else(|| id.to_owned())
}

/// containerd's naming: a hash of its address, the namespace and the group, in its socket
/// directory, so that each group of each containerd has one socket.
fn socket_address(request: &StartRequest, group: &str) -> String {
    let name = go_join(&[&request.grpc_address, &request.namespace, group]);
    let hash = Sha256::digest(name.as_bytes());
    let dir = request.socket_dir.as_deref().unwrap_or(DEFAULT_SOCKET_DIR);
    format!("unix://{}/{hash:x}", dir.trim_end_matches('/'))
}

/// Go's `filepath.Join`, which containerd names sockets with: every part is appended (an
/// absolute group does not replace the address and namespace, as `Path::join` would) and the
/// result is cleaned.
fn go_join(parts: &[&str]) -> String {
    let absolute = parts
        .iter()
        .find(|p| !p.is_empty())
        .is_some_and(|p| p.starts_with('/'));
    let mut clean: Vec<&str> = Vec::new();
    for segment in parts.iter().flat_map(|p| p.split('/')) {
        match segment {
            "" | "." => {}
            ".." if clean.last().is_some_and(|l| *l != "..") => {
                clean.pop();
            }
            ".." if absolute => {}
            other => clean.push(other),
        }
    }
    let joined = clean.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Binds the group's socket, or returns `None` when a live server already listens on it.
fn bind_or_join(path: &Path) -> Result<Option<UnixListener>, LaunchError> {
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            // A socket left by a server that died: take its place.
            let _ = std::fs::remove_file(path);
            UnixListener::bind(path)
                .map(Some)
                .map_err(LaunchError::io(format!("binding {}", path.display())))
        }
        Err(e) => Err(LaunchError::Io {
            context: format!("binding {}", path.display()),
            source: e,
        }),
    }
}

struct Server {
    child: Child,
}

fn spawn_server(
    request: &StartRequest,
    address: &str,
    listener: UnixListener,
) -> Result<Server, LaunchError> {
    let exe = std::env::current_exe().map_err(LaunchError::io("finding the shim binary"))?;
    let mut command = Command::new(exe);
    command
        .args(["-namespace", &request.namespace])
        .args(["-id", &request.id])
        .args(["-address", &request.grpc_address])
        .args(["-publish-binary", &request.containerd_binary])
        .args(["-socket", address])
        .env("TTRPC_ADDRESS", &request.ttrpc_address)
        .env(LISTENER_FD_ENV, LISTENER_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if request.debug {
        command.arg("-debug");
    }
    let fd = listener.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Its own session: signals meant for containerd's process group do not reach it.
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Dies with `start` until it is ready (containerd may kill a start that hangs);
            // the server clears this before it says it is ready.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let moved = if fd == LISTENER_FD {
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, LISTENER_FD)
            };
            if moved < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(LaunchError::io("spawning the shim server"))?;
    drop(listener);
    Ok(Server { child })
}

impl Server {
    /// The shim's cgroup and OOM score, as the runc v2 shim sets them.
    fn prepare(&self, request: &StartRequest) -> Result<(), LaunchError> {
        let pid = self.child.id();
        if let Some(cgroup) = shim_cgroup(request.options.as_ref()) {
            containerd_shim::cgroup::add_task_to_cgroup(&cgroup, pid)?;
        }
        containerd_shim::cgroup::adjust_oom_score(pid)?;
        Ok(())
    }

    /// The server prints `READY` and closes its stdout once it serves; anything else it printed
    /// is its error.
    fn wait_ready(&mut self) -> Result<(), LaunchError> {
        let mut out = self.child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = out.by_ref().take(64 << 10).read_to_end(&mut text);
            let _ = tx.send(String::from_utf8_lossy(&text).trim().to_owned());
        });
        let printed = rx.recv_timeout(SERVER_READY).map_err(|_| {
            LaunchError::ServerFailed(format!(
                "it did not listen within {} s",
                SERVER_READY.as_secs()
            ))
        })?;
        if let Some(before) = printed.strip_suffix(READY) {
            if before.trim().is_empty() {
                return Ok(());
            }
        }
        // No ready line: it is exiting (its stdout closes before it can be waited for).
        let status = self
            .child
            .wait()
            .map(|s| s.to_string())
            .unwrap_or_else(|e| format!("waiting for it: {e}"));
        Err(LaunchError::ServerFailed(if printed.is_empty() {
            format!("it exited ({status})")
        } else {
            format!("{printed} ({status})")
        }))
    }

    /// Kills a server that will not be used, and removes its socket.
    fn abandon(self, socket: &Path) {
        let mut child = self.child;
        if let Err(e) = child.kill() {
            warn!("{RUNTIME}: killing the shim server: {e}");
        }
        let _ = child.wait();
        let _ = std::fs::remove_file(socket);
    }
}

/// Whether runc's options ask for a shim cgroup (`shim_cgroup`), and which.
fn shim_cgroup(
    options: Option<&containerd_shim::protos::protobuf::well_known_types::any::Any>,
) -> Option<String> {
    use containerd_shim::protos::protobuf::Message;
    let any = options?;
    if !any.type_url.ends_with("containerd.runc.v1.Options") {
        return None;
    }
    containerd_shim::api::Options::parse_from_bytes(&any.value)
        .ok()
        .map(|o| o.shim_cgroup)
        .filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim::protos::protobuf::well_known_types::any::Any;

    fn request(socket_dir: Option<&str>) -> StartRequest {
        StartRequest {
            protocol: Protocol::Bootstrap,
            id: "c1".into(),
            namespace: "default".into(),
            grpc_address: "/run/containerd/containerd.sock".into(),
            ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_binary: String::new(),
            containerd_version: None,
            debug: false,
            socket_dir: socket_dir.map(str::to_owned),
            options: None::<Any>,
        }
    }

    #[test]
    fn sockets_are_named_as_containerd_names_them() {
        // sha256("/run/containerd/containerd.sock/default/c1"), as containerd's
        // SocketAddress and the containerd-shim crate compute it.
        let expected =
            containerd_shim::socket_address("/run/containerd/containerd.sock", "default", "c1");
        assert_eq!(socket_address(&request(None), "c1"), expected);
        let hash = expected.rsplit('/').next().unwrap();
        assert_eq!(
            socket_address(&request(Some("/run/c/s/")), "c1"),
            format!("unix:///run/c/s/{hash}")
        );
        assert_ne!(socket_address(&request(None), "pod-2"), expected);
    }

    #[test]
    fn socket_names_join_as_go_does() {
        assert_eq!(go_join(&["/run/c.sock", "ns", "g"]), "/run/c.sock/ns/g");
        // An absolute group is appended, not a replacement of the address and namespace.
        assert_eq!(go_join(&["/run/c.sock", "ns", "/g"]), "/run/c.sock/ns/g");
        assert_eq!(
            go_join(&["/run//c.sock/", "./ns", "a/../g"]),
            "/run/c.sock/ns/g"
        );
        assert_eq!(go_join(&["/", "..", "g"]), "/g");
        assert_eq!(go_join(&["rel", "..", ".."]), "..");
    }

    #[test]
    fn containers_of_a_pod_share_its_group() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion": "1.0.2", "annotations": {"io.kubernetes.cri.sandbox-id": "pod-1"}}"#,
        )
        .unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "pod-1");
        std::fs::write(dir.path().join("config.json"), "not json").unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "c1");
    }

    #[test]
    fn a_live_server_is_joined_and_a_dead_ones_socket_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("s")).unwrap();
        let path = dir.path().join("s/abc");
        let live = bind_or_join(&path).unwrap().expect("bound");
        assert!(
            bind_or_join(&path).unwrap().is_none(),
            "joined the live one"
        );
        drop(live); // the socket file stays, nobody listens
        assert!(
            bind_or_join(&path).unwrap().is_some(),
            "replaced the stale one"
        );
    }
}
