//! EPROXY on a function container's own interfaces: attached from outside, in the container's
//! network namespace, counting every IP packet there (all of it is the function's external
//! traffic: descriptors between functions travel over sockets in the pool-manager's namespace).

use super::{links, Eproxy, EproxyError, LinkEntry};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// EPROXY attached in another network namespace, with the interfaces it counts on there
/// (index, name: an index means something only in its own namespace).
pub struct NetnsEproxy {
    pub eproxy: Eproxy,
    pub interfaces: Vec<(u32, String)>,
}

/// What [`count_all_traffic_in`] found.
pub enum NetnsCount {
    Counting(Box<NetnsEproxy>),
    /// The namespace is the caller's own (a container on the host's network): its interfaces
    /// carry more than the container's traffic, so nothing is attached.
    SharedWithCaller,
    /// The namespace has no interface that is up and Ethernet besides lo: no external traffic
    /// of its own to count.
    NoInterface,
}

/// Attaches EPROXY, counting all IP traffic, to every interface of network namespace `netns`
/// (an open `/proc/PID/ns/net` or `/var/run/netns/NAME`; `name` says which, in messages) that
/// is up and Ethernet; lo is left out (traffic within the container). Interfaces added to the
/// namespace later are not counted. Dropping the result detaches everything.
pub fn count_all_traffic_in(netns: File, name: &str) -> Result<NetnsCount, EproxyError> {
    let netns_err = |reason: String| EproxyError::Netns {
        path: name.to_owned(),
        reason,
    };
    let theirs = netns
        .metadata()
        .map_err(|e| netns_err(format!("cannot be read: {e}")))?;
    let ours = std::fs::metadata("/proc/thread-self/ns/net")
        .map_err(|e| netns_err(format!("cannot compare it with our own: {e}")))?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Ok(NetnsCount::SharedWithCaller);
    }
    let file = netns;
    // setns moves only the calling thread: a thread of its own, which ends there, so that no
    // thread of the caller's (a runtime's pooled worker) is left in the namespace.
    let path = name.to_owned();
    std::thread::Builder::new()
        .name("eproxy-netns".into())
        .spawn(move || {
            // SAFETY: setns on a namespace descriptor held open by `file`.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(EproxyError::Netns {
                    path,
                    reason: format!("cannot be entered: {}", std::io::Error::last_os_error()),
                });
            }
            let interfaces: Vec<LinkEntry> = links()
                .map_err(|e| EproxyError::Netns {
                    path: path.clone(),
                    reason: format!("cannot list its interfaces: {e}"),
                })?
                .into_iter()
                .filter(|l| l.up && l.hatype == libc::ARPHRD_ETHER)
                .collect();
            if interfaces.is_empty() {
                return Ok(NetnsCount::NoInterface);
            }
            // Before loading anything: an old kernel costs a create nothing.
            super::tcx_supported().map_err(|reason| EproxyError::Netns {
                path: path.clone(),
                reason: format!("has interfaces, but {reason}"),
            })?;
            let mut eproxy = Eproxy::load_for_all_traffic()?;
            for l in &interfaces {
                eproxy.attach(&l.name)?;
            }
            let interfaces = eproxy
                .attached_indexes()
                .map(|(i, n)| (i, n.to_owned()))
                .collect();
            Ok(NetnsCount::Counting(Box::new(NetnsEproxy {
                eproxy,
                interfaces,
            })))
        })
        .map_err(|e| netns_err(format!("no thread to enter it: {e}")))?
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
