//! EPROXY on a function container's own interfaces. The shim is root and lives as long as the
//! container, so it attaches EPROXY in the container's network namespace once `runc create`
//! made it (CNI and nerdctl's hooks have set its interfaces up by then), and hands the counts
//! map to the chain's pool-manager, which has no capability to attach anything and reports the
//! counts on its /metrics.
//!
//! Both ends are tied to the container's record here: dropping it (on delete) detaches the
//! programs and closes the connection, which takes the counts off the pool-manager's report.
//! A shim killed outright does the same (the kernel closes its descriptors).

use crate::wiring::FunctionWiring;
use log::info;
use spright_core::chain::EproxyMode;
use spright_core::protocol::{ControlRequest, ControlResponse, CountedInterface};
use spright_ebpf::eproxy::netns::{count_all_traffic_in, NetnsCount, NetnsEproxy};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the pool-manager has to take the counts.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// A network namespace, by the device and inode of its `/proc/<pid>/ns/net`.
pub type NetnsId = (u64, u64);

/// A container's traffic being counted: the programs and the pool-manager's lease.
pub struct Counting {
    pub netns: NetnsId,
    _lease: UnixStream,
    _eproxy: Box<NetnsEproxy>,
}

/// Starts counting, as [`crate::task`] calls it (container id, its init's pid, its wiring,
/// the namespaces this shim counts already): a plain function, so the Task service's tests can
/// put one of their own in.
pub type Start = fn(&str, u32, &FunctionWiring, &[NetnsId]) -> Result<Option<Counting>, String>;

/// Ends counting off the async runtime's workers: detaching a tcx link waits for an RCU grace
/// period (milliseconds).
pub async fn stop(counting: Option<Counting>) {
    if let Some(c) = counting {
        let _ = tokio::task::spawn_blocking(move || drop(c)).await;
    }
}

/// Counts the traffic of container `id` (its init is `pid`) on its own interfaces, as its
/// chain asks (`gateway.eproxy`). `Ok(None)` when nothing is to be counted: off, the
/// container shares the shim's network, it has no interface but lo, or (auto) EPROXY cannot
/// count here, which is logged. An error (the container is not created) only when the chain
/// says `on`.
///
/// A namespace this shim counts for another container already (two function containers of one
/// pod) is not counted twice: the first container's count is the pod's.
pub fn start(
    id: &str,
    pid: u32,
    wiring: &FunctionWiring,
    counted: &[NetnsId],
) -> Result<Option<Counting>, String> {
    let Some(control) = &wiring.control else {
        return Ok(None);
    };
    match attach_and_hand_over(id, pid, &wiring.function, control, counted) {
        Ok(counting) => Ok(counting),
        Err(e) if wiring.eproxy == EproxyMode::On => Err(format!(
            "spright: EPROXY cannot count container {id}'s traffic (the chain says gateway.eproxy: on): {e}"
        )),
        Err(e) => {
            log::warn!(
                "{id}: EPROXY does not count this container's own traffic (gateway.eproxy: auto; off silences this): {e}"
            );
            Ok(None)
        }
    }
}

fn attach_and_hand_over(
    id: &str,
    pid: u32,
    function: &str,
    control: &Path,
    counted: &[NetnsId],
) -> Result<Option<Counting>, String> {
    use std::os::unix::fs::MetadataExt;
    let since = std::time::Instant::now();
    // Opened once: what is identified is what is entered.
    let name = format!("/proc/{pid}/ns/net");
    let netns = File::open(&name).map_err(|e| format!("{name}: {e}"))?;
    let meta = netns.metadata().map_err(|e| format!("{name}: {e}"))?;
    let netns_id = (meta.dev(), meta.ino());
    if counted.contains(&netns_id) {
        info!("{id}: its network namespace is counted for another running container of this shim already");
        return Ok(None);
    }
    let eproxy = match count_all_traffic_in(netns, &name).map_err(|e| e.to_string())? {
        NetnsCount::Counting(e) => e,
        NetnsCount::SharedWithCaller => {
            info!("{id}: on the host's network, EPROXY counts its chain's traffic at the gateway only");
            return Ok(None);
        }
        NetnsCount::NoInterface => return Ok(None),
    };
    let attached = since.elapsed();
    let lease = hand_over(id, function, control, &eproxy)?;
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
        netns: netns_id,
        _lease: lease,
        _eproxy: eproxy,
    }))
}

/// Sends the counts map to the pool-manager and waits for it to take them.
fn hand_over(
    id: &str,
    function: &str,
    control: &Path,
    eproxy: &NetnsEproxy,
) -> Result<UnixStream, String> {
    let request = ControlRequest::CountTraffic {
        function: function.to_owned(),
        container: id.to_owned(),
        interfaces: eproxy
            .interfaces
            .iter()
            .map(|(ifindex, name)| CountedInterface {
                ifindex: *ifindex,
                name: name.clone(),
            })
            .collect(),
    };
    let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    let at = |e: std::io::Error| format!("the chain's control socket {}: {e}", control.display());
    let stream = connect_checked(control).map_err(at)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(at)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(at)?;
    // Read-only: the pool-manager reports the counts, it cannot change them.
    let map = eproxy
        .eproxy
        .counts_fd_read_only()
        .map_err(|e| format!("opening the counts map read-only: {e}"))?;
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => format!(
            "the pool-manager behind {} did not answer within {ANSWER_TIMEOUT:?}",
            control.display()
        ),
        _ => at(e),
    };
    // The descriptor rides on the first bytes; the rest of the line follows if cut short.
    let sent =
        spright_core::fdpass::send_with_fd(stream.as_raw_fd(), &line, &map).map_err(timed_out)?;
    std::io::Write::write_all(&mut &stream, &line[sent..]).map_err(timed_out)?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(timed_out)?;
    match serde_json::from_str::<ControlResponse>(&answer) {
        Ok(ControlResponse::Counting) => {
            stream.set_read_timeout(None).map_err(at)?;
            Ok(stream)
        }
        Ok(ControlResponse::Error { error }) => Err(format!("the pool-manager refused: {error}")),
        _ if answer.is_empty() => Err("the pool-manager closed the control connection".into()),
        _ => Err(format!(
            "unexpected answer from the pool-manager: {}",
            answer.trim()
        )),
    }
}

/// Connects to the control socket the wiring checked, as it is now: the path is opened without
/// following a symbolic link and must still be a socket of the shim's user at the same place
/// (whoever can write the runtime directory could swap it between the check and this connect,
/// and the shim is root), then connected through that very file.
fn connect_checked(control: &Path) -> std::io::Result<UnixStream> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(control)?;
    let meta = opened.metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let ours = meta.uid() == unsafe { libc::geteuid() };
    let through = PathBuf::from(format!("/proc/self/fd/{}", opened.as_raw_fd()));
    let real = std::fs::read_link(&through)?;
    let socket = meta.file_type().is_socket();
    if !socket || !ours || real != control {
        return Err(std::io::Error::other(format!(
            "changed since it was checked (now {}{}{})",
            real.display(),
            if socket { "" } else { ", not a socket" },
            if ours { "" } else { ", not the shim's user's" },
        )));
    }
    UnixStream::connect(&through)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring(control: Option<&str>, eproxy: EproxyMode) -> FunctionWiring {
        FunctionWiring {
            chain: "shop".into(),
            replica: None,
            function: "cart".into(),
            pool: "/nonexistent/pool".into(),
            rings: None,
            load: None,
            socket: "/nonexistent/fn.sock".into(),
            control: control.map(PathBuf::from),
            eproxy,
        }
    }

    /// No process has this pid (pids stop at 2^22).
    const GONE: u32 = u32::MAX;

    #[test]
    fn on_fails_the_create_naming_why_auto_goes_on_and_off_looks_at_nothing() {
        let control = Some("/nonexistent/control.sock");
        let e = start("c1", GONE, &wiring(control, EproxyMode::On), &[]).err();
        let e = e.expect("on: an error");
        assert!(
            e.contains("container c1")
                && e.contains("gateway.eproxy: on")
                && e.contains(&format!("/proc/{GONE}/ns/net")),
            "{e}"
        );
        assert!(start("c1", GONE, &wiring(control, EproxyMode::Auto), &[])
            .unwrap()
            .is_none());
        // No control socket (off, or a replica pod's function): nothing is tried, even on.
        assert!(start("c1", GONE, &wiring(None, EproxyMode::On), &[])
            .unwrap()
            .is_none());
    }
}
