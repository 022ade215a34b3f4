//! EPROXY on a function container's own interface: the shim attaches it in the container's
//! network namespace (here one of the test's own, joined with `ctr run --with-ns`, as a CNI
//! pod's would be), the pool-manager reports what it counted, exactly what the interface
//! itself counted, and nothing stays attached once its function stops or its shim is
//! killed outright.

use spright_core::protocol::FunctionTraffic;
use spright_e2e::containerd::{text, Containerd, Version};
use spright_e2e::netns::{in_netns, VethPair};
use spright_e2e::{http, on_every_containerd, wait_for, ChainSpec, ChainUnderTest};
use spright_ebpf::eproxy::programs_on;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

const SPRIGHT: &str = "io.containerd.spright.v1";
const IMAGE: &str = "spright.local/functions:latest";
const ETH_HLEN: u64 = 14;
const DEADLINE: Duration = Duration::from_secs(10);

on_every_containerd!(a_function_containers_own_traffic_is_counted_and_nothing_stays_attached);

/// `ctr run -d` of demo function `function` as container `id`, in `netns` if given.
fn run_function(c: &Containerd, chain: &ChainUnderTest, function: &str, id: &str, netns: &str) {
    let chain_annotation = format!("spright.io/chain={}", chain.name);
    let function_annotation = format!("spright.io/function={function}");
    let with_ns = format!("network:{netns}");
    let command = format!("/bin/spright-demo-{function}");
    let mut args = vec!["run", "-d", "--runtime", SPRIGHT];
    if !netns.is_empty() {
        args.extend(["--with-ns", &with_ns]);
    }
    args.extend([
        "--annotation",
        &chain_annotation,
        "--annotation",
        &function_annotation,
        IMAGE,
        id,
        &command,
    ]);
    let out = c.ctr(&args);
    assert!(
        out.status.success(),
        "ctr run {id} on {}: {}\n{}",
        c.version,
        text(&out),
        c.log()
    );
}

/// What the pool-manager reports of container `id`: (in packets, in bytes, out packets, out
/// bytes), bytes as EPROXY counts them (L3); None while it reports nothing of it.
fn reported(chain: &ChainUnderTest, id: &str) -> Option<[u64; 4]> {
    let mine: Vec<FunctionTraffic> = chain
        .stats()
        .function_eproxy
        .into_iter()
        .filter(|t| t.container == id)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let mut t = [0; 4];
    for m in mine {
        let at = if m.counters.direction == "in" { 0 } else { 2 };
        t[at] += m.counters.packets;
        t[at + 1] += m.counters.bytes;
    }
    Some(t)
}

/// EPROXY's L3 counts as the frames a veth counts.
fn as_frames(t: [u64; 4]) -> [u64; 4] {
    [t[0], t[1] + ETH_HLEN * t[0], t[2], t[3] + ETH_HLEN * t[2]]
}

fn minus(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]]
}

/// TCP and UDP from inside the pair to outside and back: what a function's own outside calls
/// look like.
fn traffic_through(pair: &VethPair) {
    let (outside, outside_ip) = (pair.outside.clone(), pair.outside_ip);
    let (tx, rx) = std::sync::mpsc::channel::<(SocketAddr, SocketAddr)>();
    let server = std::thread::spawn(move || {
        in_netns(&outside, move || {
            let tcp = TcpListener::bind((outside_ip, 0)).unwrap();
            let udp = UdpSocket::bind((outside_ip, 0)).unwrap();
            udp.set_read_timeout(Some(DEADLINE)).unwrap();
            tx.send((tcp.local_addr().unwrap(), udp.local_addr().unwrap()))
                .unwrap();
            let (mut s, _) = tcp.accept().unwrap();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf).unwrap() {
                    0 => break,
                    n => s.write_all(&buf[..n]).unwrap(),
                }
            }
            s.shutdown(Shutdown::Write).unwrap();
            for _ in 0..5 {
                let (n, from) = udp.recv_from(&mut buf).unwrap();
                udp.send_to(&buf[..n], from).unwrap();
            }
        })
    });
    let (tcp_at, udp_at) = rx.recv_timeout(DEADLINE).expect("the server to listen");
    in_netns(&pair.inside, move || {
        let mut s = TcpStream::connect_timeout(&tcp_at, DEADLINE).unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut back = [0u8; 300];
        for i in 0..20u8 {
            s.write_all(&[i; 300]).unwrap();
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, [i; 300]);
        }
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(s.read(&mut back).unwrap(), 0);
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(DEADLINE)).unwrap();
        for i in 0..5u8 {
            u.send_to(&[i; 77], udp_at).unwrap();
            let (n, _) = u.recv_from(&mut back).unwrap();
            assert_eq!(&back[..n], &[i; 77]);
        }
    });
    server.join().unwrap();
}

/// Waits until what the pool-manager reports of `id` since `base` equals what the inside
/// interface counted since `stats_base` (the last ACKs may trail the exchange), and returns
/// both.
fn settled(
    chain: &ChainUnderTest,
    pair: &VethPair,
    id: &str,
    base: [u64; 4],
    stats_base: [u64; 4],
) -> ([u64; 4], [u64; 4]) {
    let start = std::time::Instant::now();
    loop {
        let counted = as_frames(minus(reported(chain, id).unwrap_or_default(), base));
        let truth = minus(pair.inside_stats(), stats_base);
        if counted == truth || start.elapsed() > DEADLINE {
            return (counted, truth);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn programs_inside(pair: &VethPair) -> usize {
    let ifname = pair.inside_if.clone();
    in_netns(&pair.inside, move || programs_on(&ifname).unwrap())
}

fn a_function_containers_own_traffic_is_counted_and_nothing_stays_attached(version: &Version) {
    let yaml = spright_e2e::demo_chain_yaml(true);
    let chain = ChainUnderTest::start(ChainSpec {
        yaml: &yaml,
        routing: "sockmap",
        args: &[],
    });
    let containerd = Containerd::start(version, &chain.runtime_root);
    let pair = VethPair::new();
    let netns = pair.inside_path().display().to_string();
    let id = format!("parse-{}", pair.inside_if);
    run_function(&containerd, &chain, "parse", &id, &netns);
    run_function(&containerd, &chain, "transform", "transform", "");
    run_function(&containerd, &chain, "render", "render", "");
    for f in ["parse", "transform", "render"] {
        chain.wait_instances(f, 1);
    }
    assert_eq!(programs_inside(&pair), 2, "one program on each hook");
    let base = reported(&chain, &id).unwrap_or_else(|| {
        panic!(
            "the pool-manager reports nothing of {id}:\n{}",
            containerd.log()
        )
    });
    // Only the one interface: lo is the container's own business, and containers without an
    // interface of their own (transform, render: lo only) report nothing.
    let stats = chain.stats().function_eproxy;
    assert!(
        stats
            .iter()
            .all(|t| t.container == id && t.counters.interface == pair.inside_if),
        "{stats:?}"
    );

    // The chain still answers: descriptors travel over sockets outside the container's
    // namespace, untouched by EPROXY.
    let r = http::post(chain.addr, "/render", b"counted functions answer");
    assert_eq!(r.status, 200, "{}", r.text());

    let stats_base = pair.inside_stats();
    traffic_through(&pair);
    let (counted, truth) = settled(&chain, &pair, &id, base, stats_base);
    assert_eq!(
        counted, truth,
        "EPROXY's counts on {version} (rx/tx packets and frame bytes) against {}'s statistics",
        pair.inside_if
    );
    // At least the handshake, 20 requests, the close and 5 datagrams each way.
    assert!(counted[0] >= 27 && counted[2] >= 27, "{counted:?}");
    assert!(counted[1] >= 20 * 300 + 5 * 77, "{counted:?}");
    let metrics = http::get(chain.addr, "/metrics").text();
    let series = format!(
        "spright_function_eproxy_packets_total{{function=\"parse\",namespace=\"{}\",container=\"{id}\",interface=\"{}\",direction=\"out\"}}",
        containerd.namespace,
        pair.inside_if
    );
    assert!(
        metrics.contains(&series),
        "no {series} in /metrics:\n{metrics}"
    );

    // A hand-over without the map's descriptor, as anything but a shim would send it, is
    // refused with the reason, and the report is unchanged.
    let mut control =
        std::os::unix::net::UnixStream::connect(chain.manifest().control_socket).unwrap();
    control.set_read_timeout(Some(DEADLINE)).unwrap();
    control
        .write_all(
            br#"{"op":"count_traffic","function":"parse","namespace":"default","container":"forged","interfaces":[{"ifindex":2,"name":"eth0"}]}
"#,
        )
        .unwrap();
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&control), &mut answer).unwrap();
    assert!(
        answer.contains("no descriptor came with the request"),
        "{answer}"
    );
    assert!(reported(&chain, "forged").is_none());
    drop(control);

    // Its function stopped: detached, and no longer reported, before the container is deleted
    // (a pod's restarted container counts the namespace next).
    let out = containerd.ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the stopped container's programs to go", DEADLINE, || {
        (programs_inside(&pair) == 0).then_some(())
    });
    wait_for("its counts to leave the report", DEADLINE, || {
        reported(&chain, &id).is_none().then_some(())
    });
    for args in [
        &["tasks", "delete", "--force", &id][..],
        &["containers", "delete", &id][..],
    ] {
        wait_for(&format!("ctr {}", args.join(" ")), DEADLINE, || {
            containerd.ctr(args).status.success().then_some(())
        });
    }

    // A shim killed outright takes the programs and the report with it.
    let id = format!("{id}-b");
    run_function(&containerd, &chain, "parse", &id, &netns);
    wait_for("the second container's counts", DEADLINE, || {
        reported(&chain, &id)
    });
    assert_eq!(programs_inside(&pair), 2);
    // What attaching costs a create, as the shim logged it (a figure, not a check).
    for line in containerd
        .log()
        .lines()
        .filter(|l| l.contains("EPROXY counts its own traffic"))
    {
        eprintln!("{version}: {line}");
    }
    let shims = containerd.shim_pids_for(&id);
    assert_eq!(shims.len(), 1, "{shims:?}");
    spright_e2e::signal(shims[0], libc::SIGKILL);
    wait_for("the killed shim's programs to go", DEADLINE, || {
        (programs_inside(&pair) == 0).then_some(())
    });
    wait_for(
        "the killed shim's counts to leave the report",
        DEADLINE,
        || reported(&chain, &id).is_none().then_some(()),
    );
    drop(containerd);
    chain.stop();
}
