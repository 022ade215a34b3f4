//! Reclaiming buffers: those of an instance that went away (at once, when it leaves), and any
//! buffer left in transit longer than a request may live (however it got stuck).

use spright_core::ids::Endpoint;
use spright_core::pool::{BufferState, Holder, Pool};
use spright_core::transit::Transit;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// Frees every buffer `gone` held, and every buffer whose descriptor sat in its queue: the
/// router recorded `gone` as where the buffer was last routed at its current generation
/// (`routed_to(index)` gives that record), or, failing a record, the buffer is in transit to `gone`'s function and `function_left` (no instance remains).
/// Returns the requests those buffers belonged to.
pub fn sweep(
    pool: &Pool,
    gone: Endpoint,
    function_left: bool,
    routed_to: impl Fn(u32) -> Option<Transit>,
) -> BTreeSet<u64> {
    let mut requests = BTreeSet::new();
    pool.for_each_used(|index, state, owner| {
        let hit = match state.holder {
            Holder::Held { function, instance } => {
                function == gone.function.0 && instance == gone.instance.0
            }
            Holder::InTransit { function } => {
                let routed = routed_to(index);
                let sent_by_gone =
                    pool.sent_by(index) == Some((state.generation, gone.router_key()));
                // The record alone is not enough: a forged descriptor could have written it.
                // The buffer must also be on its way to the dead instance's function, or have
                // been sent by the dead instance (a refusal waiting in its own queue).
                let to_gone = Transit {
                    generation: state.generation,
                    to: gone,
                };
                (routed == Some(to_gone)
                    && (function == gone.function.0 || sent_by_gone))
                    || (function_left && function == gone.function.0)
                    // Sent by the dead instance but never routed: its descriptor died with it
                    // (say, in its send backlog), so nobody will ever claim the buffer.
                    || (routed.map(|t| t.generation) != Some(state.generation) && sent_by_gone)
            }
            Holder::Free => false,
        };
        // The compare-and-swap fails if the buffer moved on since it was read: then it was not
        // lost after all.
        if hit && pool.reclaim(index, state) {
            requests.insert(owner);
        }
    });
    requests
}

/// Finds buffers that stay in transit, unchanged, for longer than `stale_after` (the chain's
/// timeout and a margin): a descriptor was rejected by its receiver, forged, or lost, and no
/// request can still be waiting for it. Such a buffer is freed by compare-and-swap on the very
/// state seen first, so a buffer that moved on in between is left alone, and a descriptor of it
/// that does arrive later fails its claim (the generation moved on).
pub struct StaleTransit {
    stale_after: Duration,
    seen: HashMap<u32, (BufferState, Instant)>,
}

impl StaleTransit {
    pub fn new(stale_after: Duration) -> StaleTransit {
        StaleTransit {
            stale_after,
            seen: HashMap::new(),
        }
    }

    /// One look at the pool; returns the requests whose buffers were reclaimed.
    pub fn check(&mut self, pool: &Pool, now: Instant) -> BTreeSet<u64> {
        let mut still = HashMap::with_capacity(self.seen.len());
        let mut reclaimed = BTreeSet::new();
        pool.for_each_used(|index, state, owner| {
            if !matches!(state.holder, Holder::InTransit { .. }) {
                return;
            }
            let since = match self.seen.get(&index) {
                Some(&(seen, at)) if seen == state => at,
                _ => now,
            };
            if now.duration_since(since) >= self.stale_after && pool.reclaim(index, state) {
                reclaimed.insert(owner);
            } else {
                still.insert(index, (state, since));
            }
        });
        self.seen = still;
        reclaimed
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use spright_core::descriptor::Descriptor;
    use spright_core::ids::{FnId, InstanceId, GATEWAY};
    use spright_core::pool::PoolSpec;

    /// A small pool in a directory of its own (dropped with it).
    pub(crate) fn pool() -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let spec = PoolSpec {
            buffer_count: 8,
            buffer_size: 1024,
        };
        let pool = Pool::create(&dir.path().join("p"), spec, "t", 0o600).unwrap();
        (dir, pool)
    }

    #[test]
    fn sweeps_what_the_dead_held_and_what_was_on_its_way() {
        let (_dir, pool) = pool();
        let gw = Endpoint::new(GATEWAY, InstanceId(0));
        let f1 = Endpoint::new(FnId(1), InstanceId(0));
        let f2 = Endpoint::new(FnId(2), InstanceId(0));
        // Request 10: claimed by f1. Request 11: in transit to f1. Request 12: held by f2.
        let send = |req: u64| {
            let b = pool.alloc(gw, req).unwrap();
            assert!(pool.mark_in_transit(b, gw, f1.function));
            let mut d = Descriptor::request(f1.function, req);
            pool.describe(b, &mut d);
            d
        };
        let d10 = send(10);
        pool.claim(&d10, f1).unwrap();
        send(11);
        pool.alloc(f2, 12).unwrap();
        pool.alloc(gw, 13).unwrap();

        // While another f1 instance remains and nothing says where request 11's descriptor
        // went, it may still be received.
        let nowhere = |_| None;
        let r = sweep(&pool, f1, false, nowhere);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![10]);
        let r = sweep(&pool, f1, true, nowhere);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![11]);
        assert_eq!(
            pool.stats().in_use(),
            2,
            "f2's and the gateway's buffers stay"
        );
    }

    #[test]
    fn a_forged_record_does_not_make_the_sweep_free_another_functions_buffer() {
        let (_dir, pool) = pool();
        let f1 = Endpoint::new(FnId(1), InstanceId(0));
        let rogue = Endpoint::new(FnId(9), InstanceId(0));
        // f1's reply on its way to the gateway; a forged descriptor made the router record it
        // as routed to the rogue, at the right generation.
        let b = pool.alloc(f1, 40).unwrap();
        assert!(pool.mark_in_transit(b, f1, GATEWAY));
        let forged = Transit {
            generation: b.generation,
            to: rogue,
        };
        let r = sweep(&pool, rogue, true, |i| (i == b.index).then_some(forged));
        assert!(r.is_empty(), "the gateway's reply was freed: {r:?}");
        assert_eq!(pool.stats().in_transit, 1);
    }

    #[test]
    fn a_buffer_stuck_in_transit_is_reclaimed_after_the_deadline_only() {
        let (_dir, pool) = pool();
        let gw = Endpoint::new(GATEWAY, InstanceId(0));
        let f1 = Endpoint::new(FnId(1), InstanceId(0));
        let stuck = pool.alloc(gw, 50).unwrap();
        assert!(pool.mark_in_transit(stuck, gw, f1.function));
        let moving = pool.alloc(gw, 51).unwrap();
        assert!(pool.mark_in_transit(moving, gw, f1.function));
        pool.alloc(gw, 52).unwrap(); // held: never the stale sweep's business

        let t0 = Instant::now();
        let mut stale = StaleTransit::new(Duration::from_secs(5));
        assert!(stale.check(&pool, t0).is_empty());
        // The second one is claimed and sent on meanwhile: a new state, a new clock.
        let mut d = Descriptor::request(f1.function, 51);
        pool.describe(moving, &mut d);
        let claimed = pool.claim(&d, f1).unwrap().unwrap();
        assert!(pool.mark_in_transit(claimed, f1, GATEWAY));
        assert!(stale.check(&pool, t0 + Duration::from_secs(4)).is_empty());
        let r = stale.check(&pool, t0 + Duration::from_secs(6));
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![50]);
        assert_eq!(pool.stats().in_transit, 1);
        let r = stale.check(&pool, t0 + Duration::from_secs(10));
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![51]);
        assert_eq!(pool.stats().in_use(), 1, "the held buffer stays");
        // A late descriptor for the reclaimed buffer cannot claim it.
        let mut late = Descriptor::request(f1.function, 50);
        pool.describe(stuck, &mut late);
        assert!(pool.claim(&late, f1).is_err());
    }

    #[test]
    fn sweeps_what_the_dead_sent_that_never_reached_the_router() {
        let (_dir, pool) = pool();
        let dead = Endpoint::new(FnId(1), InstanceId(0));
        let alive = Endpoint::new(FnId(1), InstanceId(1));
        let next = FnId(2);
        let mut routed = HashMap::new();
        // 30: sent by the dead instance, never routed; 31: sent by it and routed on (its
        // receiver will claim it); 32: sent by a live instance, not routed yet.
        for (req, from, route) in [(30u64, dead, false), (31, dead, true), (32, alive, false)] {
            let b = pool.alloc(from, req).unwrap();
            assert!(pool.mark_in_transit(b, from, next));
            if route {
                let to = Endpoint::new(next, InstanceId(0));
                routed.insert(
                    b.index,
                    Transit {
                        generation: b.generation,
                        to,
                    },
                );
            }
        }
        let r = sweep(&pool, dead, false, |i| routed.get(&i).copied());
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![30]);
        assert_eq!(pool.stats().in_use(), 2);
    }

    #[test]
    fn sweeps_what_was_routed_to_the_dead_instance_only() {
        let (_dir, pool) = pool();
        let gw = Endpoint::new(GATEWAY, InstanceId(0));
        let dead = Endpoint::new(FnId(1), InstanceId(0));
        let alive = Endpoint::new(FnId(1), InstanceId(1));
        let mut routed = HashMap::new();
        for (req, to) in [(20u64, dead), (21, alive)] {
            let b = pool.alloc(gw, req).unwrap();
            assert!(pool.mark_in_transit(b, gw, to.function));
            routed.insert(
                b.index,
                Transit {
                    generation: b.generation,
                    to,
                },
            );
        }
        // A record from an older generation of the buffer does not count.
        let b = pool.alloc(gw, 22).unwrap();
        assert!(pool.mark_in_transit(b, gw, dead.function));
        routed.insert(
            b.index,
            Transit {
                generation: b.generation.wrapping_sub(1),
                to: dead,
            },
        );

        let r = sweep(&pool, dead, false, |i| routed.get(&i).copied());
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![20]);
        assert_eq!(pool.stats().in_transit, 2);
    }
}
