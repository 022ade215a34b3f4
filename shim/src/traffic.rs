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

fn netns_of(netns: &Path) -> std::io::Result<NetnsId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(netns)?;
    Ok((meta.dev(), meta.ino()))
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
    let since = std::time::Instant::now();
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let netns_id = netns_of(&netns).map_err(|e| format!("{}: {e}", netns.display()))?;
    if counted.contains(&netns_id) {
        info!("{id}: its network namespace is counted for another container of this shim already");
        return Ok(None);
    }
    let eproxy = match count_all_traffic_in(&netns).map_err(|e| e.to_string())? {
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
    let stream = UnixStream::connect(control).map_err(at)?;
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(at)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(at)?;
    let map = eproxy.eproxy.counts_fd().map_err(at)?;
    // The descriptor rides on the first bytes; the rest of the line follows if cut short.
    let sent = spright_core::fdpass::send_with_fd(stream.as_raw_fd(), &line, &map).map_err(at)?;
    std::io::Write::write_all(&mut &stream, &line[sent..]).map_err(at)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(at)?;
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
