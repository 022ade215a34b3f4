use super::*;
use crate::descriptor::{Kind, RefuseReason};
use crate::ids::GATEWAY;
use crate::pool::PoolSpec;
use crate::transit::Transit;
use std::collections::HashSet;
use std::sync::Arc;

const F1: FnId = FnId(1);
const F2: FnId = FnId(2);

struct Fixture {
    _dir: tempfile::TempDir,
    pool: Pool,
    rings: Rings,
}

/// A pool and its rings for the gateway, F1 and F2; the gateway may send to F1, F1 to F2, and
/// both to the gateway.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::create(
        &dir.path().join("p.pool"),
        PoolSpec {
            buffer_count: 16,
            buffer_size: 1024,
        },
        "test",
        0o600,
    )
    .unwrap();
    let rings = Rings::create(
        &rings_path(pool.path()),
        &pool,
        &[GATEWAY, F1, F2],
        [(0, 1), (1, 2), (1, 0), (2, 0)],
        0o600,
    )
    .unwrap();
    Fixture {
        _dir: dir,
        pool,
        rings,
    }
}

fn ep(f: FnId, i: u16) -> Endpoint {
    Endpoint::new(f, InstanceId(i))
}

fn numbered(n: u64) -> Descriptor {
    let mut d = Descriptor::request(F1, n);
    d.call_id = n as u32;
    d
}

#[test]
fn a_ring_is_first_in_first_out() {
    let f = fixture();
    let ring = f.rings.ring_of(ep(F1, 0)).unwrap();
    assert_eq!(f.rings.pop(ring), None);
    for n in 0..10 {
        assert!(f.rings.push(ring, &numbered(n)));
    }
    assert_eq!(f.rings.len(ring), 10);
    for n in 0..10 {
        assert_eq!(f.rings.pop(ring), Some(numbered(n)));
    }
    assert_eq!(f.rings.pop(ring), None);
}

#[test]
fn a_full_ring_refuses_until_one_is_taken_over_many_laps() {
    let f = fixture();
    let ring = f.rings.ring_of(ep(F2, 7)).unwrap();
    let mut next_in = 0u64;
    let mut next_out = 0u64;
    for _lap in 0..3 {
        while f.rings.push(ring, &numbered(next_in)) {
            next_in += 1;
        }
        assert_eq!(
            next_in - next_out,
            RING_CELLS as u64,
            "holds exactly its cells"
        );
        assert_eq!(f.rings.pop(ring), Some(numbered(next_out)));
        next_out += 1;
        assert!(f.rings.push(ring, &numbered(next_in)), "room again");
        next_in += 1;
        assert!(!f.rings.push(ring, &numbered(next_in)));
        while let Some(d) = f.rings.pop(ring) {
            assert_eq!(d, numbered(next_out));
            next_out += 1;
        }
    }
    assert_eq!(next_in, next_out);
}

#[test]
fn many_producers_one_consumer_lose_and_duplicate_nothing() {
    const PRODUCERS: u64 = 4;
    const EACH: u64 = 50_000;
    let f = Arc::new(fixture());
    let ring = f.rings.ring_of(ep(GATEWAY, 0)).unwrap();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let f = f.clone();
            std::thread::spawn(move || {
                for n in 0..EACH {
                    let d = numbered((p << 32) | n);
                    while !f.rings.push(ring, &d) {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let mut next = [0u64; PRODUCERS as usize];
    let mut seen = HashSet::new();
    while seen.len() < (PRODUCERS * EACH) as usize {
        match f.rings.pop(ring) {
            Some(d) => {
                let (p, n) = (d.request_id >> 32, d.request_id & 0xFFFF_FFFF);
                assert_eq!(d, numbered(d.request_id), "a torn descriptor");
                assert_eq!(n, next[p as usize], "producer {p}'s order");
                next[p as usize] += 1;
                assert!(seen.insert(d.request_id), "{p}/{n} twice");
            }
            None => std::hint::spin_loop(),
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(f.rings.pop(ring), None);
}

#[test]
fn a_second_mapping_sees_the_same_rings() {
    let f = fixture();
    let other = Rings::open(f.rings.path()).unwrap();
    other.check_pool(&f.pool).unwrap();
    let ring = f.rings.ring_of(ep(F1, 3)).unwrap();
    assert!(other.push(ring, &numbered(5)));
    assert_eq!(f.rings.pop(ring), Some(numbered(5)));
    assert!(other.allowed(GATEWAY, F1) && !other.allowed(F2, F1) && !other.allowed(F1, FnId(9)));
    f.rings.set_live(F1, &[InstanceId(3)]).unwrap();
    assert_eq!(other.live(F1), vec![InstanceId(3)]);
}

#[test]
fn open_names_the_file_that_is_not_a_rings_file() {
    let f = fixture();
    let e = Rings::open(f.pool.path()).unwrap_err();
    assert!(matches!(e, RingsError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("p.pool"), "{e}");
    let missing = f.pool.path().with_extension("nothing");
    let e = Rings::open(&missing).unwrap_err();
    assert!(e.to_string().contains("p.nothing"), "{e}");
    assert!(matches!(
        Rings::create(f.rings.path(), &f.pool, &[GATEWAY], [], 0o600),
        Err(RingsError::Exists { .. })
    ));
}

#[test]
fn rings_of_another_pool_are_refused() {
    let f = fixture();
    let g = fixture();
    let e = g.rings.check_pool(&f.pool).unwrap_err();
    assert!(matches!(e, RingsError::WrongPool { .. }), "{e}");
}

#[test]
fn sending_stamps_the_sender_and_round_robins_over_live_instances() {
    let f = fixture();
    f.rings
        .set_live(F1, &[InstanceId(0), InstanceId(2), InstanceId(5)])
        .unwrap();
    let gw = ep(GATEWAY, 1);
    let mut got = Vec::new();
    for n in 0..6 {
        let mut d = numbered(n);
        d.src_fn = 7; // a lie the router overwrites
        match f.rings.send(gw, d).unwrap() {
            Routed::Delivered(to) => got.push(to.instance.0),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, vec![0, 2, 5, 0, 2, 5]);
    let d = f.rings.pop(f.rings.ring_of(ep(F1, 2)).unwrap()).unwrap();
    assert_eq!((d.src_fn, d.src_instance, d.dst_instance), (0, 1, 2));
    let c = f.rings.counters(GATEWAY);
    assert_eq!((c.sent, c.sent_bytes, c.refused), (6, 6 * 48, 0));
    assert_eq!(f.rings.counters(F1).received, 6);
}

#[test]
fn refusals_come_back_to_the_sender_as_sproxy_makes_them() {
    let f = fixture();
    let gw = ep(GATEWAY, 0);
    let own = f.rings.ring_of(gw).unwrap();
    let refusal_of = |d: Descriptor| {
        assert!(matches!(f.rings.send(gw, d).unwrap(), Routed::Refused(_)));
        let back = f
            .rings
            .pop(own)
            .expect("the refusal is in the sender's ring");
        assert_eq!(back.kind(), Some(Kind::Refused));
        back.refusal().unwrap()
    };
    // Not in the allow list.
    assert_eq!(
        refusal_of(Descriptor::request(F2, 1)),
        (Some(RefuseReason::Forbidden), Some(Kind::Request))
    );
    // Not a function of the chain at all.
    assert_eq!(
        refusal_of(Descriptor::request(FnId(9), 1)),
        (Some(RefuseReason::NoDestination), Some(Kind::Request))
    );
    // Allowed, but nobody registered.
    assert_eq!(
        refusal_of(Descriptor::request(F1, 2)),
        (Some(RefuseReason::NoDestination), Some(Kind::Request))
    );
    // A named instance that is not registered.
    f.rings.set_live(F1, &[InstanceId(0)]).unwrap();
    let mut d = Descriptor::request(F1, 3);
    d.dst_instance = 1;
    assert_eq!(
        refusal_of(d),
        (Some(RefuseReason::NoDestination), Some(Kind::Request))
    );
    // Malformed.
    let mut d = Descriptor::request(F1, 4);
    d.version = 9;
    assert_eq!(refusal_of(d).0, Some(RefuseReason::BadDescriptor));
    // A full destination ring: back-pressure.
    let dst = f.rings.ring_of(ep(F1, 0)).unwrap();
    while f.rings.push(dst, &numbered(0)) {}
    assert_eq!(
        refusal_of(Descriptor::request(F1, 5)),
        (Some(RefuseReason::Busy), Some(Kind::Request))
    );
    assert_eq!(f.rings.counters(GATEWAY).refused, 6);
    assert_eq!(f.rings.counters(GATEWAY).sent, 0);
}

#[test]
fn sends_record_where_each_buffer_went() {
    let f = fixture();
    f.rings.set_live(F1, &[InstanceId(4)]).unwrap();
    let gw = ep(GATEWAY, 0);
    let buf = f.pool.alloc(gw, 42).unwrap();
    assert!(f.pool.mark_in_transit(buf, gw, F1));
    let mut d = Descriptor::request(F1, 42);
    f.pool.describe(buf, &mut d);
    f.rings.send(gw, d).unwrap();
    assert_eq!(
        f.rings.transit(buf.index),
        Some(Transit {
            generation: buf.generation,
            to: ep(F1, 4)
        })
    );
    // A refused one changes nothing: it did not pass.
    f.rings.set_live(F1, &[]).unwrap();
    f.rings.send(gw, d).unwrap();
    assert_eq!(
        f.rings.transit(buf.index),
        Some(Transit {
            generation: buf.generation,
            to: ep(F1, 4)
        })
    );
    // Nor does one that found its destination's ring full.
    f.rings.set_live(F1, &[InstanceId(0)]).unwrap();
    let full = f.rings.ring_of(ep(F1, 0)).unwrap();
    while f.rings.push(full, &numbered(0)) {}
    let mut forged = d;
    forged.generation = buf.generation + 5;
    assert!(matches!(
        f.rings.send(gw, forged).unwrap(),
        Routed::Refused(RefuseReason::Busy)
    ));
    assert_eq!(
        f.rings.transit(buf.index),
        Some(Transit {
            generation: buf.generation,
            to: ep(F1, 4)
        })
    );
    assert_eq!(f.rings.transit(buf.index + 1), None);
}

#[test]
fn a_push_cut_short_is_published_blank_and_the_ring_moves_on() {
    let f = fixture();
    let ring = f.rings.ring_of(ep(F1, 0)).unwrap();
    // A producer reserved position 0 and died before publishing it.
    f.rings.ring(ring).head.fetch_add(1, Ordering::SeqCst);
    assert!(f.rings.push(ring, &numbered(1)));
    assert_eq!(f.rings.pop(ring), None, "blocked behind the dead producer");
    let stuck = f.rings.interrupted_pushes();
    assert_eq!(stuck, vec![Interrupted { ring, position: 0 }]);
    assert!(f.rings.publish_blank(stuck[0]));
    assert!(!f.rings.publish_blank(stuck[0]), "only once");
    assert!(is_blank(&f.rings.pop(ring).unwrap()));
    assert_eq!(f.rings.pop(ring), Some(numbered(1)));
    assert!(f.rings.interrupted_pushes().is_empty());
}

#[test]
fn a_pop_cut_short_is_finished_so_the_ring_does_not_fill_up() {
    let f = fixture();
    let ring = f.rings.ring_of(ep(F1, 0)).unwrap();
    assert!(f.rings.push(ring, &numbered(0)));
    // The consumer took position 0 and died before handing the cell on.
    f.rings.ring(ring).tail.fetch_add(1, Ordering::SeqCst);
    assert!(f.rings.finish_pop(ring));
    assert!(!f.rings.finish_pop(ring), "only once");
    let mut pushed = 0;
    while f.rings.push(ring, &numbered(1)) {
        pushed += 1;
    }
    assert_eq!(pushed, RING_CELLS, "a whole lap fits again");
    assert_eq!(f.rings.drain(ring).len(), RING_CELLS as usize);
}
