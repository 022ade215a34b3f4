//! EPROXY on a function container's own interfaces. The shim is root and lives as long as the
//! container, so it attaches EPROXY in the container's network namespace once `runc create`
//! made it (CNI and nerdctl's hooks have set its interfaces up by then), and hands the counts
//! map to the chain's pool-manager, which has no capability to attach anything and reports the
//! counts on its /metrics.
//!
//! One count per namespace ([`Counts`]), shared by the shim's running function containers in
//! it (a pod's): it ends when the last of them stops (its init exits, or it is deleted before
//! it ran), which detaches the programs and closes the connection, taking the counts off the
//! pool-manager's report. A shim killed outright does the same (the kernel closes its
//! descriptors).

use crate::wiring::{ControlSocket, FunctionWiring};
use log::info;
use spright_core::chain::EproxyMode;
use spright_core::protocol::{ControlRequest, ControlResponse, CountedInterface, TrafficHandover};
use spright_ebpf::eproxy::netns::{count_all_traffic_in, NetnsCount, NetnsEproxy};
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long the pool-manager has to take the counts (connecting, and answering).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a hand-over refused as "reported already" is tried again: a container deleted and
/// made again at once under the same id may find its predecessor's report not yet ended (the
/// pool-manager sees the old connection close a moment later).
const DUPLICATE_RETRY: Duration = Duration::from_secs(1);

/// A network namespace, by the device and inode of its file.
pub type NetnsId = (u64, u64);

/// A container's network namespace, opened once, right after `runc create`: its init waits on
/// runc's exec fifo then, so it cannot have been reaped and its pid not reused; what is
/// identified is what is entered.
pub struct Netns {
    file: File,
    name: String,
    pub id: NetnsId,
}

impl Netns {
    pub fn of_process(pid: u32) -> Result<Netns, String> {
        Netns::open(&format!("/proc/{pid}/ns/net"))
    }

    pub fn open(name: &str) -> Result<Netns, String> {
        use std::os::unix::fs::MetadataExt;
        let file = File::open(name).map_err(|e| format!("{name}: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("{name}: {e}"))?;
        Ok(Netns {
            file,
            name: name.to_owned(),
            id: (meta.dev(), meta.ino()),
        })
    }
}

/// A namespace's traffic being counted: the programs and the pool-manager's lease.
pub struct Counting {
    _lease: UnixStream,
    /// Always there but in the Task service's tests (which cannot attach anything).
    _eproxy: Option<Box<NetnsEproxy>>,
}

impl Counting {
    /// A count with nothing attached, its lease one end of `lease`: what the Task service's
    /// tests hand out (the other end tells them when it ends).
    #[cfg(test)]
    pub fn for_tests(lease: UnixStream) -> Counting {
        Counting {
            _lease: lease,
            _eproxy: None,
        }
    }
}

/// What a count is kept by: the network namespace, and the control socket (device, inode) of
/// the pool-manager it was handed to. Function containers of two chains in one namespace are
/// counted for each chain, and a container made after its pool-manager was replaced (a new
/// socket) counts afresh for the new one.
pub type CountKey = (NetnsId, (u64, u64));

/// The shim's counts, one per network namespace and pool-manager, with the number of running
/// function containers sharing each.
#[derive(Default)]
pub struct Counts {
    by_key: HashMap<CountKey, (Counting, usize)>,
}

impl Counts {
    /// One more container shares count `key`, if there is one.
    pub fn join(&mut self, key: CountKey) -> bool {
        match self.by_key.get_mut(&key) {
            Some((_, users)) => {
                *users += 1;
                true
            }
            None => false,
        }
    }

    /// Count `key` is made, for one container.
    pub fn insert(&mut self, key: CountKey, counting: Counting) {
        self.by_key.insert(key, (counting, 1));
    }

    /// One container stopped sharing count `key`: the count, for the caller to end with
    /// [`stop`], when it was the last.
    pub fn leave(&mut self, key: CountKey) -> Option<Counting> {
        let (_, users) = self.by_key.get_mut(&key)?;
        *users -= 1;
        if *users > 0 {
            return None;
        }
        self.by_key.remove(&key).map(|(c, _)| c)
    }

    #[cfg(test)]
    pub fn users(&self, key: CountKey) -> usize {
        self.by_key.get(&key).map_or(0, |(_, n)| *n)
    }
}

/// Starts counting (the containerd namespace, the container's id, its network namespace, its
/// wiring).
pub type Start = fn(&str, &str, Netns, &FunctionWiring) -> Result<Option<Counting>, String>;

/// What [`crate::task`] counts traffic with: plain functions, so that the Task service's tests
/// can put their own in (they have no real processes to enter nor anything to attach).
#[derive(Clone, Copy)]
pub struct Seam {
    /// Opens the network namespace of a container's init, by its pid.
    pub open: fn(u32) -> Result<Netns, String>,
    pub start: Start,
}

/// The real thing.
pub const EPROXY: Seam = Seam {
    open: Netns::of_process,
    start,
};

/// Ends a count off the async runtime's workers: detaching a tcx link waits for an RCU grace
/// period (milliseconds).
pub async fn stop(counting: Option<Counting>) {
    if let Some(c) = counting {
        let _ = tokio::task::spawn_blocking(move || drop(c)).await;
    }
}

/// Counts the traffic of container `id` on the interfaces of its network namespace, as its
/// chain asks (`gateway.eproxy`). `Ok(None)` when nothing is counted: the container shares the
/// shim's network, it has no interface but lo, or (auto) EPROXY cannot count here, which is
/// logged. An error (the container is not created) only when the chain says `on`.
pub fn start(
    namespace: &str,
    id: &str,
    netns: Netns,
    wiring: &FunctionWiring,
) -> Result<Option<Counting>, String> {
    let Some(control) = &wiring.control else {
        return Ok(None);
    };
    match attach_and_hand_over(namespace, id, netns, &wiring.function, control) {
        Ok(counting) => Ok(counting),
        Err(e) => not_counted(id, wiring, e).map(|()| None),
    }
}

/// What EPROXY not counting container `id` (for reason `why`) means under its chain's
/// `gateway.eproxy`: an error that fails the create when it is `on`, a warning otherwise.
pub fn not_counted(id: &str, wiring: &FunctionWiring, why: String) -> Result<(), String> {
    if wiring.eproxy == EproxyMode::On {
        return Err(format!(
            "spright: EPROXY cannot count container {id}'s traffic (the chain says gateway.eproxy: on): {why}"
        ));
    }
    log::warn!(
        "{id}: EPROXY does not count this container's own traffic (gateway.eproxy: auto; off silences this): {why}"
    );
    Ok(())
}

fn attach_and_hand_over(
    namespace: &str,
    id: &str,
    netns: Netns,
    function: &str,
    control: &ControlSocket,
) -> Result<Option<Counting>, String> {
    let since = std::time::Instant::now();
    let eproxy = match count_all_traffic_in(netns.file, &netns.name).map_err(|e| e.to_string())? {
        NetnsCount::Counting(e) => e,
        NetnsCount::SharedWithCaller => {
            info!("{id}: on the host's network, EPROXY counts its chain's traffic at the gateway only");
            return Ok(None);
        }
        NetnsCount::NoInterface => return Ok(None),
    };
    let attached = since.elapsed();
    let lease = hand_over_retrying(namespace, id, function, control, &eproxy)?;
    info!(
        "{id}: EPROXY counts its own traffic on {} (attached in {attached:?}, handed over in {:?})",
        eproxy
            .interfaces
            .iter()
            .map(|(_, n)| n.as_str())
            .collect::<Vec<_>>()
            .join(","),
        since.elapsed() - attached
    );
    Ok(Some(Counting {
        _lease: lease,
        _eproxy: Some(eproxy),
    }))
}

/// [`hand_over`], tried again for up to [`DUPLICATE_RETRY`] while the pool-manager still
/// reports a predecessor of the same id.
fn hand_over_retrying(
    namespace: &str,
    id: &str,
    function: &str,
    control: &ControlSocket,
    eproxy: &NetnsEproxy,
) -> Result<UnixStream, String> {
    let deadline = std::time::Instant::now() + DUPLICATE_RETRY;
    loop {
        match hand_over(namespace, id, function, control, eproxy) {
            Err(Refusal::Duplicate(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(Refusal::Duplicate(e) | Refusal::Other(e)) => return Err(e),
            Ok(lease) => return Ok(lease),
        }
    }
}

enum Refusal {
    /// The pool-manager reports this container already.
    Duplicate(String),
    Other(String),
}

/// Sends the counts map to the pool-manager and waits for it to take them.
fn hand_over(
    namespace: &str,
    id: &str,
    function: &str,
    control: &ControlSocket,
    eproxy: &NetnsEproxy,
) -> Result<UnixStream, Refusal> {
    let other = Refusal::Other;
    let request = ControlRequest::CountTraffic(TrafficHandover {
        function: function.to_owned(),
        namespace: namespace.to_owned(),
        container: id.to_owned(),
        interfaces: eproxy
            .interfaces
            .iter()
            .map(|(ifindex, name)| CountedInterface {
                ifindex: *ifindex,
                name: name.clone(),
            })
            .collect(),
    });
    let mut line = serde_json::to_vec(&request).map_err(|e| other(e.to_string()))?;
    line.push(b'\n');
    let path = control.path.display();
    let at = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("the pool-manager behind {path} did not answer within {ANSWER_TIMEOUT:?}")
        }
        _ => format!("the chain's control socket {path}: {e}"),
    };
    let stream = connect_checked(control).map_err(|e| other(at(e)))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| other(at(e)))?;
    // Read-only: the pool-manager reports the counts, it cannot change them.
    let map = eproxy
        .eproxy
        .counts_fd_read_only()
        .map_err(|e| other(format!("opening the counts map read-only: {e}")))?;
    // The descriptor rides on the first bytes; the rest of the line follows if cut short.
    let sent = spright_core::fdpass::send_with_fd(stream.as_raw_fd(), &line, &map)
        .map_err(|e| other(at(e)))?;
    std::io::Write::write_all(&mut &stream, &line[sent..]).map_err(|e| other(at(e)))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| other(at(e)))?;
    match serde_json::from_str::<ControlResponse>(&answer) {
        Ok(ControlResponse::Counting) => {
            stream.set_read_timeout(None).map_err(|e| other(at(e)))?;
            Ok(stream)
        }
        Ok(ControlResponse::Error { error }) if error.ends_with(REPORTED_ALREADY) => Err(
            Refusal::Duplicate(format!("the pool-manager refused: {error}")),
        ),
        Ok(ControlResponse::Error { error }) => {
            Err(other(format!("the pool-manager refused: {error}")))
        }
        _ if answer.is_empty() => Err(other(
            "the pool-manager closed the control connection".into(),
        )),
        _ => Err(other(format!(
            "unexpected answer from the pool-manager: {}",
            answer.trim()
        ))),
    }
}

/// How the pool-manager's refusal of a container it reports already ends.
const REPORTED_ALREADY: &str = "is reported already";

/// Connects to the control socket the wiring checked, and only to it: the path is opened
/// without following a symbolic link and must still be the very socket (device and inode) that
/// was checked, owned by the shim's user (whoever can write the runtime directory could swap it
/// in between, and the shim is root). Connected through that file, with a deadline: a
/// pool-manager that stopped accepting must not hold the create forever.
fn connect_checked(control: &ControlSocket) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(&control.path)?;
    let meta = opened.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = meta.uid() == unsafe { libc::geteuid() };
    if !meta.file_type().is_socket() || !ours || (meta.dev(), meta.ino()) != control.id {
        return Err(std::io::Error::other(
            "it is not the socket that was checked any more (replaced since)",
        ));
    }
    let through = format!("/proc/self/fd/{}", opened.as_raw_fd());
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // A unix connect waits for room in the listener's backlog for as long as SO_SNDTIMEO says.
    let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    socket::connect(fd.as_raw_fd(), &UnixAddr::new(through.as_str())?)?;
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring(control: bool, eproxy: EproxyMode) -> FunctionWiring {
        FunctionWiring {
            chain: "shop".into(),
            replica: None,
            function: "cart".into(),
            pool: "/nonexistent/pool".into(),
            rings: None,
            load: None,
            socket: "/nonexistent/fn.sock".into(),
            control: control.then(|| ControlSocket {
                path: "/nonexistent/control.sock".into(),
                id: (0, 0),
            }),
            eproxy,
        }
    }

    /// Not a network namespace: entering it fails.
    fn not_a_netns() -> Netns {
        Netns::open("/dev/null").unwrap()
    }

    #[test]
    fn on_fails_the_create_naming_why_auto_goes_on_and_off_looks_at_nothing() {
        let e = start("ns", "c1", not_a_netns(), &wiring(true, EproxyMode::On)).err();
        let e = e.expect("on: an error");
        assert!(
            e.contains("container c1")
                && e.contains("gateway.eproxy: on")
                && e.contains("/dev/null: cannot be entered"),
            "{e}"
        );
        assert!(
            start("ns", "c1", not_a_netns(), &wiring(true, EproxyMode::Auto))
                .unwrap()
                .is_none()
        );
        // No control socket (off, or a replica pod's function): nothing is tried, even on.
        assert!(
            start("ns", "c1", not_a_netns(), &wiring(false, EproxyMode::On))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_namespaces_count_ends_with_its_last_container() {
        let mut counts = Counts::default();
        let (lease, mut other_end) = UnixStream::pair().unwrap();
        let key = ((1, 2), (3, 4));
        assert!(!counts.join(key), "nothing to join yet");
        assert!(
            !counts.join(((1, 2), (3, 5))),
            "another pool-manager's is another count"
        );
        counts.insert(key, Counting::for_tests(lease));
        assert!(counts.join(key));
        assert_eq!(counts.users(key), 2);
        assert!(counts.leave(key).is_none(), "one container still runs");
        let last = counts.leave(key).expect("the last one ends it");
        assert_eq!(counts.users(key), 0);
        drop(last);
        let mut buf = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut other_end, &mut buf).unwrap(),
            0,
            "the lease ended"
        );
        assert!(counts.leave(key).is_none(), "leaving twice changes nothing");
    }
}
