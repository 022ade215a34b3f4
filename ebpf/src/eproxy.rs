//! EPROXY (`src/bpf/eproxy.bpf.c`): the chain's L3 metrics. Two tc programs on each interface
//! of the chain's external traffic count packets and bytes, in and out, per interface: on the
//! interfaces the gateway listens on, its traffic (in: to its listening address; out: from it);
//! on a function container's own interfaces, all IP traffic ([`netns`]).
//!
//! They attach with tcx only: a tcx link belongs to the file descriptor held here, so the kernel
//! detaches it when this process exits, however it exits. The older netlink (cls_bpf) filters
//! outlive their process and would keep counting, and keep a program loaded, after a crash; so
//! there is no fallback to them, and kernels before 6.6 (without tcx) are refused.
//!
//! The counts can be read elsewhere: [`Eproxy::counts_fd`] gives the counts map's descriptor,
//! which [`TrafficCounts::from_fd`] reads in a process without any capability.

pub mod netns;

use aya::maps::{Array, IterableMap, MapData, PerCpuHashMap};
use aya::programs::tc::{SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use aya::{Ebpf, Pod};
use std::ffi::{CStr, CString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

static EPROXY_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eproxy.bpf.o"));

/// The frames EPROXY can parse: Ethernet, and loopback (whose frames carry a zeroed Ethernet
/// header at tc).
const SUPPORTED_TYPES: [u16; 2] = [libc::ARPHRD_ETHER, libc::ARPHRD_LOOPBACK];

#[derive(Debug, thiserror::Error)]
pub enum EproxyError {
    #[error("loading EPROXY: {0} (loading BPF needs root, or CAP_BPF and CAP_NET_ADMIN)")]
    Load(#[from] aya::EbpfError),
    #[error("EPROXY program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("EPROXY map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("EPROXY object has no {0}")]
    Missing(&'static str),
    /// A descriptor handed over as EPROXY's counts is not that map.
    #[error("not EPROXY's counts map: {0}")]
    NotCounts(String),
    /// The network namespace to count in cannot be entered or listed.
    #[error("network namespace {path}: {reason}")]
    Netns { path: String, reason: String },
    /// EPROXY cannot count on this interface; `reason` completes "interface NAME ...".
    #[error("interface {name} {reason}")]
    Interface { name: String, reason: String },
    /// No interface to count the gateway's traffic on could be found for this address.
    #[error("gateway address {address}: {reason}")]
    Address { address: IpAddr, reason: String },
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> EproxyError {
    move |source| EproxyError::Map { map, source }
}

const FAMILY_ANY: u8 = 0;
const FAMILY_IPV4: u8 = 4;
const FAMILY_IPV6: u8 = 6;

/// Mirrors `struct eproxy_config`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C)]
struct Config {
    port: u16,
    family: u8,
    match_addr: u8,
    addr: [u8; 16],
    all_traffic: u32,
}

impl Config {
    /// Every IP packet, whatever its addresses, ports and protocol.
    fn all_traffic() -> Config {
        Config {
            all_traffic: 1,
            ..Config::default()
        }
    }

    fn new(listen: SocketAddr) -> Config {
        let mut config = Config {
            port: listen.port(),
            ..Config::default()
        };
        let ip = canonical(listen.ip());
        config.match_addr = u8::from(!ip.is_unspecified());
        match ip {
            IpAddr::V4(v4) => {
                config.family = FAMILY_IPV4;
                config.addr[..4].copy_from_slice(&v4.octets());
            }
            // A socket listening on `::` also takes IPv4 connections, unless it is IPV6_V6ONLY
            // (off by default: net.ipv6.bindv6only=0), so both families are its traffic.
            IpAddr::V6(v6) if v6.is_unspecified() => config.family = FAMILY_ANY,
            IpAddr::V6(v6) => {
                config.family = FAMILY_IPV6;
                config.addr = v6.octets();
            }
        }
        config
    }
}

/// Mirrors `struct eproxy_key`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Key {
    ifindex: u32,
    direction: u32,
}

/// Mirrors `struct eproxy_count`.
#[derive(Clone, Copy, Default, Debug)]
#[repr(C)]
struct Count {
    packets: u64,
    bytes: u64,
}

// SAFETY: plain repr(C) integers without padding, mirrored from the C side.
unsafe impl Pod for Config {}
// SAFETY: as above.
unsafe impl Pod for Key {}
// SAFETY: as above.
unsafe impl Pod for Count {}

const _: () = assert!(size_of::<Config>() == 24);

/// An IPv4-mapped IPv6 address is IPv4 on the wire, and is matched as such.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Which way a packet crossed the interface, seen from the gateway or the function container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Received (counted at ingress): on the gateway's interfaces, to its listening address.
    In,
    /// Sent (counted at egress): on the gateway's interfaces, from its listening address.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// EPROXY's count of one interface and direction, summed over CPUs. Bytes are L3 (IP header
/// and payload, no Ethernet header); a GSO/GRO packet counts as its segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceCounters {
    /// The interface's name now, or its index if it is gone.
    pub interface: String,
    pub ifindex: u32,
    pub direction: Direction,
    pub packets: u64,
    pub bytes: u64,
}

/// EPROXY's counts map, read where it was loaded or wherever its descriptor was handed.
pub struct TrafficCounts {
    map: PerCpuHashMap<MapData, Key, Count>,
}

/// The name the kernel knows the counts map by (names are cut at 15 bytes: this one is not).
const COUNTS_MAP: &str = "eproxy_counts";
/// Its `max_entries` in eproxy.bpf.c: a reader refuses a bigger map (each read walks it all).
const COUNTS_ENTRIES: u32 = 128;

impl TrafficCounts {
    /// Reads the counts map behind `fd` (from [`Eproxy::counts_fd`], passed over a unix socket):
    /// refused unless it is a per-CPU hash named `eproxy_counts` with EPROXY's key and value
    /// sizes. Reading needs no capability (kernel >= 6.5 checks privileges when a map is made,
    /// not when its descriptor is used).
    pub fn from_fd(fd: OwnedFd) -> Result<TrafficCounts, EproxyError> {
        let data = MapData::from_fd(fd).map_err(|e| EproxyError::NotCounts(e.to_string()))?;
        let info = data
            .info()
            .map_err(|e| EproxyError::NotCounts(e.to_string()))?;
        if info.name_as_str() != Some(COUNTS_MAP) {
            return Err(EproxyError::NotCounts(format!(
                "the map is named {:?}",
                info.name_as_str().unwrap_or("")
            )));
        }
        if info.max_entries() != COUNTS_ENTRIES {
            return Err(EproxyError::NotCounts(format!(
                "the map holds {} entries, EPROXY's {COUNTS_ENTRIES}",
                info.max_entries()
            )));
        }
        let map = aya::maps::Map::from_map_data(data)
            .map_err(|e| EproxyError::NotCounts(e.to_string()))?;
        let map =
            PerCpuHashMap::try_from(map).map_err(|e| EproxyError::NotCounts(e.to_string()))?;
        Ok(TrafficCounts { map })
    }

    /// Everything counted, per interface and direction, summed over CPUs, named by `name_of`
    /// (an interface index means something only in its own network namespace), sorted.
    pub fn read(
        &self,
        name_of: impl Fn(u32) -> String,
    ) -> Result<Vec<InterfaceCounters>, EproxyError> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            let (key, per_cpu) = entry.map_err(map_err(COUNTS_MAP))?;
            let direction = match key.direction {
                0 => Direction::In,
                _ => Direction::Out,
            };
            let (packets, bytes) = per_cpu.iter().fold((0u64, 0u64), |(p, b), c| {
                (p.wrapping_add(c.packets), b.wrapping_add(c.bytes))
            });
            out.push(InterfaceCounters {
                interface: name_of(key.ifindex),
                ifindex: key.ifindex,
                direction,
                packets,
                bytes,
            });
        }
        out.sort();
        Ok(out)
    }
}

/// A loaded EPROXY. Dropping it detaches it from every interface and frees its maps (once no
/// other holder of [`Eproxy::counts_fd`] keeps the counts).
pub struct Eproxy {
    config: Array<MapData, Config>,
    counts: TrafficCounts,
    attached: Vec<String>,
    /// The index of each of `attached`, telling a renamed interface from a new one.
    ifindexes: Vec<u32>,
    // Owns the programs, so their tcx links; dropped last.
    ebpf: Ebpf,
}

impl Eproxy {
    /// Loads EPROXY, counting traffic to and from `listen` (port 0: nothing until
    /// [`Eproxy::set_listen`]; address 0.0.0.0: any IPv4 address; `::`: any address, IPv4
    /// included, as a socket listening there is dual-stack by default). It counts nothing
    /// until attached.
    pub fn load(listen: SocketAddr) -> Result<Eproxy, EproxyError> {
        Eproxy::load_with(Config::new(listen))
    }

    /// Loads EPROXY counting every IP packet of the interfaces it is attached to: a function
    /// container's own (all of their traffic is the function's).
    pub fn load_for_all_traffic() -> Result<Eproxy, EproxyError> {
        Eproxy::load_with(Config::all_traffic())
    }

    fn load_with(config_value: Config) -> Result<Eproxy, EproxyError> {
        // Without the kernel's BTF: the programs read only the stable __sk_buff context and
        // need no CO-RE relocation, and relocating against it was half of a load's time (37 ->
        // 18 ms here), which every function container's create pays. (aya still parses
        // /sys/kernel/btf/vmlinux when the loader is made: most of what is left.)
        let mut ebpf = aya::EbpfLoader::new().btf(None).load(EPROXY_OBJECT)?;
        let config = ebpf
            .take_map("eproxy_config")
            .ok_or(EproxyError::Missing("map eproxy_config"))?;
        let counts = ebpf
            .take_map("eproxy_counts")
            .ok_or(EproxyError::Missing("map eproxy_counts"))?;
        let config = Array::try_from(config).map_err(map_err("eproxy_config"))?;
        let counts = TrafficCounts {
            map: PerCpuHashMap::try_from(counts).map_err(map_err(COUNTS_MAP))?,
        };
        for name in ["eproxy_ingress", "eproxy_egress"] {
            classifier(&mut ebpf, name)?.load()?;
        }
        let mut eproxy = Eproxy {
            config,
            counts,
            attached: Vec::new(),
            ifindexes: Vec::new(),
            ebpf,
        };
        eproxy
            .config
            .set(0, config_value, 0)
            .map_err(map_err("eproxy_config"))?;
        Ok(eproxy)
    }

    /// A new descriptor of the counts map, for another process to read them with
    /// [`TrafficCounts::from_fd`] (the map lives while any descriptor of it does).
    pub fn counts_fd(&self) -> std::io::Result<OwnedFd> {
        use std::os::fd::AsFd;
        self.counts.map.map().fd().as_fd().try_clone_to_owned()
    }

    /// [`Eproxy::counts_fd`] opened read-only (`BPF_F_RDONLY`): what to hand to a process that
    /// is only to read the counts. Needs CAP_SYS_ADMIN (it opens the map by its id).
    pub fn counts_fd_read_only(&self) -> std::io::Result<OwnedFd> {
        let info = self
            .counts
            .map
            .map()
            .info()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        // linux/bpf.h, which libc does not carry: the command and the open flag.
        const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
        const BPF_F_RDONLY: u32 = 1 << 3;
        // union bpf_attr for BPF_MAP_GET_FD_BY_ID: map_id, next_id, open_flags.
        let attr: [u32; 3] = [info.id(), 0, BPF_F_RDONLY];
        // SAFETY: bpf(2) reads size_of_val(&attr) bytes of `attr`, which outlives the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_FD_BY_ID,
                attr.as_ptr(),
                size_of_val(&attr),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor the kernel just gave us (close-on-exec: bpf(2) sets it).
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Counts traffic to and from `listen` from now on (the gateway's port may only be known
    /// once it is listening), all traffic no more. What was counted so far stays.
    pub fn set_listen(&mut self, listen: SocketAddr) -> Result<(), EproxyError> {
        self.config
            .set(0, Config::new(listen), 0)
            .map_err(map_err("eproxy_config"))
    }

    /// Attaches EPROXY to both hooks of `ifname`, after any tcx programs already there: it only
    /// observes, so it changes nothing for them (but does not see what one of them ends, by
    /// dropping, passing or redirecting it). Attaching twice is a no-op.
    pub fn attach(&mut self, ifname: &str) -> Result<(), EproxyError> {
        let interface_err = |reason: String| EproxyError::Interface {
            name: ifname.to_owned(),
            reason,
        };
        let link = link(ifname)
            .map_err(|e| interface_err(format!("cannot be looked up: {e}")))?
            .ok_or_else(|| interface_err("does not exist".into()))?;
        if !SUPPORTED_TYPES.contains(&link.hatype) {
            return Err(interface_err(format!(
                "is not Ethernet or loopback (type {}): EPROXY parses Ethernet frames",
                link.hatype
            )));
        }
        if self.ifindexes.contains(&link.ifindex) {
            return Ok(());
        }
        tcx_supported().map_err(interface_err)?;
        let ingress = attach_one(
            &mut self.ebpf,
            "eproxy_ingress",
            ifname,
            TcAttachType::Ingress,
        )?;
        if let Err(e) = attach_one(
            &mut self.ebpf,
            "eproxy_egress",
            ifname,
            TcAttachType::Egress,
        ) {
            // Counting only one way would look like a one-way chain: take both or neither.
            if let Ok(program) = classifier(&mut self.ebpf, "eproxy_ingress") {
                let _ = program.detach(ingress);
            }
            return Err(e);
        }
        // An interface of this name that was deleted took its links with it.
        if let Some(stale) = self.attached.iter().position(|n| n == ifname) {
            self.attached.remove(stale);
            self.ifindexes.remove(stale);
        }
        self.attached.push(ifname.to_owned());
        self.ifindexes.push(link.ifindex);
        Ok(())
    }

    /// The interfaces EPROXY is attached to, in the order they were attached.
    pub fn attached(&self) -> &[String] {
        &self.attached
    }

    /// The interfaces EPROXY is attached to, with their indexes (in the network namespace they
    /// were attached in).
    pub fn attached_indexes(&self) -> impl Iterator<Item = (u32, &str)> {
        self.ifindexes
            .iter()
            .copied()
            .zip(self.attached.iter().map(String::as_str))
    }

    /// Everything EPROXY has counted, per interface and direction, summed over CPUs, sorted by
    /// interface then direction (named as in the calling thread's network namespace).
    pub fn counters(&self) -> Result<Vec<InterfaceCounters>, EproxyError> {
        self.counts.read(interface_name)
    }
}

/// EPROXY attaches with tcx only, which kernels before 6.6 lack. `Err` completes "interface
/// NAME ...".
fn tcx_supported() -> Result<(), String> {
    match KernelVersion::current() {
        Ok(kernel) if kernel < KernelVersion::new(6, 6, 0) => Err(format!(
            "cannot take EPROXY: it attaches with tcx, which needs kernel >= 6.6 (this is \
             {kernel}); netlink tc filters would outlive a crash"
        )),
        _ => Ok(()),
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, EproxyError> {
    Ok(ebpf
        .program_mut(name)
        .ok_or(EproxyError::Missing(name))?
        .try_into()?)
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &'static str,
    ifname: &str,
    hook: TcAttachType,
) -> Result<SchedClassifierLinkId, EproxyError> {
    classifier(ebpf, program)?
        .attach_with_options(
            ifname,
            hook,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| EproxyError::Interface {
            name: ifname.to_owned(),
            reason: format!("refused EPROXY's {hook:?} program (tcx): {e}"),
        })
}

/// How many EPROXY programs (of any chain) are attached to `ifname` now, both hooks together:
/// what a test or an operator checks to see that nothing was left behind.
pub fn programs_on(ifname: &str) -> Result<usize, EproxyError> {
    let mut n = 0;
    for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
        let (_, programs) = SchedClassifier::query_tcx(ifname, hook)?;
        n += programs
            .iter()
            .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("eproxy_")))
            .count();
    }
    Ok(n)
}

/// The interfaces to count the gateway's traffic on when it listens on `listen`: the one that
/// owns the address (`lo` for 127.0.0.0/8 and ::1), or for 0.0.0.0 or `::` every interface
/// that is up and carries Ethernet frames (others are skipped: EPROXY cannot parse them).
///
/// Local clients reach even a non-loopback address of this host over `lo`, so what is counted
/// on the owning interface is external traffic only.
pub fn interfaces_for(listen: &SocketAddr) -> Result<Vec<String>, EproxyError> {
    let ip = canonical(listen.ip());
    if ip.is_loopback() {
        return Ok(vec!["lo".to_owned()]);
    }
    let lookup_err = |e: std::io::Error| EproxyError::Address {
        address: ip,
        reason: format!("cannot list interfaces: {e}"),
    };
    let mut names: Vec<String> = if ip.is_unspecified() {
        links()
            .map_err(lookup_err)?
            .into_iter()
            .filter(|l| l.up && SUPPORTED_TYPES.contains(&l.hatype))
            .map(|l| l.name)
            .collect()
    } else {
        addresses()
            .map_err(lookup_err)?
            .into_iter()
            .filter(|(_, a)| *a == ip)
            .map(|(name, _)| name)
            .collect()
    };
    names.sort();
    names.dedup();
    if names.is_empty() {
        let reason = if ip.is_unspecified() {
            "no interface is up and Ethernet or loopback"
        } else {
            "no interface has this address"
        };
        return Err(EproxyError::Address {
            address: ip,
            reason: reason.into(),
        });
    }
    Ok(names)
}

/// One network interface of the calling thread's network namespace.
struct LinkEntry {
    name: String,
    ifindex: u32,
    /// ARPHRD_* type.
    hatype: u16,
    up: bool,
}

/// Interface `name`, if there is one. Its type and flags come from ioctls rather than
/// getifaddrs, which reports no type for interfaces without a link-layer address (tun, wg).
fn link(name: &str) -> std::io::Result<Option<LinkEntry>> {
    let Ok(c_name) = CString::new(name) else {
        return Ok(None);
    };
    if c_name.as_bytes_with_nul().len() > libc::IFNAMSIZ {
        return Ok(None);
    }
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if ifindex == 0 {
        return Ok(None);
    }
    // SAFETY: a plain socket() call; the descriptor is owned (and closed) by `sock`.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `sock` is a descriptor we just opened and nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let ioctl = |request: libc::c_ulong| -> std::io::Result<libc::ifreq> {
        // SAFETY: ifreq is plain data, valid zeroed.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(c_name.as_bytes()) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: both requests read the name from and write their answer into `req`.
        if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(req)
    };
    let (flags, hwaddr) = match (ioctl(libc::SIOCGIFFLAGS), ioctl(libc::SIOCGIFHWADDR)) {
        (Ok(f), Ok(h)) => (f, h),
        // Gone since if_nametoindex.
        (Err(e), _) | (_, Err(e)) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    // SAFETY: SIOCGIFFLAGS answers in ifru_flags, SIOCGIFHWADDR in ifru_hwaddr.
    let (flags, hatype) = unsafe {
        (
            flags.ifr_ifru.ifru_flags,
            hwaddr.ifr_ifru.ifru_hwaddr.sa_family,
        )
    };
    Ok(Some(LinkEntry {
        name: name.to_owned(),
        ifindex,
        hatype,
        up: flags & libc::IFF_UP as libc::c_short != 0,
    }))
}

/// Every interface of the calling thread's network namespace.
fn links() -> std::io::Result<Vec<LinkEntry>> {
    // SAFETY: if_nameindex returns an array it allocated, ended by a zero entry; freed below.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut entry = head;
    // SAFETY: every entry up to the zero one is valid, its name a C string.
    unsafe {
        while (*entry).if_index != 0 && !(*entry).if_name.is_null() {
            names.push(
                CStr::from_ptr((*entry).if_name)
                    .to_string_lossy()
                    .into_owned(),
            );
            entry = entry.add(1);
        }
        libc::if_freenameindex(head);
    }
    let mut out = Vec::new();
    for name in names {
        out.extend(link(&name)?);
    }
    Ok(out)
}

/// Every (interface, IP address) pair of the calling thread's network namespace.
fn addresses() -> std::io::Result<Vec<(String, IpAddr)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list it allocated into `head`; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut addresses = Vec::new();
    let mut entry = head;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed; its name
        // is a C string and its address, when present, is a sockaddr of the family it names.
        unsafe {
            let e = &*entry;
            entry = e.ifa_next;
            if e.ifa_addr.is_null() || e.ifa_name.is_null() {
                continue;
            }
            let ip = match i32::from((*e.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*e.ifa_addr.cast::<libc::sockaddr_in>();
                    IpAddr::V4(Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 => {
                    let sin6 = &*e.ifa_addr.cast::<libc::sockaddr_in6>();
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            let name = CStr::from_ptr(e.ifa_name).to_string_lossy().into_owned();
            addresses.push((name, ip));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(addresses)
}

/// The name of interface `ifindex`, or the index itself if no interface has it any more.
fn interface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes, NUL included, into `buf`.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return ifindex.to_string();
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_encodes_the_listen_address() {
        let c = Config::new("10.1.2.3:8080".parse().unwrap());
        assert_eq!((c.port, c.family, c.match_addr), (8080, 4, 1));
        assert_eq!(&c.addr[..4], &[10, 1, 2, 3]);
        assert!(c.addr[4..].iter().all(|&b| b == 0));

        let c = Config::new("0.0.0.0:80".parse().unwrap());
        assert_eq!((c.port, c.family, c.match_addr), (80, 4, 0));

        // Dual-stack: either family.
        let c = Config::new("[::]:0".parse().unwrap());
        assert_eq!((c.port, c.family, c.match_addr), (0, 0, 0));

        let c = Config::new("[fd00::1]:443".parse().unwrap());
        assert_eq!((c.family, c.match_addr), (6, 1));
        assert_eq!(c.addr[0], 0xfd);
        assert_eq!(c.addr[15], 1);

        // IPv4-mapped: IPv4 on the wire.
        let c = Config::new("[::ffff:192.0.2.7]:9".parse().unwrap());
        assert_eq!((c.family, c.match_addr), (4, 1));
        assert_eq!(&c.addr[..4], &[192, 0, 2, 7]);
    }

    #[test]
    fn loopback_addresses_are_counted_on_lo() {
        for a in [
            "127.0.0.1:1",
            "127.8.9.10:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(interfaces_for(&a.parse().unwrap()).unwrap(), ["lo"], "{a}");
        }
    }

    #[test]
    fn an_address_no_interface_has_is_an_error_naming_it() {
        // TEST-NET-3, assigned to no interface here.
        let e = interfaces_for(&"203.0.113.77:80".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("203.0.113.77"), "{e}");
    }

    #[test]
    fn interface_names_come_back_from_their_index() {
        assert_eq!(interface_name(1), "lo");
        assert_eq!(interface_name(u32::MAX), u32::MAX.to_string());
    }
}
