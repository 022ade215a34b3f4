//! SPROXY in the real kernel: descriptors sent on registered TCP sockets land in exactly the
//! right socket, refusals come back to the sender without poisoning its socket, and counters
//! move. Needs root (BPF).

use spright_core::descriptor::{Descriptor, Kind, RefuseReason, DESCRIPTOR_SIZE};
use spright_core::ids::{Endpoint, FnId, InstanceId};
use spright_core::transit::Transit;
use spright_ebpf::Sproxy;
use spright_test_support::have_root;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A registered function socket and the TCP peer the test holds in the pool-manager's place.
struct Member {
    endpoint: Endpoint,
    socket: TcpStream,
    peer: TcpStream,
}

fn connect_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    (socket, peer)
}

fn join(sproxy: &mut Sproxy, listener: &TcpListener, function: u16, instance: u16) -> Member {
    let (socket, peer) = connect_pair(listener);
    let endpoint = Endpoint::new(FnId(function), InstanceId(instance));
    let port = socket.local_addr().unwrap().port();
    sproxy.insert_socket(endpoint, &socket, port).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    Member {
        endpoint,
        socket,
        peer,
    }
}

fn send(from: &mut Member, d: &Descriptor) {
    let n = from
        .socket
        .write(d.as_bytes())
        .expect("send on a function socket");
    assert_eq!(n, DESCRIPTOR_SIZE);
}

fn recv(m: &mut Member) -> Descriptor {
    let mut buf = [0u8; DESCRIPTOR_SIZE];
    m.socket.read_exact(&mut buf).unwrap_or_else(|e| {
        panic!("{} expected a descriptor: {e}", m.endpoint);
    });
    Descriptor::from_bytes(&buf)
}

/// Redirection is synchronous: once the send returned, anything meant for `m` is queued.
fn assert_nothing_for(m: &Member) {
    m.socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let got = (&m.socket).read(&mut buf);
    m.socket.set_nonblocking(false).unwrap();
    match got {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("{} received something it should not: {other:?}", m.endpoint),
    }
    m.peer.set_nonblocking(true).unwrap();
    let got = (&m.peer).read(&mut buf);
    m.peer.set_nonblocking(false).unwrap();
    match got {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("{}'s TCP peer received something: {other:?}", m.endpoint),
    }
}

fn descriptor(dst: u16, request: u64) -> Descriptor {
    let mut d = Descriptor::request(FnId(dst), request);
    d.pool_tag = 0xABCD;
    d.offset = 4096 * 3;
    d.len = 100;
    d
}

struct Setup {
    sproxy: Sproxy,
    _listener: TcpListener,
    gateway: Member,
    f1: Member,
    f2: Member,
}

/// The queue bound of the test chain: small, so that tests reach it.
const QUEUE_LIMIT: u32 = 8;

fn setup() -> Setup {
    let mut sproxy = Sproxy::load(None, None, QUEUE_LIMIT).expect("load SPROXY");
    sproxy.set_functions([0, 1, 2, 5]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let gateway = join(&mut sproxy, &listener, 0, 0);
    let f1 = join(&mut sproxy, &listener, 1, 0);
    let f2 = join(&mut sproxy, &listener, 2, 0);
    for f in 0..3 {
        sproxy.set_instances(FnId(f), &[InstanceId(0)]).unwrap();
    }
    // gateway -> f1 -> f2 -> gateway, and the gateway may also address function 5 (which never
    // registers).
    sproxy
        .set_allow_list([(0, 1), (1, 2), (2, 0), (0, 5)])
        .unwrap();
    Setup {
        sproxy,
        _listener: listener,
        gateway,
        f1,
        f2,
    }
}

#[test]
fn descriptors_reach_exactly_their_destination() {
    if !have_root("descriptors_reach_exactly_their_destination") {
        return;
    }
    let Setup {
        sproxy,
        mut gateway,
        mut f1,
        mut f2,
        ..
    } = setup();

    let mut d = descriptor(1, 42);
    d.src_fn = 2; // a lie SPROXY must overwrite
    send(&mut gateway, &d);
    let got = recv(&mut f1);
    assert_eq!(got.request_id, 42);
    assert_eq!(got.kind(), Some(Kind::Request));
    assert_eq!(
        (got.src_fn, got.src_instance),
        (0, 0),
        "sender identity from the socket"
    );
    assert_eq!(got.dst_instance, 0, "SPROXY names the instance it chose");
    assert_eq!(
        (got.offset, got.len),
        (d.offset, d.len),
        "payload fields untouched"
    );
    assert_nothing_for(&f2);
    assert_nothing_for(&gateway);

    send(&mut f1, &descriptor(2, 43));
    assert_eq!(recv(&mut f2).src_fn, 1);
    send(&mut f2, &descriptor(0, 44));
    let back = recv(&mut gateway);
    assert_eq!((back.request_id, back.src_fn), (44, 2));
    assert_nothing_for(&f1);

    let c = sproxy.counters(FnId(1)).unwrap();
    assert_eq!((c.sent, c.received, c.refused), (1, 1, 0));
    assert_eq!(c.sent_bytes, DESCRIPTOR_SIZE as u64);
    assert_eq!(sproxy.counters(FnId(0)).unwrap().sent, 1);
}

#[test]
fn a_forbidden_destination_is_refused_counted_and_the_sender_keeps_working() {
    if !have_root("a_forbidden_destination_is_refused_counted_and_the_sender_keeps_working") {
        return;
    }
    let Setup {
        sproxy,
        mut gateway,
        mut f1,
        mut f2,
        ..
    } = setup();

    // f1 may not talk to the gateway directly in this chain.
    send(&mut f1, &descriptor(0, 7));
    let refused = recv(&mut f1);
    assert_eq!(refused.kind(), Some(Kind::Refused));
    assert_eq!(
        refused.refusal(),
        Some((Some(RefuseReason::Forbidden), Some(Kind::Request)))
    );
    assert_eq!(
        (refused.request_id, refused.dst_fn),
        (7, 0),
        "the sender learns what it sent"
    );
    assert_nothing_for(&gateway);
    assert_nothing_for(&f2);

    // The socket is not poisoned: the next allowed send goes through.
    send(&mut f1, &descriptor(2, 8));
    assert_eq!(recv(&mut f2).request_id, 8);

    // A destination with no instance is refused the same way.
    send(&mut gateway, &descriptor(5, 9));
    let refused = recv(&mut gateway);
    assert_eq!(
        refused.refusal().unwrap().0,
        Some(RefuseReason::NoDestination)
    );
    send(&mut gateway, &descriptor(1, 10));
    assert_eq!(recv(&mut f1).request_id, 10);
    // A function the chain does not have: no destination either, not "forbidden".
    send(&mut gateway, &descriptor(7, 11));
    assert_eq!(
        recv(&mut gateway).refusal().unwrap().0,
        Some(RefuseReason::NoDestination)
    );

    let c1 = sproxy.counters(FnId(1)).unwrap();
    assert_eq!((c1.refused, c1.sent), (1, 1));
    let c0 = sproxy.counters(FnId(0)).unwrap();
    assert_eq!((c0.refused, c0.sent), (2, 1));
}

#[test]
fn malformed_sends_go_to_the_audit_peer_and_do_not_poison() {
    if !have_root("malformed_sends_go_to_the_audit_peer_and_do_not_poison") {
        return;
    }
    let Setup {
        sproxy,
        mut f1,
        mut f2,
        ..
    } = setup();
    // Two descriptors in one send: not routable, passed to the pool-manager's peer end.
    let two: Vec<u8> = [descriptor(2, 1), descriptor(2, 2)]
        .iter()
        .flat_map(|d| d.as_bytes().to_vec())
        .collect();
    f1.socket.write_all(&two).unwrap();
    let mut audit = vec![0u8; two.len()];
    f1.peer
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    f1.peer.read_exact(&mut audit).unwrap();
    assert_eq!(audit, two);
    assert_nothing_for(&f2);
    assert_eq!(sproxy.chain_counters().unwrap().malformed, 1);

    // A descriptor written in two pieces is two malformed sends, never one joined descriptor.
    let d = descriptor(2, 3);
    // Two writes are two sends (SPROXY runs once for each), however close together.
    f1.socket.write_all(&d.as_bytes()[..20]).unwrap();
    f1.socket.write_all(&d.as_bytes()[20..]).unwrap();
    let mut pieces = vec![0u8; DESCRIPTOR_SIZE];
    f1.peer.read_exact(&mut pieces).unwrap();
    assert_eq!(pieces, d.as_bytes());
    assert_nothing_for(&f2);
    assert_eq!(sproxy.chain_counters().unwrap().malformed, 3);

    let mut bad = descriptor(2, 11);
    bad.version = 99;
    send(&mut f1, &bad);
    let refused = recv(&mut f1);
    assert_eq!(
        refused.refusal().unwrap().0,
        Some(RefuseReason::BadDescriptor)
    );

    send(&mut f1, &descriptor(2, 12));
    assert_eq!(recv(&mut f2).request_id, 12);
}

#[test]
fn instances_share_the_load_and_replies_reach_the_named_instance() {
    if !have_root("instances_share_the_load_and_replies_reach_the_named_instance") {
        return;
    }
    let Setup {
        mut sproxy,
        _listener,
        mut f1,
        f2,
        ..
    } = setup();
    let mut f2b = join(&mut sproxy, &_listener, 2, 1);
    sproxy
        .set_instances(FnId(2), &[InstanceId(0), InstanceId(1)])
        .unwrap();
    // In rounds no larger than one queue's limit, so that none is refused as busy.
    let total = 400;
    let (mut a, mut b) = (0, 0);
    for round in 0..total / QUEUE_LIMIT as u64 {
        for i in 0..QUEUE_LIMIT as u64 {
            send(&mut f1, &descriptor(2, round * 100 + i));
        }
        a += drain_all(&f2);
        b += drain_all(&f2b);
    }
    assert_eq!(a + b, total as usize, "every descriptor delivered once");
    assert!(a > 0 && b > 0, "both instances got work: {a} and {b}");

    // A descriptor naming instance 1 goes to instance 1 only.
    let mut d = descriptor(2, 999);
    d.dst_instance = 1;
    send(&mut f1, &d);
    assert_eq!(recv(&mut f2b).request_id, 999);
    assert_nothing_for(&f2);

    // Once instance 1 leaves, naming it is refused rather than lost.
    sproxy.set_instances(FnId(2), &[InstanceId(0)]).unwrap();
    sproxy.remove_socket(f2b.endpoint, f2b.socket.local_addr().unwrap().port());
    send(&mut f1, &d);
    let refused = recv(&mut f1);
    assert_eq!(
        refused.refusal().unwrap().0,
        Some(RefuseReason::NoDestination)
    );
}

#[test]
fn the_socket_each_buffer_was_routed_to_is_recorded() {
    if !have_root("the_socket_each_buffer_was_routed_to_is_recorded") {
        return;
    }
    let geometry = spright_ebpf::PoolGeometry {
        data_start: 8192,
        buffer_size: 4096,
        buffer_count: 8,
    };
    let mut sproxy = Sproxy::load(None, Some(geometry), QUEUE_LIMIT).expect("load SPROXY");
    sproxy.set_functions([0, 1]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut gateway = join(&mut sproxy, &listener, 0, 0);
    let mut f1 = join(&mut sproxy, &listener, 1, 0);
    sproxy.set_instances(FnId(1), &[InstanceId(0)]).unwrap();
    sproxy.set_allow_list([(0, 1)]).unwrap();

    let mut d = descriptor(1, 5);
    d.offset = 8192 + 2 * 4096; // buffer 2
    d.generation = 7;
    send(&mut gateway, &d);
    recv(&mut f1);
    assert_eq!(
        sproxy.transit(2),
        Some(Transit {
            generation: 7,
            to: f1.endpoint
        })
    );
    assert_eq!(sproxy.transit(3), None);

    // A refusal records nothing: the descriptor did not pass, so it changes no record (a
    // forged one must not redirect the clean-up's attention).
    let mut r = descriptor(0, 6);
    r.offset = 8192 + 2 * 4096;
    r.generation = 9;
    send(&mut f1, &r);
    assert_eq!(recv(&mut f1).kind(), Some(Kind::Refused));
    assert_eq!(
        sproxy.transit(2),
        Some(Transit {
            generation: 7,
            to: f1.endpoint
        })
    );

    // Offsets outside the pool record nothing.
    let mut out = descriptor(1, 7);
    out.offset = 8192 + 8 * 4096;
    send(&mut gateway, &out);
    recv(&mut f1);
    assert!((0..8).filter_map(|i| sproxy.transit(i)).count() == 1);
}

fn drain_all(m: &Member) -> usize {
    m.socket.set_nonblocking(true).unwrap();
    let mut n = 0;
    let mut buf = [0u8; 4096];
    loop {
        match (&m.socket).read(&mut buf) {
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    m.socket.set_nonblocking(false).unwrap();
    assert_eq!(n % DESCRIPTOR_SIZE, 0);
    n / DESCRIPTOR_SIZE
}

#[test]
fn a_receiver_that_stops_reading_holds_at_most_its_queue_limit() {
    if !have_root("a_receiver_that_stops_reading_holds_at_most_its_queue_limit") {
        return;
    }
    let Setup {
        sproxy, mut f1, f2, ..
    } = setup();
    // f2 reads nothing while f1 sends three times its limit.
    let total = 3 * QUEUE_LIMIT as u64;
    for i in 0..total {
        send(&mut f1, &descriptor(2, i));
    }
    assert_eq!(sproxy.backlog(f2.endpoint), QUEUE_LIMIT);
    let mut busy = 0;
    for _ in 0..total - QUEUE_LIMIT as u64 {
        let r = recv(&mut f1);
        assert_eq!(
            r.refusal(),
            Some((Some(RefuseReason::Busy), Some(Kind::Request)))
        );
        busy += 1;
    }
    assert_eq!(busy, total - QUEUE_LIMIT as u64);
    assert_eq!(
        drain_all(&f2),
        QUEUE_LIMIT as usize,
        "the first {QUEUE_LIMIT} queued"
    );
    // Reading empties the count; f2 takes work again.
    assert_eq!(sproxy.backlog(f2.endpoint), 0);
    send(&mut f1, &descriptor(2, 1000));
    let mut f2 = f2;
    assert_eq!(recv(&mut f2).request_id, 1000);
    let c = sproxy.counters(FnId(1)).unwrap();
    assert_eq!((c.sent, c.refused), (QUEUE_LIMIT as u64 + 1, busy));
}

#[test]
fn a_sender_that_ignores_its_refusals_overflows_to_the_audit_peer() {
    if !have_root("a_sender_that_ignores_its_refusals_overflows_to_the_audit_peer") {
        return;
    }
    let Setup {
        sproxy,
        mut f1,
        mut f2,
        ..
    } = setup();
    // Forbidden sends, refusals never read: twice the limit come back, the rest go to the
    // pool-manager's end of the socket (plain TCP, bounded by its buffers).
    let total = 5 * QUEUE_LIMIT as usize;
    for i in 0..total {
        send(&mut f1, &descriptor(0, i as u64));
    }
    let own = 2 * QUEUE_LIMIT as usize;
    assert_eq!(sproxy.backlog(f1.endpoint), own as u32);
    assert_eq!(
        sproxy.chain_counters().unwrap().overflow,
        (total - own) as u64
    );
    let mut audit = vec![0u8; (total - own) * DESCRIPTOR_SIZE];
    f1.peer
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    f1.peer.read_exact(&mut audit).unwrap();
    assert_eq!(drain_all(&f1), own);
    // And it still works once it reads.
    send(&mut f1, &descriptor(2, 77));
    assert_eq!(recv(&mut f2).request_id, 77);
}

#[test]
fn a_full_or_closed_instance_is_passed_over_for_another() {
    if !have_root("a_full_or_closed_instance_is_passed_over_for_another") {
        return;
    }
    let Setup {
        mut sproxy,
        _listener,
        mut f1,
        f2,
        ..
    } = setup();
    let f2b = join(&mut sproxy, &_listener, 2, 1);
    // f2 stops reading, with a full queue; then f2b joins: everything goes to f2b (which reads
    // after each round), nothing is refused.
    for i in 0..QUEUE_LIMIT as u64 {
        send(&mut f1, &descriptor(2, 900 + i));
    }
    sproxy
        .set_instances(FnId(2), &[InstanceId(0), InstanceId(1)])
        .unwrap();
    let rounds = 3;
    let mut at_f2b = 0;
    for round in 0..rounds {
        for i in 0..QUEUE_LIMIT as u64 {
            send(&mut f1, &descriptor(2, round * 100 + i));
        }
        at_f2b += drain_all(&f2b) as u64;
    }
    assert_nothing_for(&f1);
    assert_eq!(sproxy.backlog(f2.endpoint), QUEUE_LIMIT);
    assert_eq!(at_f2b, rounds * QUEUE_LIMIT as u64);
    // f2b's socket closes while the table still lists it (the pool-manager has not caught
    // up): its share goes to f2 after f2 has read, again without a refusal.
    assert_eq!(drain_all(&f2), QUEUE_LIMIT as usize);
    let Member { socket, peer, .. } = f2b;
    drop((socket, peer));
    for i in 0..QUEUE_LIMIT as u64 {
        send(&mut f1, &descriptor(2, 100 + i));
    }
    assert_nothing_for(&f1);
    assert_eq!(drain_all(&f2), QUEUE_LIMIT as usize);
}

#[test]
fn a_full_queue_lets_one_descriptor_through_every_five_seconds() {
    if !have_root("a_full_queue_lets_one_descriptor_through_every_five_seconds") {
        return;
    }
    let Setup {
        sproxy, mut f1, f2, ..
    } = setup();
    for i in 0..QUEUE_LIMIT as u64 {
        send(&mut f1, &descriptor(2, i));
    }
    let full = std::time::Instant::now();
    // Refused as busy until the queue has been full for 5 s; then one goes through, so that a
    // count the kernel did not honour cannot refuse an empty queue for good.
    let mut refused = 0;
    let through = spright_test_support::wait_for(
        "a descriptor through the full queue",
        Duration::from_secs(10),
        || {
            send(&mut f1, &descriptor(2, 500));
            if drain_all(&f1) == 1 {
                refused += 1;
                std::thread::sleep(Duration::from_millis(50));
                None
            } else {
                Some(full.elapsed())
            }
        },
    );
    assert!(through >= Duration::from_secs(5), "after {through:?}");
    assert!(refused > 0);
    assert_eq!(sproxy.backlog(f2.endpoint), QUEUE_LIMIT + 1);
    // The next is refused again: one per interval.
    send(&mut f1, &descriptor(2, 501));
    assert_eq!(drain_all(&f1), 1);
    assert_eq!(drain_all(&f2), QUEUE_LIMIT as usize + 1);
    assert_eq!(sproxy.backlog(f2.endpoint), 0);
}
