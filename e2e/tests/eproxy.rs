//! EPROXY under a running chain: the gateway's traffic on lo is counted per direction, shows on
//! /metrics, and nothing stays attached once the chain stops.

mod common;

use spright_core::protocol::TrafficCounters;
use spright_e2e::{have_root, http, wait_for, ChainUnderTest};
use spright_ebpf::eproxy::programs_on;
use std::time::Duration;

const REQUESTS: u64 = 40;

fn traffic(chain: &ChainUnderTest, direction: &str) -> TrafficCounters {
    chain
        .stats()
        .eproxy
        .into_iter()
        .find(|t| t.interface == "lo" && t.direction == direction)
        .unwrap_or_default()
}

#[test]
fn eproxy_counts_the_gateways_traffic_and_leaves_nothing_behind() {
    if !have_root("eproxy_counts_the_gateways_traffic_and_leaves_nothing_behind") {
        return;
    }
    // Counted against what was attached before: the test binaries run one at a time, and this
    // file has one test, so no other chain of the suite attaches meanwhile.
    let before = programs_on("lo").unwrap();
    let yaml = common::TESTFN_YAML.replace("timeout: 30s", "timeout: 30s\n  eproxy: on");
    let chain = common::start(&yaml, "sockmap", &[]);
    assert_eq!(
        programs_on("lo").unwrap(),
        before + 2,
        "one program on each of lo's hooks"
    );
    // Only the gateway's port is counted, not the rest of lo's traffic (the control socket is
    // a unix socket; the data sockets are other ports).
    let (idle_in, idle_out) = (traffic(&chain, "in"), traffic(&chain, "out"));

    let body = vec![b'x'; 1000];
    for _ in 0..REQUESTS {
        let r = http::post(chain.addr, "/front/echo", &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, body);
    }
    // Each exchange is its own connection: handshake, request, response, FIN and ACKs. The
    // last FIN's ACK may trail the client's return: wait for the counts to settle.
    let settled = wait_for("EPROXY's counts to settle", Duration::from_secs(5), || {
        let now = (traffic(&chain, "in"), traffic(&chain, "out"));
        std::thread::sleep(Duration::from_millis(100));
        let again = (traffic(&chain, "in"), traffic(&chain, "out"));
        (now == again).then_some(now)
    });
    let (inn, out) = settled;
    let packets_in = inn.packets - idle_in.packets;
    let packets_out = out.packets - idle_out.packets;
    let bytes_in = inn.bytes - idle_in.bytes;
    let bytes_out = out.bytes - idle_out.bytes;
    // In: at least SYN, the request, FIN and the ACKs of the response; every request carries
    // 1000 body bytes plus a 20-byte IP and a 20-byte TCP header on each packet.
    assert!(
        (4 * REQUESTS..=12 * REQUESTS).contains(&packets_in),
        "{packets_in} packets in for {REQUESTS} exchanges"
    );
    assert!(
        (3 * REQUESTS..=12 * REQUESTS).contains(&packets_out),
        "{packets_out} packets out for {REQUESTS} exchanges"
    );
    assert!(
        bytes_in >= REQUESTS * 1000 + packets_in * 40,
        "{bytes_in} bytes in"
    );
    assert!(
        bytes_out >= REQUESTS * 1000 + packets_out * 40,
        "{bytes_out} bytes out"
    );
    // Without the payload, no more than headers and options (at most 60 + 60 bytes a packet).
    assert!(
        bytes_in <= REQUESTS * 1300 + packets_in * 120,
        "{bytes_in} bytes in"
    );
    assert!(
        bytes_out <= REQUESTS * 1300 + packets_out * 120,
        "{bytes_out} bytes out"
    );

    eprintln!(
        "{REQUESTS} exchanges: in {packets_in} packets / {bytes_in} bytes, out {packets_out} packets / {bytes_out} bytes"
    );

    let text = http::get(chain.addr, "/metrics").text();
    for metric in [
        "spright_eproxy_packets_total{interface=\"lo\",direction=\"in\"}",
        "spright_eproxy_bytes_total{interface=\"lo\",direction=\"out\"}",
    ] {
        assert!(text.contains(metric), "no {metric} in /metrics:\n{text}");
    }

    // A pool-manager killed outright takes its programs with it: the one started in its place
    // attaches its own, and lo carries one pair, not two.
    let dead = chain.manifest().pid;
    spright_e2e::signal(dead, libc::SIGKILL);
    wait_for("a new pool-manager", Duration::from_secs(20), || {
        let m = spright_core::Manifest::load(
            &chain.runtime_root,
            &spright_core::ChainKey::chain(&chain.name),
        )
        .ok()?;
        (m.pid != dead).then_some(())
    });
    wait_for("the chain to serve again", Duration::from_secs(20), || {
        (http::try_request(chain.addr, "POST", "/front/echo", b"again")
            .is_ok_and(|r| r.status == 200))
        .then_some(())
    });
    assert_eq!(
        programs_on("lo").unwrap(),
        before + 2,
        "the killed pool-manager's programs stayed attached"
    );
    chain.stop();
    assert_eq!(
        programs_on("lo").unwrap(),
        before,
        "EPROXY left attached to lo"
    );
}
