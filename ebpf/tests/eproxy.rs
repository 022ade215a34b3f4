//! EPROXY in the real kernel: on a veth pair whose far end is in a network namespace of the
//! test's own, its counts of the gateway's traffic equal what the interface itself counted,
//! traffic to any other port is not counted, and nothing is left attached once it is dropped.
//! Needs root (BPF, network namespaces).

use aya::programs::{SchedClassifier, TcAttachType};
use spright_ebpf::eproxy::netns::{count_all_traffic_in, NetnsCount};
use spright_ebpf::eproxy::{
    interfaces_for, Direction, Eproxy, EproxyError, InterfaceCounters, TrafficCounts,
};
use spright_test_support::have_root;
use spright_test_support::netns::{join, run, spawn_in_netns};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Request/response exchanges per connection.
const ROUNDS: usize = 50;
const MESSAGE: usize = 100;
const ETH_HLEN: u64 = 14;
const DEADLINE: Duration = Duration::from_secs(10);

/// A network namespace of the test's own and a veth pair into it: `host` stays in the test's
/// namespace with `host_ip`/30, `peer` is in `ns` with `peer_ip`/30. No IPv6 and static
/// neighbours on both ends, so nothing crosses the pair but what the test sends. Removed on
/// drop, panics included.
struct Net {
    ns: String,
    host: String,
    peer: String,
    host_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

static NEXT_NET: AtomicU8 = AtomicU8::new(0);

impl Net {
    fn new() -> Net {
        let pid = std::process::id();
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        assert!(n < 64, "one /30 in 10.213.x.0/24 per fixture");
        // Interface names are at most 15 characters.
        let tag = format!("{}x{n}", pid % 1_000_000);
        let x = (pid % 250) as u8;
        let net = Net {
            ns: format!("sprt-eproxy-{pid}-{n}"),
            host: format!("spe{tag}h"),
            peer: format!("spe{tag}p"),
            host_ip: Ipv4Addr::new(10, 213, x, 4 * n + 1),
            peer_ip: Ipv4Addr::new(10, 213, x, 4 * n + 2),
        };
        // Left by an earlier run that was killed with the same pid: ignore failures.
        net.remove();
        run(&["ip", "netns", "add", &net.ns]);
        let (ns, host, peer) = (net.ns.as_str(), net.host.as_str(), net.peer.as_str());
        let exec = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns];
            all.extend_from_slice(args);
            run(&all);
        };
        let (host_mac, peer_mac) = ("02:5e:00:00:00:01", "02:5e:00:00:00:02");
        run(&[
            "ip", "link", "add", host, "address", host_mac, "type", "veth", "peer", "name", peer,
        ]);
        run(&["ip", "link", "set", peer, "netns", ns]);
        exec(&["ip", "link", "set", peer, "address", peer_mac]);
        run(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{host}.disable_ipv6=1"),
        ]);
        exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{peer}.disable_ipv6=1"),
        ]);
        let (host_cidr, peer_cidr) = (format!("{}/30", net.host_ip), format!("{}/30", net.peer_ip));
        run(&["ip", "addr", "add", &host_cidr, "dev", host]);
        exec(&["ip", "addr", "add", &peer_cidr, "dev", peer]);
        run(&["ip", "link", "set", host, "up"]);
        exec(&["ip", "link", "set", peer, "up"]);
        exec(&["ip", "link", "set", "lo", "up"]);
        // After the links are up (taking a link down flushes its neighbours).
        let (host_ip, peer_ip) = (net.host_ip.to_string(), net.peer_ip.to_string());
        run(&[
            "ip",
            "neigh",
            "replace",
            &peer_ip,
            "lladdr",
            peer_mac,
            "dev",
            host,
            "nud",
            "permanent",
        ]);
        exec(&[
            "ip",
            "neigh",
            "replace",
            &host_ip,
            "lladdr",
            host_mac,
            "dev",
            peer,
            "nud",
            "permanent",
        ]);
        net
    }

    fn remove(&self) {
        // Deleting the namespace frees the pair only later (asynchronously): delete it now.
        for args in [
            &["ip", "link", "del", &self.host][..],
            &["ip", "netns", "del", &self.ns][..],
        ] {
            let _ = Command::new(args[0])
                .args(&args[1..])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }

    /// The host end's own counts, as frames: (rx packets, rx bytes, tx packets, tx bytes).
    fn stats(&self) -> Traffic {
        let read = |name: &str| -> u64 {
            let path = format!("/sys/class/net/{}/statistics/{name}", self.host);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{path}: {e}"))
                .trim()
                .parse()
                .unwrap()
        };
        Traffic {
            in_packets: read("rx_packets"),
            in_bytes: read("rx_bytes"),
            out_packets: read("tx_packets"),
            out_bytes: read("tx_bytes"),
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Frames in and out, or EPROXY's counts as frames (its bytes are L3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Traffic {
    in_packets: u64,
    in_bytes: u64,
    out_packets: u64,
    out_bytes: u64,
}

impl std::ops::Sub for Traffic {
    type Output = Traffic;
    fn sub(self, o: Traffic) -> Traffic {
        Traffic {
            in_packets: self.in_packets - o.in_packets,
            in_bytes: self.in_bytes - o.in_bytes,
            out_packets: self.out_packets - o.out_packets,
            out_bytes: self.out_bytes - o.out_bytes,
        }
    }
}

/// EPROXY's counts on `ifname`, its bytes as it counts them (L3).
fn l3(eproxy: &Eproxy, ifname: &str) -> Traffic {
    let mut t = Traffic::default();
    for c in eproxy.counters().unwrap() {
        if c.interface != ifname {
            continue;
        }
        match c.direction {
            Direction::In => (t.in_packets, t.in_bytes) = (c.packets, c.bytes),
            Direction::Out => (t.out_packets, t.out_bytes) = (c.packets, c.bytes),
        }
    }
    t
}

/// EPROXY's counts on `ifname`, with each packet's Ethernet header added back to its bytes, as
/// a veth counts them.
fn counted(eproxy: &Eproxy, ifname: &str) -> Traffic {
    let mut t = l3(eproxy, ifname);
    t.in_bytes += ETH_HLEN * t.in_packets;
    t.out_bytes += ETH_HLEN * t.out_packets;
    t
}

/// Polls until `eproxy()` equals `truth()` (the kernel's counts can trail the last packet by
/// a moment), then returns both, for the caller to assert on.
fn settle(
    mut eproxy: impl FnMut() -> Traffic,
    mut truth: impl FnMut() -> Traffic,
) -> (Traffic, Traffic) {
    let start = Instant::now();
    loop {
        let (e, t) = (eproxy(), truth());
        if e == t || start.elapsed() > DEADLINE {
            return (e, t);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn listener(ip: impl Into<IpAddr>) -> TcpListener {
    let ip = ip.into();
    let l = TcpListener::bind((ip, 0)).unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

/// The kernel's state of a TCP socket (TCP_INFO's first field).
fn tcp_state(s: &TcpStream) -> u8 {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info[0]
}

const TCP_CLOSE: u8 = 7;

/// One connection from `client_ns` to `server`: ROUNDS echoed messages of MESSAGE bytes with
/// TCP_NODELAY, closed by the client. Returns once the connection is fully closed (the
/// server's socket saw the last ACK), so no packet of it is still to come.
fn exchange(server: &TcpListener, client_ns: &str) {
    let to = server.local_addr().unwrap();
    let server = server.try_clone().unwrap();
    let serving = std::thread::spawn(move || {
        let (mut s, _) = spright_test_support::wait_for("the client to connect", DEADLINE, || {
            server.accept().ok()
        });
        s.set_nonblocking(false).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut buf = [0u8; MESSAGE];
        let mut echoed = 0;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => break,
                n => {
                    s.write_all(&buf[..n]).unwrap();
                    echoed += n;
                }
            }
        }
        assert_eq!(echoed, ROUNDS * MESSAGE);
        s.shutdown(Shutdown::Write).unwrap();
        spright_test_support::wait_for("the connection to close", DEADLINE, || {
            (tcp_state(&s) == TCP_CLOSE).then_some(())
        });
    });
    let client = spawn_in_netns(client_ns, move || {
        let mut s = TcpStream::connect_timeout(&to, DEADLINE).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let msg = [0x5au8; MESSAGE];
        let mut back = [0u8; MESSAGE];
        for _ in 0..ROUNDS {
            s.write_all(&msg).unwrap();
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, msg);
        }
    });
    join(client);
    join(serving);
}

#[test]
fn counts_equal_the_interfaces_own_and_other_ports_are_not_counted() {
    if !have_root("counts_equal_the_interfaces_own_and_other_ports_are_not_counted") {
        return;
    }
    let net = Net::new();
    let gateway = listener(net.host_ip);
    let listen = gateway.local_addr().unwrap();
    let mut eproxy = Eproxy::load(listen).expect("load EPROXY");
    assert_eq!(
        interfaces_for(&listen).unwrap(),
        std::slice::from_ref(&net.host)
    );
    eproxy.attach(&net.host).unwrap();
    eproxy.attach(&net.host).unwrap();
    assert_eq!(
        eproxy.attached(),
        std::slice::from_ref(&net.host),
        "attaching twice is a no-op"
    );

    let before = net.stats();
    exchange(&gateway, &net.ns);
    let (counted_now, truth) = settle(|| counted(&eproxy, &net.host), || net.stats() - before);
    assert_eq!(
        counted_now, truth,
        "EPROXY's counts (left, bytes as frames) against {}'s statistics",
        net.host
    );
    assert!(counted_now.in_packets >= ROUNDS as u64, "{counted_now:?}");
    assert!(counted_now.out_packets >= ROUNDS as u64, "{counted_now:?}");
    let counters = eproxy.counters().unwrap();
    let ifindex = counters[0].ifindex;
    assert_eq!(
        counters
            .iter()
            .map(|c| (c.interface.as_str(), c.ifindex, c.direction))
            .collect::<Vec<_>>(),
        [
            (net.host.as_str(), ifindex, Direction::In),
            (net.host.as_str(), ifindex, Direction::Out)
        ]
    );
    // L3 bytes: at least the payload and a 20-byte IP and TCP header per packet.
    for c in &counters {
        assert!(
            c.bytes >= (ROUNDS * MESSAGE) as u64 + 40 * c.packets,
            "{c:?}"
        );
    }

    // Another port of the same address: the interface counts it, EPROXY does not. The server
    // read every request, so each had passed the ingress hook; the egress hook runs in the
    // sender's own call.
    let other = listener(net.host_ip);
    let (snapshot, stats) = (eproxy.counters().unwrap(), net.stats());
    exchange(&other, &net.ns);
    let grown = net.stats() - stats;
    assert!(grown.in_packets >= ROUNDS as u64, "{grown:?}");
    assert!(grown.out_packets >= ROUNDS as u64, "{grown:?}");
    assert_eq!(
        eproxy.counters().unwrap(),
        snapshot,
        "traffic to another port counted"
    );

    // And the gateway's port is still counted, exactly.
    let (base_counted, base_stats) = (counted(&eproxy, &net.host), net.stats());
    exchange(&gateway, &net.ns);
    let (now, truth) = settle(
        || counted(&eproxy, &net.host) - base_counted,
        || net.stats() - base_stats,
    );
    assert_eq!(
        now, truth,
        "EPROXY's counts against {}'s statistics",
        net.host
    );
}

#[test]
fn port_zero_counts_nothing_until_the_port_is_set() {
    if !have_root("port_zero_counts_nothing_until_the_port_is_set") {
        return;
    }
    let net = Net::new();
    let gateway = listener(net.host_ip);
    let listen = gateway.local_addr().unwrap();
    let mut eproxy = Eproxy::load(SocketAddr::new(listen.ip(), 0)).expect("load EPROXY");
    eproxy.attach(&net.host).unwrap();
    exchange(&gateway, &net.ns);
    assert_eq!(eproxy.counters().unwrap(), Vec::<InterfaceCounters>::new());

    // The port learnt at run time: counting starts.
    eproxy.set_listen(listen).unwrap();
    let before = net.stats();
    exchange(&gateway, &net.ns);
    let (now, truth) = settle(|| counted(&eproxy, &net.host), || net.stats() - before);
    assert_eq!(
        now, truth,
        "EPROXY's counts against {}'s statistics",
        net.host
    );
    assert!(now.in_packets >= ROUNDS as u64 && now.out_packets >= ROUNDS as u64);
}

#[test]
fn a_missing_or_non_ethernet_interface_is_a_clear_error() {
    if !have_root("a_missing_or_non_ethernet_interface_is_a_clear_error") {
        return;
    }
    let mut eproxy = Eproxy::load("127.0.0.1:80".parse().unwrap()).expect("load EPROXY");
    let err = eproxy.attach("nonexistent0").unwrap_err();
    assert!(
        matches!(&err, EproxyError::Interface { name, .. } if name == "nonexistent0"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "interface nonexistent0 does not exist");
    assert!(eproxy.attached().is_empty());

    // A tun device (no link-layer header) in a namespace of the test's own.
    let net = Net::new();
    let tun = format!("{}t", &net.host[..net.host.len() - 1]);
    run(&[
        "ip", "netns", "exec", &net.ns, "ip", "tuntap", "add", "dev", &tun, "mode", "tun",
    ]);
    run(&[
        "ip", "netns", "exec", &net.ns, "ip", "link", "set", &tun, "up",
    ]);
    let peer = net.peer.clone();
    join(spawn_in_netns(&net.ns, move || {
        let err = eproxy.attach(&tun).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "interface {tun} is not Ethernet or loopback (type 65534): EPROXY parses \
                 Ethernet frames"
            )
        );
        // Listening on any address: every interface that is up, the tun skipped.
        let all = interfaces_for(&"0.0.0.0:80".parse().unwrap()).unwrap();
        assert_eq!(all, ["lo".to_owned(), peer.clone()]);
        let all = interfaces_for(&"[::]:80".parse().unwrap()).unwrap();
        assert_eq!(all, ["lo".to_owned(), peer]);
    }));
}

#[test]
fn dropping_eproxy_leaves_nothing_attached() {
    if !have_root("dropping_eproxy_leaves_nothing_attached") {
        return;
    }
    let net = Net::new();
    let names = |hook| -> Vec<String> {
        SchedClassifier::query_tcx(&net.host, hook)
            .unwrap()
            .1
            .iter()
            .map(|p| p.name_as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let mut eproxy = Eproxy::load(SocketAddr::new(net.host_ip.into(), 80)).expect("load EPROXY");
    eproxy.attach(&net.host).unwrap();
    assert_eq!(names(TcAttachType::Ingress), ["eproxy_ingress"]);
    assert_eq!(names(TcAttachType::Egress), ["eproxy_egress"]);
    drop(eproxy);
    // A child another test forks at that moment holds the links until it execs.
    spright_test_support::wait_for("the programs to go", DEADLINE, || {
        (names(TcAttachType::Ingress).is_empty() && names(TcAttachType::Egress).is_empty())
            .then_some(())
    });
}

/// lo's counts in the calling thread's namespace.
fn lo_stats() -> Traffic {
    let [in_packets, in_bytes, out_packets, out_bytes] =
        spright_test_support::netns::dev_stats("lo");
    Traffic {
        in_packets,
        in_bytes,
        out_packets,
        out_bytes,
    }
}

#[test]
fn on_lo_each_packet_is_counted_once_in_its_direction() {
    if !have_root("on_lo_each_packet_is_counted_once_in_its_direction") {
        return;
    }
    counted_once_on_lo(Ipv4Addr::LOCALHOST.into());
}

/// The IPv6 path (the veth tests have IPv6 off).
#[test]
fn on_lo_ipv6_is_counted_once_in_its_direction() {
    if !have_root("on_lo_ipv6_is_counted_once_in_its_direction") {
        return;
    }
    counted_once_on_lo(Ipv6Addr::LOCALHOST.into());
}

fn counted_once_on_lo(ip: IpAddr) {
    // In the test's own namespace, whose lo carries only the test's traffic.
    let net = Net::new();
    let ns = net.ns.clone();
    join(spawn_in_netns(&net.ns, move || {
        let gateway = listener(ip);
        let listen = gateway.local_addr().unwrap();
        let mut eproxy = Eproxy::load(listen).expect("load EPROXY");
        assert_eq!(interfaces_for(&listen).unwrap(), ["lo"]);
        eproxy.attach("lo").unwrap();
        let before = lo_stats();
        exchange(&gateway, &ns);
        // Every packet leaves and enters lo once: lo's rx and tx both count all of them, and
        // EPROXY each once, a request as "in" and a response as "out". lo's byte counts are L3
        // (it counts after taking the Ethernet header off), as EPROXY's are.
        let (now, truth) = settle(
            || {
                let c = l3(&eproxy, "lo");
                Traffic {
                    in_packets: c.in_packets + c.out_packets,
                    in_bytes: c.in_bytes + c.out_bytes,
                    out_packets: c.in_packets + c.out_packets,
                    out_bytes: c.in_bytes + c.out_bytes,
                }
            },
            || lo_stats() - before,
        );
        assert_eq!(now, truth, "EPROXY's in + out against lo's rx and tx");
        let c = l3(&eproxy, "lo");
        assert!(
            c.in_packets >= ROUNDS as u64 && c.out_packets >= ROUNDS as u64,
            "{c:?}"
        );
        // Requests and responses are the same size; the handshake and close differ by a
        // packet or two either way.
        assert!(c.in_packets.abs_diff(c.out_packets) <= 3, "{c:?}");
    }));
}

/// The peer end's counts, as frames: a veth pair drops nothing, so what one end sends the
/// other receives.
fn peer_stats(net: &Net) -> Traffic {
    let host = net.stats();
    Traffic {
        in_packets: host.out_packets,
        in_bytes: host.out_bytes,
        out_packets: host.in_packets,
        out_bytes: host.in_bytes,
    }
}

/// Sets key {ifindex 0, direction 0} of the counts map behind `fd` (BPF_MAP_UPDATE_ELEM): the
/// errno when refused.
fn update_elem(fd: &std::os::fd::OwnedFd) -> Result<(), i32> {
    let key = [0u32; 2];
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let cpus: usize = cpus
        .trim()
        .rsplit(['-', ','])
        .next()
        .unwrap()
        .parse::<usize>()
        .unwrap()
        + 1;
    // A per-CPU value: one 16-byte count per possible CPU, 8-byte aligned.
    let value = vec![0u64; 2 * cpus];
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = Attr {
        map_fd: fd.as_raw_fd() as u32,
        _pad: 0,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        flags: 0,
    };
    // SAFETY: bpf(2) reads `attr` and the key and value it points at, all alive here.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            2, // BPF_MAP_UPDATE_ELEM
            &attr as *const Attr,
            size_of::<Attr>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// `counts` as frames on `ifindex` (bytes with each packet's Ethernet header added back).
fn frames(counts: &[InterfaceCounters], ifindex: u32) -> Traffic {
    let mut t = Traffic::default();
    for c in counts.iter().filter(|c| c.ifindex == ifindex) {
        let bytes = c.bytes + ETH_HLEN * c.packets;
        match c.direction {
            Direction::In => (t.in_packets, t.in_bytes) = (c.packets, bytes),
            Direction::Out => (t.out_packets, t.out_bytes) = (c.packets, bytes),
        }
    }
    t
}

/// UDP datagrams from inside `ns` to `to`, each echoed back.
fn udp_exchange(to_ip: Ipv4Addr, ns: &str) {
    let server = std::net::UdpSocket::bind((to_ip, 0)).unwrap();
    server.set_read_timeout(Some(DEADLINE)).unwrap();
    let to = server.local_addr().unwrap();
    let client = spawn_in_netns(ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut back = [0u8; 64];
        for i in 0..10u8 {
            s.send_to(&[i; 33], to).unwrap();
            let (n, _) = s.recv_from(&mut back).unwrap();
            assert_eq!(&back[..n], &[i; 33]);
        }
    });
    let mut buf = [0u8; 64];
    for _ in 0..10 {
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(&buf[..n], from).unwrap();
    }
    join(client);
}

#[test]
fn in_a_containers_namespace_every_ip_packet_of_its_interfaces_is_counted() {
    if !have_root("in_a_containers_namespace_every_ip_packet_of_its_interfaces_is_counted") {
        return;
    }
    let net = Net::new();
    let netns = std::path::PathBuf::from(format!("/var/run/netns/{}", net.ns));
    let opened = File::open(&netns).unwrap();
    let NetnsCount::Counting(counting) =
        count_all_traffic_in(opened, &net.ns).expect("attach EPROXY")
    else {
        panic!("{} has an interface that is up", net.ns);
    };
    assert_eq!(counting.interfaces.len(), 1, "lo is left out");
    let (ifindex, name) = counting.interfaces[0].clone();
    assert_eq!(name, net.peer);
    // Handed over read-only, as the shim hands it to the pool-manager.
    let read_only = counting.eproxy.counts_fd_read_only().unwrap();
    assert_eq!(
        update_elem(&read_only),
        Err(libc::EPERM),
        "a read-only descriptor cannot change the counts"
    );
    assert_eq!(update_elem(&counting.eproxy.counts_fd().unwrap()), Ok(()));
    let reader = TrafficCounts::from_fd(read_only).unwrap();
    let read = |r: &TrafficCounts| r.read(|i| i.to_string()).unwrap();

    // TCP to two ports and UDP: all of it is the container's traffic.
    let before = peer_stats(&net);
    exchange(&listener(net.host_ip), &net.ns);
    exchange(&listener(net.host_ip), &net.ns);
    udp_exchange(net.host_ip, &net.ns);
    let (now, truth) = settle(
        || frames(&read(&reader), ifindex),
        || peer_stats(&net) - before,
    );
    assert_eq!(
        now, truth,
        "EPROXY's counts read through a handed-over descriptor (left, bytes as frames) \
         against {}'s statistics",
        net.peer
    );
    assert!(now.in_packets >= 2 * ROUNDS as u64 + 10, "{now:?}");
    assert!(now.out_packets >= 2 * ROUNDS as u64 + 10, "{now:?}");

    // Detached with its holder; the counts stay readable by whoever holds the map.
    let peer = net.peer.clone();
    join(spawn_in_netns(&net.ns, move || {
        assert_eq!(spright_ebpf::eproxy::programs_on(&peer).unwrap(), 2);
    }));
    drop(counting);
    let peer = net.peer.clone();
    // A link is released when its last descriptor closes: a child another test forks at that
    // moment holds a copy until it execs (close-on-exec).
    join(spawn_in_netns(&net.ns, move || {
        spright_test_support::wait_for("the programs to go", DEADLINE, || {
            (spright_ebpf::eproxy::programs_on(&peer).unwrap() == 0).then_some(())
        })
    }));
    assert_eq!(frames(&read(&reader), ifindex), now);
}

#[test]
fn the_callers_own_or_an_empty_namespace_gets_nothing_attached() {
    if !have_root("the_callers_own_or_an_empty_namespace_gets_nothing_attached") {
        return;
    }
    let ours = count_all_traffic_in(File::open("/proc/self/ns/net").unwrap(), "ours").unwrap();
    assert!(matches!(ours, NetnsCount::SharedWithCaller));

    // A namespace with lo only (and lo up): nothing of its own to count.
    let net = Net::new();
    run(&[
        "ip", "netns", "exec", &net.ns, "ip", "link", "del", &net.peer,
    ]);
    let netns = std::path::PathBuf::from(format!("/var/run/netns/{}", net.ns));
    assert!(matches!(
        count_all_traffic_in(File::open(&netns).unwrap(), &net.ns).unwrap(),
        NetnsCount::NoInterface
    ));

    // Not a network namespace at all.
    let err = count_all_traffic_in(File::open("/dev/null").unwrap(), "/dev/null").err();
    assert!(
        matches!(&err, Some(EproxyError::Netns { path, reason }) if path == "/dev/null" && reason.starts_with("cannot be entered")),
        "{:?}",
        err.map(|e| e.to_string())
    );
}

#[test]
fn a_descriptor_that_is_not_eproxys_counts_is_refused() {
    if !have_root("a_descriptor_that_is_not_eproxys_counts_is_refused") {
        return;
    }
    let not_a_map: std::os::fd::OwnedFd = File::open("/dev/null").unwrap().into();
    let err = TrafficCounts::from_fd(not_a_map).err().expect("refused");
    assert!(
        err.to_string().starts_with("not EPROXY's counts map"),
        "{err}"
    );
}
