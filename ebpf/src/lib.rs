//! SPROXY's loader and typed access to its maps.
//!
//! The program itself is C (`src/bpf/sproxy.bpf.c`), compiled by `build.rs` and embedded here.
//! Loading needs CAP_BPF and CAP_NET_ADMIN (in practice: root); once loaded, updating the maps
//! through the file descriptors held here needs no capability, which is what lets the
//! pool-manager drop its privileges after setup.

pub mod eproxy;
pub mod floor;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, SockHash};
use aya::programs::{BtfTracePoint, SkMsg};
use aya::Btf;
use aya::{Ebpf, EbpfLoader, Pod};
use spright_core::ids::{Endpoint, FnId, InstanceId, MAX_FUNCTIONS, MAX_INSTANCES};
use spright_core::transit::Transit;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

static SPROXY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sproxy.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum SproxyError {
    #[error("loading SPROXY: {0} (loading BPF needs root, or CAP_BPF and CAP_NET_ADMIN)")]
    Load(#[from] aya::EbpfError),
    #[error("SPROXY program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("SPROXY map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("SPROXY object has no {0}")]
    Missing(&'static str),
    #[error("pinning SPROXY maps under {path}: {source}")]
    Pin {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Limit(String),
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> SproxyError {
    move |source| SproxyError::Map { map, source }
}

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct EndpointValue {
    function: u16,
    instance: u16,
}

#[derive(Clone, Copy)]
#[repr(C)]
struct InstanceTable {
    count: u32,
    instances: [u16; MAX_INSTANCES as usize],
}

/// SPROXY's counters for one function, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FnCounters {
    /// Descriptors the function sent that were delivered.
    pub sent: u64,
    pub sent_bytes: u64,
    /// Descriptors delivered to the function.
    pub received: u64,
    /// Descriptors the function sent that SPROXY refused.
    pub refused: u64,
}

/// Chain-wide counters of what SPROXY passed to the audit path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ChainCounters {
    /// Sends that were not exactly one descriptor.
    pub malformed: u64,
    /// Sends from a socket with no registered identity.
    pub unknown_sender: u64,
    /// Refusals not handed back because their sender left twice the queue limit unread.
    pub overflow: u64,
}

/// SPROXY's count of one socket's queue.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Backlog {
    queued: u32,
    reserved: u32,
    probed_ns: u64,
}

// SAFETY: plain repr(C) integers without padding, mirrored from the C side.
unsafe impl Pod for Backlog {}
// SAFETY: as above.
unsafe impl Pod for EndpointValue {}
// SAFETY: as above.
unsafe impl Pod for InstanceTable {}
// SAFETY: as above.
unsafe impl Pod for FnCounters {}
// SAFETY: as above.
unsafe impl Pod for ChainCounters {}

const _: () = assert!(size_of::<InstanceTable>() == 4 + 2 * MAX_INSTANCES as usize);

/// A loaded and attached SPROXY with its maps. Dropping it detaches the program and, unless
/// pinned, frees the maps.
pub struct Sproxy {
    socks: SockHash<MapData, u32>,
    identities: HashMap<MapData, u32, EndpointValue>,
    allow: HashMap<MapData, u32, u8>,
    instances: HashMap<MapData, u32, InstanceTable>,
    stats: PerCpuArray<MapData, FnCounters>,
    totals: PerCpuArray<MapData, ChainCounters>,
    transit: Array<MapData, u64>,
    known: Array<MapData, u8>,
    backlog: Array<MapData, Backlog>,
    owners: HashMap<MapData, u64, u32>,
    /// Socket cookie of each registered endpoint (router key), to forget it in `owners`.
    cookies: std::collections::HashMap<u32, u64>,
    pinned: Option<PathBuf>,
    // Keeps the program (and its attachment to `socks`) alive; dropped last.
    _ebpf: Ebpf,
}

const MAPS: [&str; 10] = [
    "socks",
    "identities",
    "allow",
    "instances",
    "stats",
    "totals",
    "transit",
    "known",
    "backlog",
    "owners",
];

/// Descriptors one socket may have queued unread unless the chain says otherwise.
pub const DEFAULT_QUEUE_LIMIT: u32 = 1024;

/// Where the pool's buffers are, so SPROXY can record which socket each buffer was routed to.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolGeometry {
    pub data_start: u64,
    pub buffer_size: u32,
    pub buffer_count: u32,
}

impl Sproxy {
    /// Loads SPROXY and attaches it to a fresh sockhash. With `pin_dir`, the maps are also
    /// pinned there (in bpffs) so `bpftool map dump pinned <dir>/<map>` shows them; the pins
    /// are removed on drop.
    /// `queue_limit` is the most descriptors one socket may have queued unread (at least 1).
    pub fn load(
        pin_dir: Option<&Path>,
        pool: Option<PoolGeometry>,
        queue_limit: u32,
    ) -> Result<Sproxy, SproxyError> {
        let mut loader = EbpfLoader::new();
        let pool = pool.unwrap_or_default();
        let queue_limit = queue_limit.max(1);
        loader
            .override_global("pool_data_start", &pool.data_start, true)
            .override_global("pool_buffer_size", &pool.buffer_size, true)
            .override_global("pool_buffer_count", &pool.buffer_count, true)
            .override_global("queue_limit", &queue_limit, true)
            .map_max_entries("transit", pool.buffer_count.max(1));
        let mut ebpf = loader.load(SPROXY_OBJECT)?;
        if let Some(dir) = pin_dir {
            std::fs::create_dir_all(dir).map_err(|source| SproxyError::Pin {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut take = |name: &'static str| -> Result<aya::maps::Map, SproxyError> {
            let map = ebpf.take_map(name).ok_or(SproxyError::Missing(name))?;
            if let Some(dir) = pin_dir {
                map.pin(dir.join(name)).map_err(|e| SproxyError::Pin {
                    path: dir.join(name),
                    source: std::io::Error::other(e.to_string()),
                })?;
            }
            Ok(map)
        };
        let taken = (|| {
            Ok::<_, SproxyError>((
                SockHash::try_from(take("socks")?).map_err(map_err("socks"))?,
                HashMap::try_from(take("identities")?).map_err(map_err("identities"))?,
                HashMap::try_from(take("allow")?).map_err(map_err("allow"))?,
                HashMap::try_from(take("instances")?).map_err(map_err("instances"))?,
                PerCpuArray::try_from(take("stats")?).map_err(map_err("stats"))?,
                PerCpuArray::try_from(take("totals")?).map_err(map_err("totals"))?,
                Array::try_from(take("transit")?).map_err(map_err("transit"))?,
                Array::try_from(take("known")?).map_err(map_err("known"))?,
                Array::try_from(take("backlog")?).map_err(map_err("backlog"))?,
                HashMap::try_from(take("owners")?).map_err(map_err("owners"))?,
            ))
        })();
        #[allow(clippy::type_complexity)]
        let (socks, identities, allow, instances, stats, totals, transit, known, backlog, owners): (
            SockHash<MapData, u32>,
            _,
            _,
            _,
            _,
            _,
            _,
            _,
            _,
            _,
        ) = match taken {
            Ok(t) => t,
            Err(e) => {
                if let Some(dir) = pin_dir {
                    Sproxy::remove_pins(dir);
                }
                return Err(e);
            }
        };
        let mut sproxy = Sproxy {
            socks,
            identities,
            allow,
            instances,
            stats,
            totals,
            transit,
            known,
            backlog,
            owners,
            cookies: Default::default(),
            pinned: pin_dir.map(Path::to_owned),
            _ebpf: ebpf,
        };
        let program: &mut SkMsg = sproxy
            ._ebpf
            .program_mut("sproxy")
            .ok_or(SproxyError::Missing("program sproxy"))?
            .try_into()?;
        program.load()?;
        program.attach(sproxy.socks.fd())?;
        // The read side of the queue bound. Detached (with everything else) when dropped, and
        // by the kernel when this process dies.
        let btf = Btf::from_sys_fs().map_err(|e| {
            SproxyError::Limit(format!(
                "SPROXY needs the kernel's BTF (/sys/kernel/btf/vmlinux) to bound socket queues: {e}"
            ))
        })?;
        let reads: &mut BtfTracePoint = sproxy
            ._ebpf
            .program_mut("backlog_after_read")
            .ok_or(SproxyError::Missing("program backlog_after_read"))?
            .try_into()?;
        // Fails on a kernel without the tracepoint or without sk_psock.msg_tot_len (the CO-RE
        // relocation finds no such field): say what is missing rather than just "EINVAL".
        reads
            .load("sock_recv_length", &btf)
            .and_then(|()| reads.attach().map(|_| ()))
            .map_err(|e| {
                SproxyError::Limit(format!(
                    "SPROXY bounds socket queues with a BTF tracepoint program on \
                     sock_recv_length that reads sk_psock.msg_tot_len; this kernel refused it: {e}"
                ))
            })?;
        Ok(sproxy)
    }

    /// Removes pins left in `dir` by a pool-manager that did not exit cleanly.
    pub fn remove_pins(dir: &Path) {
        for name in MAPS {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(dir);
    }

    /// Replaces the allow list with `pairs` of (source, destination) function ids.
    pub fn set_allow_list(
        &mut self,
        pairs: impl IntoIterator<Item = (u16, u16)>,
    ) -> Result<(), SproxyError> {
        let keys: Vec<u32> = self.allow.keys().filter_map(Result::ok).collect();
        for k in keys {
            self.allow.remove(&k).map_err(map_err("allow"))?;
        }
        for (src, dst) in pairs {
            let key = ((src as u32) << 16) | dst as u32;
            self.allow.insert(key, 1, 0).map_err(map_err("allow"))?;
        }
        Ok(())
    }

    /// Marks the chain's function ids (the gateway's included): a destination not among them
    /// is refused as having no destination rather than as forbidden.
    pub fn set_functions(&mut self, ids: impl IntoIterator<Item = u16>) -> Result<(), SproxyError> {
        for id in ids {
            if id >= MAX_FUNCTIONS {
                return Err(SproxyError::Limit(format!(
                    "function id {id} is over SPROXY's limit of {}",
                    MAX_FUNCTIONS - 1
                )));
            }
            self.known.set(id as u32, 1, 0).map_err(map_err("known"))?;
        }
        Ok(())
    }

    /// Descriptors queued unread at `endpoint`'s socket, as SPROXY counts them.
    pub fn backlog(&self, endpoint: Endpoint) -> u32 {
        self.backlog
            .get(&backlog_slot(endpoint), 0)
            .map(|b| b.queued)
            .unwrap_or_default()
    }

    /// Registers a function socket: its identity (by local port) first, then the socket itself,
    /// so SPROXY never sees a registered socket it cannot identify.
    pub fn insert_socket(
        &mut self,
        endpoint: Endpoint,
        socket: &impl AsRawFd,
        local_port: u16,
    ) -> Result<(), SproxyError> {
        if endpoint.function.0 >= MAX_FUNCTIONS {
            return Err(SproxyError::Limit(format!(
                "function id {} is over SPROXY's limit of {}",
                endpoint.function.0,
                MAX_FUNCTIONS - 1
            )));
        }
        let value = EndpointValue {
            function: endpoint.function.0,
            instance: endpoint.instance.0,
        };
        self.identities
            .insert(local_port as u32, value, 0)
            .map_err(map_err("identities"))?;
        // A new socket starts with an empty queue; the read side finds it by its cookie.
        let cookie = socket_cookie(socket).map_err(|e| {
            SproxyError::Limit(format!("cannot read the socket's cookie (SO_COOKIE): {e}"))
        })?;
        let slot = backlog_slot(endpoint);
        self.backlog
            .set(slot, Backlog::default(), 0)
            .map_err(map_err("backlog"))?;
        self.owners
            .insert(cookie, slot, 0)
            .map_err(map_err("owners"))?;
        self.cookies.insert(endpoint.router_key(), cookie);
        let inserted = self
            .socks
            .insert(endpoint.router_key(), socket.as_raw_fd(), 0)
            .map_err(map_err("socks"));
        if inserted.is_err() {
            let _ = self.identities.remove(&(local_port as u32));
            let _ = self.owners.remove(&cookie);
            self.cookies.remove(&endpoint.router_key());
        }
        inserted
    }

    /// Forgets a socket (the kernel drops closed sockets from the sockhash by itself; this
    /// also covers sockets still open).
    pub fn remove_socket(&mut self, endpoint: Endpoint, local_port: u16) {
        let _ = self.socks.remove(&endpoint.router_key());
        let _ = self.identities.remove(&(local_port as u32));
        if let Some(cookie) = self.cookies.remove(&endpoint.router_key()) {
            let _ = self.owners.remove(&cookie);
        }
    }

    /// Sets the instances SPROXY load-balances `function`'s descriptors over.
    pub fn set_instances(
        &mut self,
        function: FnId,
        instances: &[InstanceId],
    ) -> Result<(), SproxyError> {
        if instances.len() > MAX_INSTANCES as usize {
            return Err(SproxyError::Limit(format!(
                "function {function} has {} instances, SPROXY's limit is {MAX_INSTANCES}",
                instances.len()
            )));
        }
        let mut table = InstanceTable {
            count: instances.len() as u32,
            instances: [0; MAX_INSTANCES as usize],
        };
        for (slot, i) in table.instances.iter_mut().zip(instances) {
            *slot = i.0;
        }
        // One update links in the function's whole new table (see sproxy.bpf.c).
        self.instances
            .insert(function.0 as u32, table, 0)
            .map_err(map_err("instances"))
    }

    /// SPROXY's counters for `function`, summed over CPUs.
    pub fn counters(&self, function: FnId) -> Result<FnCounters, SproxyError> {
        let per_cpu = self
            .stats
            .get(&(function.0 as u32), 0)
            .map_err(map_err("stats"))?;
        Ok(per_cpu
            .iter()
            .fold(FnCounters::default(), |a, c| FnCounters {
                sent: a.sent + c.sent,
                sent_bytes: a.sent_bytes + c.sent_bytes,
                received: a.received + c.received,
                refused: a.refused + c.refused,
            }))
    }

    /// Where buffer `index`'s last descriptor was routed, if anywhere.
    pub fn transit(&self, index: u32) -> Option<Transit> {
        Transit::from_word(self.transit.get(&index, 0).ok()?)
    }

    /// Chain-wide audit counters, summed over CPUs.
    pub fn chain_counters(&self) -> Result<ChainCounters, SproxyError> {
        let per_cpu = self.totals.get(&0, 0).map_err(map_err("totals"))?;
        Ok(per_cpu
            .iter()
            .fold(ChainCounters::default(), |a, c| ChainCounters {
                malformed: a.malformed + c.malformed,
                unknown_sender: a.unknown_sender + c.unknown_sender,
                overflow: a.overflow + c.overflow,
            }))
    }
}

/// An endpoint's slot in SPROXY's `backlog` map.
fn backlog_slot(endpoint: Endpoint) -> u32 {
    endpoint.function.0 as u32 * MAX_INSTANCES as u32 + endpoint.instance.0 as u32
}

/// The kernel's unique, never reused id of a socket.
fn socket_cookie(socket: &impl AsRawFd) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

impl Drop for Sproxy {
    fn drop(&mut self) {
        if let Some(dir) = &self.pinned {
            Sproxy::remove_pins(dir);
        }
    }
}
