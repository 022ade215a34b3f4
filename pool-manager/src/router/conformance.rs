//! One table of routing cases, run against all three planes: SPROXY in the real kernel, the
//! user-space relay, and the rings of poll mode. Each plane is set up through [`Router`] as the
//! pool-manager sets it up, with data sockets made as registration makes them; descriptors are
//! sent the way functions send them (a 48-byte write on the data socket, or `Rings::send`) and
//! read where they land. The planes must agree on every byte of what arrives, and on counters
//! and transit records.

use super::{KernelRouter, PollRouter, Relay, Router};
use crate::members::DataListener;
use spright_core::descriptor::{Descriptor, Kind, RefuseReason, DESCRIPTOR_SIZE};
use spright_core::ids::{Endpoint, FnId, InstanceId, ANY_INSTANCE, GATEWAY};
use spright_core::pool::{Pool, PoolSpec};
use spright_core::rings::{rings_path, Rings};
use spright_core::transit::Transit;
use spright_ebpf::{PoolGeometry, Sproxy};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const A: FnId = FnId(1);
const B: FnId = FnId(2);
/// A function of the chain that never has an instance.
const C: FnId = FnId(3);
/// Not a function of the chain.
const STRANGER: FnId = FnId(99);

const GW0: Endpoint = ep(GATEWAY, 0);
const A0: Endpoint = ep(A, 0);
const A1: Endpoint = ep(A, 1);
const B0: Endpoint = ep(B, 0);

const fn ep(f: FnId, i: u16) -> Endpoint {
    Endpoint {
        function: f,
        instance: InstanceId(i),
    }
}

/// gateway -> a -> b -> gateway, and the gateway may address c (which never runs).
const ALLOW: [(u16, u16); 4] = [(0, 1), (1, 2), (2, 0), (0, 3)];
const FUNCTIONS: [u16; 4] = [0, 1, 2, 3];
const QUEUE_LIMIT: u32 = 64;
const BUFFERS: u32 = 16;

/// What a case expects of one send.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Delivered to this endpoint (`None`: to any instance of the destination function).
    Delivered(Option<Endpoint>),
    /// Refused for this reason, the refusal back at the sender.
    Refused(RefuseReason),
}

struct Case {
    name: &'static str,
    from: Endpoint,
    descriptor: fn(&Pool) -> Descriptor,
    expect: Expect,
}

/// A request for `dst` that names pool buffer `index` (allocated, so its generation is real).
fn request(pool: &Pool, dst: FnId, instance: InstanceId, index: u32) -> Descriptor {
    let mut d = Descriptor::request(dst, 1000 + index as u64);
    d.dst_instance = instance.0;
    d.offset = pool.layout().offset_of(index);
    d.len = 10;
    d.pool_tag = pool.tag();
    d.generation = pool.state(index).generation;
    d
}

fn cases() -> Vec<Case> {
    use Expect::*;
    vec![
        Case {
            name: "allowed, any instance",
            from: GW0,
            descriptor: |p| request(p, A, ANY_INSTANCE, 0),
            expect: Delivered(None),
        },
        Case {
            name: "allowed, the instance named",
            from: GW0,
            descriptor: |p| request(p, A, InstanceId(1), 1),
            expect: Delivered(Some(A1)),
        },
        Case {
            name: "a reply back to the gateway",
            from: B0,
            descriptor: |p| {
                let mut d = request(p, GATEWAY, InstanceId(0), 2);
                d.kind = Kind::Reply as u8;
                d
            },
            expect: Delivered(Some(GW0)),
        },
        Case {
            name: "forbidden pair",
            from: A0,
            descriptor: |p| request(p, C, ANY_INSTANCE, 3),
            expect: Refused(RefuseReason::Forbidden),
        },
        Case {
            name: "not a function of the chain",
            from: GW0,
            descriptor: |p| request(p, STRANGER, ANY_INSTANCE, 4),
            expect: Refused(RefuseReason::NoDestination),
        },
        Case {
            name: "an instance that is not there",
            from: GW0,
            descriptor: |p| request(p, A, InstanceId(5), 5),
            expect: Refused(RefuseReason::NoDestination),
        },
        Case {
            name: "a function with no instance running",
            from: GW0,
            descriptor: |p| request(p, C, ANY_INSTANCE, 6),
            expect: Refused(RefuseReason::NoDestination),
        },
        Case {
            name: "another ABI version",
            from: GW0,
            descriptor: |p| {
                let mut d = request(p, A, ANY_INSTANCE, 7);
                d.version = 9;
                d
            },
            expect: Refused(RefuseReason::BadDescriptor),
        },
        Case {
            name: "a refusal sent on",
            from: GW0,
            descriptor: |p| {
                let mut d = request(p, A, ANY_INSTANCE, 8);
                d.refuse(RefuseReason::Forbidden);
                d
            },
            expect: Refused(RefuseReason::BadDescriptor),
        },
        Case {
            name: "forged sender, forbidden by its true identity",
            from: B0,
            descriptor: |p| {
                // The gateway may send to a; b may not, whatever it claims.
                let mut d = request(p, A, ANY_INSTANCE, 9);
                (d.src_fn, d.src_instance) = (GATEWAY.0, 0);
                d
            },
            expect: Refused(RefuseReason::Forbidden),
        },
        Case {
            name: "forged sender, delivered as who it is",
            from: A0,
            descriptor: |p| {
                let mut d = request(p, B, ANY_INSTANCE, 10);
                (d.src_fn, d.src_instance) = (GATEWAY.0, 7);
                d
            },
            expect: Delivered(Some(B0)),
        },
    ]
}

/// One plane under test, as the functions of the chain see it.
enum Plane {
    /// SPROXY or the relay: each endpoint holds its data socket.
    Sockets(HashMap<Endpoint, TcpStream>),
    Rings(Arc<Rings>),
}

struct Fixture {
    _dir: tempfile::TempDir,
    pool: Pool,
    router: Router,
    plane: Plane,
    /// The pool-manager's ends of the data sockets, kept open.
    _peers: Vec<tokio::net::tcp::OwnedWriteHalf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Kernel,
    User,
    Poll,
}

async fn fixture(mode: Mode) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(
        &dir.path().join("c.pool"),
        PoolSpec {
            buffer_count: BUFFERS,
            buffer_size: 4096,
        },
        "conformance",
        0o600,
    )
    .unwrap();
    let layout = *pool.layout();
    let mut router = match mode {
        Mode::Kernel => {
            let geometry = PoolGeometry {
                data_start: layout.data_start,
                buffer_size: layout.buffer_size,
                buffer_count: layout.buffer_count,
            };
            let mut sproxy = Sproxy::load(None, Some(geometry), QUEUE_LIMIT).expect("load SPROXY");
            sproxy.set_allow_list(ALLOW).unwrap();
            sproxy.set_functions(FUNCTIONS).unwrap();
            Router::Kernel(Box::new(KernelRouter { sproxy }))
        }
        Mode::User => Router::User(Arc::new(Relay::new(ALLOW, FUNCTIONS, QUEUE_LIMIT, layout))),
        Mode::Poll => {
            let functions: Vec<FnId> = FUNCTIONS.iter().map(|&f| FnId(f)).collect();
            let rings =
                Rings::create(&rings_path(pool.path()), &pool, &functions, ALLOW, 0o600).unwrap();
            Router::Poll(Box::new(PollRouter { rings }))
        }
    };
    // The buffers the cases name are in transit to their destination, as the sender leaves
    // them, so that their generations are real.
    for index in 0..BUFFERS {
        let buf = pool.alloc(GW0, 1000 + index as u64).unwrap();
        assert_eq!(buf.index, index);
    }

    let data = DataListener::bind().await.unwrap();
    let mut sockets = HashMap::new();
    let mut peers = Vec::new();
    for endpoint in [GW0, A0, A1, B0] {
        let (client, peer) = data.pair().await.unwrap();
        let port = client.local_addr().unwrap().port();
        let (peer_read, peer_write) = peer.into_split();
        if let Some(kept) = router
            .register(endpoint, &client, port, peer_write)
            .unwrap()
        {
            peers.push(kept);
        }
        if let Router::User(relay) = &router {
            let relay = relay.clone();
            tokio::spawn(async move { relay.read_loop(endpoint, peer_read).await });
        }
        sockets.insert(endpoint, client);
    }
    router.set_instances(GATEWAY, &[InstanceId(0)]).unwrap();
    router
        .set_instances(A, &[InstanceId(0), InstanceId(1)])
        .unwrap();
    router.set_instances(B, &[InstanceId(0)]).unwrap();
    router.set_instances(C, &[]).unwrap();
    let plane = match &router {
        Router::Poll(_) => Plane::Rings(Arc::new(Rings::open(&rings_path(pool.path())).unwrap())),
        _ => Plane::Sockets(sockets),
    };
    Fixture {
        _dir: dir,
        pool,
        router,
        plane,
        _peers: peers,
    }
}

impl Fixture {
    async fn send(&mut self, from: Endpoint, d: Descriptor) {
        match &mut self.plane {
            Plane::Sockets(s) => {
                let socket = s.get_mut(&from).unwrap();
                socket.write_all(d.as_bytes()).await.unwrap();
            }
            Plane::Rings(rings) => {
                rings.send(from, d).unwrap();
            }
        }
    }

    /// The next descriptor at `at`, waiting up to two seconds for it.
    async fn recv(&mut self, at: Endpoint) -> Descriptor {
        let deadline = Duration::from_secs(2);
        match &mut self.plane {
            Plane::Sockets(s) => {
                let socket = s.get_mut(&at).unwrap();
                let mut buf = [0u8; DESCRIPTOR_SIZE];
                tokio::time::timeout(deadline, socket.read_exact(&mut buf))
                    .await
                    .unwrap_or_else(|_| panic!("nothing arrived at {at} within {deadline:?}"))
                    .unwrap();
                Descriptor::from_bytes(&buf)
            }
            Plane::Rings(rings) => {
                let ring = rings.ring_of(at).unwrap();
                let start = std::time::Instant::now();
                loop {
                    if let Some(d) = rings.pop(ring) {
                        return d;
                    }
                    assert!(
                        start.elapsed() < deadline,
                        "nothing arrived at {at} within {deadline:?}"
                    );
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    fn totals(&self) -> HashMap<u16, (u64, u64, u64)> {
        FUNCTIONS
            .iter()
            .map(|&f| {
                let c = self.router.counters(FnId(f));
                (f, (c.sent, c.received, c.refused))
            })
            .collect()
    }
}

async fn conform(mode: Mode) {
    let mut f = fixture(mode).await;
    for case in cases() {
        let sent = (case.descriptor)(&f.pool);
        let index = f.pool.layout().index_of(sent.offset).unwrap();
        let before = f.totals();
        f.send(case.from, sent).await;

        let mut expected = sent;
        (expected.src_fn, expected.src_instance) = (case.from.function.0, case.from.instance.0);
        let context = format!("{mode:?}: {}", case.name);
        let mut totals = before.clone();
        match case.expect {
            Expect::Delivered(to) => {
                let to = match to {
                    Some(to) => to,
                    // Either instance; which one is found from where it landed.
                    None => f.any_instance_landing(FnId(sent.dst_fn)).await,
                };
                let got = f.recv(to).await;
                expected.dst_instance = to.instance.0;
                assert_eq!(got, expected, "{context}: what arrived at {to}");
                assert_eq!(
                    f.router.transit(index),
                    Some(Transit {
                        generation: sent.generation,
                        to
                    }),
                    "{context}: transit record"
                );
                totals.get_mut(&case.from.function.0).unwrap().0 += 1;
                totals.get_mut(&to.function.0).unwrap().1 += 1;
            }
            Expect::Refused(reason) => {
                let got = f.recv(case.from).await;
                expected.refuse(reason);
                assert_eq!(got, expected, "{context}: the refusal back at the sender");
                assert_eq!(
                    got.refusal(),
                    Some((Some(reason), sent.kind())),
                    "{context}: reason and original kind"
                );
                assert_eq!(
                    f.router.transit(index),
                    None,
                    "{context}: a refusal records no transit"
                );
                totals.get_mut(&case.from.function.0).unwrap().2 += 1;
            }
        }
        assert_eq!(
            f.totals(),
            totals,
            "{context}: counters (sent, received, refused)"
        );
    }

    // Load balancing: "any instance" reaches every instance, in one plane as in the others.
    let mut seen = HashMap::new();
    for _ in 0..64 {
        let d = request(&f.pool, A, ANY_INSTANCE, 11);
        f.send(GW0, d).await;
        let to = f.any_instance_landing(A).await;
        let got = f.recv(to).await;
        assert_eq!(got.dst_instance, to.instance.0, "{mode:?}: load balancing");
        *seen.entry(to).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{mode:?}: 64 sends reached {seen:?}");

    // Nothing stray anywhere: the next thing at every endpoint is a marker sent to it now.
    for (from, to) in [(GW0, A0), (GW0, A1), (A0, B0), (B0, GW0)] {
        let mut marker = request(&f.pool, to.function, to.instance, 12);
        marker.request_id = 0xAAAA;
        f.send(from, marker).await;
        let got = f.recv(to).await;
        assert_eq!(
            (got.request_id, got.src_fn),
            (0xAAAA, from.function.0),
            "{mode:?}: {to} had something stray before the marker"
        );
    }
    let Plane::Sockets(_) = &f.plane else { return };
    for at in [GW0, A0, A1, B0] {
        f.assert_no_bytes(at);
    }
}

impl Fixture {
    /// Which instance of `function` a descriptor just sent to any instance landed at: the one
    /// with something to read (the other has nothing, which the marker pass checks later).
    async fn any_instance_landing(&mut self, function: FnId) -> Endpoint {
        let candidates: Vec<Endpoint> = [A0, A1, B0, GW0]
            .into_iter()
            .filter(|e| e.function == function)
            .collect();
        let start = std::time::Instant::now();
        loop {
            for &e in &candidates {
                if self.has_something(e) {
                    return e;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "nothing arrived at any instance of {function}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn has_something(&self, at: Endpoint) -> bool {
        match &self.plane {
            Plane::Sockets(s) => peek(&s[&at]),
            Plane::Rings(r) => r.len(r.ring_of(at).unwrap()) > 0,
        }
    }

    fn assert_no_bytes(&self, at: Endpoint) {
        assert!(!self.has_something(at), "{at} has bytes left");
    }
}

/// Whether `socket` has bytes to read, without taking them.
fn peek(socket: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    socket
        .try_io(tokio::io::Interest::READABLE, || {
            use std::os::fd::AsRawFd;
            // SAFETY: a one-byte buffer we own; MSG_PEEK leaves the data in place.
            let n = unsafe {
                libc::recv(
                    socket.as_raw_fd(),
                    byte.as_mut_ptr().cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n)
            }
        })
        .is_ok_and(|n| n > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sproxy_in_the_kernel_makes_the_decision_of_the_table() {
    if !spright_test_support::have_root("SPROXY conformance") {
        return;
    }
    conform(Mode::Kernel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_makes_the_decision_of_the_table() {
    conform(Mode::User).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rings_make_the_decision_of_the_table() {
    conform(Mode::Poll).await;
}
