//! Reclaiming the buffers of an instance that went away.

use spright_core::ids::Endpoint;
use spright_core::pool::{Holder, Pool};
use std::collections::BTreeSet;

/// Frees every buffer `gone` held, and every buffer whose descriptor sat in its queue: the
/// router recorded `gone` as where the buffer was last routed at its current generation
/// (`routed_to(index)` gives that record as (generation, endpoint key)), or, failing a record,
/// the buffer is in transit to `gone`'s function and `function_left` (no instance remains).
/// Returns the requests those buffers belonged to.
pub fn sweep(
    pool: &Pool,
    gone: Endpoint,
    function_left: bool,
    routed_to: impl Fn(u32) -> Option<(u32, u32)>,
) -> BTreeSet<u64> {
    let mut requests = BTreeSet::new();
    pool.for_each_used(|index, state, owner| {
        let hit = match state.holder {
            Holder::Held { function, instance } => {
                function == gone.function.0 && instance == gone.instance.0
            }
            Holder::InTransit { function } => {
                let routed = routed_to(index);
                routed == Some((state.generation, gone.router_key()))
                    || (function_left && function == gone.function.0)
                    // Sent by the dead instance but never routed: its descriptor died with it
                    // (say, in its send backlog), so nobody will ever claim the buffer.
                    || (routed.map(|(g, _)| g) != Some(state.generation)
                        && pool.sent_by(index) == Some((state.generation, gone.router_key())))
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

#[cfg(test)]
mod tests {
    use super::*;
    use spright_core::descriptor::Descriptor;
    use spright_core::ids::{FnId, InstanceId, GATEWAY};
    use spright_core::pool::PoolSpec;

    fn pool() -> (tempfile::TempDir, Pool) {
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
            assert!(pool.send(b, gw, f1.function));
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
    fn sweeps_what_the_dead_sent_that_never_reached_the_router() {
        let (_dir, pool) = pool();
        let dead = Endpoint::new(FnId(1), InstanceId(0));
        let alive = Endpoint::new(FnId(1), InstanceId(1));
        let next = FnId(2);
        let mut routed = std::collections::HashMap::new();
        // 30: sent by the dead instance, never routed; 31: sent by it and routed on (its
        // receiver will claim it); 32: sent by a live instance, not routed yet.
        for (req, from, route) in [(30u64, dead, false), (31, dead, true), (32, alive, false)] {
            let b = pool.alloc(from, req).unwrap();
            assert!(pool.send(b, from, next));
            if route {
                let to = Endpoint::new(next, InstanceId(0));
                routed.insert(b.index, (b.generation, to.router_key()));
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
        let mut routed = std::collections::HashMap::new();
        for (req, to) in [(20u64, dead), (21, alive)] {
            let b = pool.alloc(gw, req).unwrap();
            assert!(pool.send(b, gw, to.function));
            routed.insert(b.index, (b.generation, to.router_key()));
        }
        // A record from an older generation of the buffer does not count.
        let b = pool.alloc(gw, 22).unwrap();
        assert!(pool.send(b, gw, dead.function));
        routed.insert(b.index, (b.generation.wrapping_sub(1), dead.router_key()));

        let r = sweep(&pool, dead, false, |i| routed.get(&i).copied());
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![20]);
        assert_eq!(pool.stats().in_transit, 2);
    }
}
