//! Messages on the unix sockets of a chain's runtime directory. Each is one JSON object on one
//! line. A function (or the gateway) registers on its socket:
//!
//! 1. the instance sends [`Hello`];
//! 2. the pool-manager answers [`Welcome`] with the instance's data socket attached as
//!    `SCM_RIGHTS`, or [`Registration::Refused`];
//! 3. the connection stays open: the pool-manager sends [`Event`]s on it, and its closing on
//!    either side ends the registration.
//!
//! The control socket answers one [`ControlRequest`] per line with one [`ControlResponse`].

use crate::chain::{Route, RoutingMode};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub abi_version: u8,
    pub pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Registration {
    Welcome(Welcome),
    Refused { error: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Welcome {
    pub abi_version: u8,
    pub chain: String,
    pub function: String,
    pub function_id: u16,
    pub instance: u16,
    pub routing: RoutingMode,
    /// Host path of the pool (a container sees it where `SPRIGHT_POOL` says).
    pub pool_path: PathBuf,
    pub pool_tag: u32,
    /// Host path of the descriptor rings, in poll mode (a container whose `SPRIGHT_POOL` moves
    /// the pool finds them at that path plus `.rings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rings_path: Option<PathBuf>,
    /// Host path of the chain's load board, where the instance reports its load (a container
    /// whose `SPRIGHT_POOL` moves the pool finds it at that path plus `.load`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_path: Option<PathBuf>,
    pub timeout_ms: u64,
    pub routes: Vec<Route>,
    /// Every function's (name, id), for calls by name.
    pub functions: Vec<(String, u16)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An instance went away. `requests` are the requests that had buffers with it (or in
    /// transit to its function when no instance of it is left); their buffers have been
    /// reclaimed.
    Gone {
        function: u16,
        instance: u16,
        /// Instances of the function still registered.
        remaining: u16,
        requests: Vec<u64>,
    },
    /// An instance joined.
    Joined { function: u16, instance: u16 },
    /// Where the member should run its threads (`cpu_placement: adaptive`): all on `cpu`, or,
    /// with none, each back on the CPUs it had (see [`crate::affinity`]). Members that do not
    /// know the event ignore it.
    Placement { cpu: Option<u32> },
    /// The answer to [`MemberRequest::Withdraw`]: `withdrawn` when no new request is routed to
    /// the instance any more; not when it is its function's last routed instance (requests for
    /// the function would find none), which then drains as the chain does.
    Withdrawn { withdrawn: bool },
}

/// What an instance may say on its registration connection after the hello, one JSON line
/// each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MemberRequest {
    /// The instance is stopping: route no new request to it (replies to its own calls still
    /// reach it), so that it can finish what it has and leave without losing any.
    Withdraw,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Router counters and registrations.
    Stats,
    /// The scaling signal of the functions whose instances follow load, as it changes: one
    /// `Load` answer now, then one after every look at the load board that finds the figures
    /// changed (none while the chain stays idle), for as long as the connection stays open.
    WatchLoad,
    /// Sent by the shim with the descriptor of EPROXY's counts map (SCM_RIGHTS, on this line's
    /// first byte): EPROXY counts all IP traffic on a function container's own interfaces.
    /// The pool-manager answers `Counting` and reports the counts for as long as this
    /// connection stays open; the shim holds it while a function container runs in that
    /// namespace.
    CountTraffic(TrafficHandover),
}

/// What a `CountTraffic` says of the counts handed over with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrafficHandover {
    pub function: String,
    /// The containerd namespace of the container (container ids are unique within one).
    pub namespace: String,
    pub container: String,
    /// The interfaces counted on, by their index in the container's network namespace.
    pub interfaces: Vec<CountedInterface>,
}

/// A function container's interface EPROXY counts on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CountedInterface {
    pub ifindex: u32,
    pub name: String,
}

/// A function container's traffic on one of its interfaces in one direction, as EPROXY counted
/// it (all IP traffic: "in" received, "out" sent).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionTraffic {
    pub function: String,
    /// The containerd namespace and the id of the container that counts (of the first, when
    /// several containers of one pod share a network namespace).
    pub namespace: String,
    pub container: String,
    #[serde(flatten)]
    pub counters: TrafficCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    Stats(RouterStats),
    Load {
        functions: Vec<(u16, FunctionLoad)>,
    },
    /// A `CountTraffic` was taken.
    Counting,
    Error {
        error: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RouterStats {
    pub routing: Option<RoutingMode>,
    pub functions: Vec<FunctionStats>,
    /// Messages the router could not parse (sent to the audit path).
    pub malformed: u64,
    /// Refusals not handed back because their sender left twice the queue limit unread.
    #[serde(default)]
    pub overflow: u64,
    /// EPROXY's counts of the gateway's external traffic (empty when it is not running).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eproxy: Vec<TrafficCounters>,
    /// EPROXY's counts of function containers' own traffic, for the containers whose shim
    /// attached it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub function_eproxy: Vec<FunctionTraffic>,
}

/// The gateway's traffic on one interface in one direction ("in": to the gateway's listening
/// address; "out": from it), as EPROXY counted it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TrafficCounters {
    pub interface: String,
    pub direction: String,
    /// Packets on the wire (a segmentation-offloaded packet counts as its segments).
    pub packets: u64,
    /// IP bytes (headers included, link-layer header not).
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionStats {
    pub id: u16,
    pub name: String,
    pub instances: u16,
    /// Process ids of the registered instances (as they reported them).
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Descriptors this function sent that were delivered.
    pub sent: u64,
    /// Bytes of those descriptors.
    pub sent_bytes: u64,
    /// Descriptors delivered to this function.
    pub received: u64,
    /// Descriptors this function sent that the router refused.
    pub refused: u64,
    /// Descriptors queued unread at its instances now (at most the queue limit each).
    #[serde(default)]
    pub queued: u64,
    /// The scaling signal, from the chain's load board (absent from a pool-manager without
    /// one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<FunctionLoad>,
}

/// A function's load, summed over its instances (the gateway's: requests in the chain).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionLoad {
    /// Requests being handled now.
    pub in_flight: u32,
    /// Requests finished since the chain started (by instances alive or gone).
    pub completed: u64,
    /// Mean requests in flight over the stable window (60 s) and the panic window (6 s).
    pub stable_concurrency: f64,
    pub panic_concurrency: f64,
    /// Requests finished per second over the same windows.
    pub stable_requests_per_second: f64,
    pub panic_requests_per_second: f64,
    /// How much of the stable window the figures cover (less while the chain is younger than
    /// the window; 0 before the first sample): an autoscaler removes nothing on too little.
    #[serde(default)]
    pub stable_window_seconds: f64,
}

impl FunctionLoad {
    /// The same figures, but for how much of the window they cover (which grows with time
    /// alone).
    pub fn same_figures(&self, other: &FunctionLoad) -> bool {
        FunctionLoad {
            stable_window_seconds: 0.0,
            ..*self
        } == FunctionLoad {
            stable_window_seconds: 0.0,
            ..*other
        }
    }
}

/// Asks a pool-manager's control socket for its router stats (blocking, with a deadline).
pub fn query_stats(
    control_socket: &std::path::Path,
    timeout: std::time::Duration,
) -> std::io::Result<RouterStats> {
    use std::io::{BufRead, BufReader, Write};
    let mut conn = std::os::unix::net::UnixStream::connect(control_socket)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(&ControlRequest::Stats)?;
    line.push(b'\n');
    conn.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer)?;
    match serde_json::from_str(&answer)? {
        ControlResponse::Stats(s) => Ok(s),
        ControlResponse::Error { error } => Err(std::io::Error::other(error)),
        other => Err(std::io::Error::other(format!(
            "unexpected answer {other:?}"
        ))),
    }
}
