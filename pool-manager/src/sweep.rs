//! Reclaiming the buffers of an instance that went away.

use spright_core::ids::Endpoint;
use spright_core::pool::{Holder, Pool};
use std::collections::BTreeSet;

/// Frees every buffer `gone` held, and every buffer in transit to its function when
/// `function_left` (no instance of it remains to receive them). Returns the requests those
/// buffers belonged to.
pub fn sweep(pool: &Pool, gone: Endpoint, function_left: bool) -> BTreeSet<u64> {
    let mut requests = BTreeSet::new();
    pool.for_each_used(|index, state, owner| {
        let hit = match state.holder {
            Holder::Held { function, instance } => {
                function == gone.function.0 && instance == gone.instance.0
            }
            Holder::InTransit { function } => function_left && function == gone.function.0,
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

    #[test]
    fn sweeps_what_the_dead_held_and_what_was_on_its_way() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::create(
            &dir.path().join("p"),
            PoolSpec {
                buffer_count: 8,
                buffer_size: 1024,
            },
            "t",
            0o600,
        )
        .unwrap();
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

        // While another f1 instance remains, in-transit buffers may still be received.
        let r = sweep(&pool, f1, false);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![10]);
        let r = sweep(&pool, f1, true);
        assert_eq!(r.into_iter().collect::<Vec<_>>(), vec![11]);
        assert_eq!(
            pool.stats().in_use(),
            2,
            "f2's and the gateway's buffers stay"
        );
    }
}
