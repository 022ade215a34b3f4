//! Poll routing (D-SPRIGHT): descriptors go through the rings file, pushed by their senders
//! (see `spright_core::rings`). The pool-manager keeps the live-instance table, reads counters
//! and transit records, and cleans up the ring of an instance that left.

use super::Counters;
use spright_core::chain::Chain;
use spright_core::ids::{Endpoint, FnId, InstanceId, GATEWAY};
use spright_core::pool::{Holder, Pool};
use spright_core::rings::{Interrupted, Rings, RingsError};
use std::collections::BTreeSet;
use std::path::Path;

pub struct PollRouter {
    pub rings: Rings,
}

impl PollRouter {
    /// Creates the chain's rings file beside `pool`.
    pub fn create(
        path: &Path,
        chain: &Chain,
        pool: &Pool,
        mode: u32,
    ) -> Result<PollRouter, RingsError> {
        let mut functions = vec![GATEWAY];
        functions.extend(chain.functions.iter().map(|f| FnId(f.id)));
        let rings = Rings::create(path, pool, &functions, chain.allow_list(), mode)?;
        Ok(PollRouter { rings })
    }

    pub fn check_endpoint(&self, endpoint: Endpoint) -> Result<(), RingsError> {
        self.rings
            .ring_of(endpoint)
            .map(|_| ())
            .ok_or(RingsError::NoRing { endpoint })
    }

    pub fn set_instances(
        &self,
        function: FnId,
        instances: &[InstanceId],
    ) -> Result<(), RingsError> {
        self.rings.set_live(function, instances)
    }

    pub fn counters(&self, function: FnId) -> Counters {
        let c = self.rings.counters(function);
        Counters {
            sent: c.sent,
            sent_bytes: c.sent_bytes,
            received: c.received,
            refused: c.refused,
        }
    }

    /// Empties the ring of an instance that left (it was the ring's only consumer), so that a
    /// newcomer in its slot starts clean. A descriptor that got in after the sweep still holds
    /// its buffer in transit: that buffer is reclaimed here, and its request returned.
    pub fn drain(&self, gone: Endpoint, pool: &Pool) -> BTreeSet<u64> {
        let mut requests = BTreeSet::new();
        let Some(ring) = self.rings.ring_of(gone) else {
            return requests;
        };
        self.rings.finish_pop(ring);
        for d in self.rings.drain(ring) {
            let Ok(Some(buf)) = pool.check(&d) else {
                continue;
            };
            let state = pool.state(buf.index);
            let in_transit = matches!(state.holder, Holder::InTransit { .. });
            if in_transit
                && state.generation == buf.generation
                && pool.owner_request(buf.index) == d.request_id
                && pool.reclaim(buf.index, state)
            {
                requests.insert(d.request_id);
            }
        }
        requests
    }

    /// Positions of rings that a producer reserved but has not published yet.
    pub fn interrupted_pushes(&self) -> Vec<Interrupted> {
        self.rings.interrupted_pushes()
    }

    /// Publishes blanks where pushes seen interrupted earlier still are: their producers died
    /// mid-push. Returns how many rings were unblocked.
    pub fn unblock(&self, earlier: &[Interrupted]) -> usize {
        let now = self.rings.interrupted_pushes();
        earlier
            .iter()
            .filter(|at| now.contains(at) && self.rings.publish_blank(**at))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spright_core::descriptor::Descriptor;
    use spright_core::pool::PoolSpec;
    use spright_core::rings::rings_path;

    const CHAIN: &str = "chain: t\nrouting: poll\npool: {buffers: 8, buffer_size: 1KiB}\nfunctions: [{name: a, id: 1}]\nroutes: [{path: /, function: a}]\n";

    fn setup() -> (tempfile::TempDir, Pool, PollRouter) {
        let dir = tempfile::tempdir().unwrap();
        let chain = Chain::parse(CHAIN, "t").unwrap();
        let pool = Pool::create(
            &dir.path().join("p.pool"),
            PoolSpec {
                buffer_count: 8,
                buffer_size: 1024,
            },
            "t",
            0o600,
        )
        .unwrap();
        let router = PollRouter::create(&rings_path(pool.path()), &chain, &pool, 0o600).unwrap();
        (dir, pool, router)
    }

    #[test]
    fn draining_a_dead_ring_reclaims_what_arrived_after_the_sweep() {
        let (_dir, pool, router) = setup();
        let gw = Endpoint::new(GATEWAY, InstanceId(0));
        let dead = Endpoint::new(FnId(1), InstanceId(0));
        router
            .set_instances(dead.function, &[dead.instance])
            .unwrap();
        let mut sent = Vec::new();
        for request in [7u64, 8] {
            let buf = pool.alloc(gw, request).unwrap();
            assert!(pool.mark_in_transit(buf, gw, dead.function));
            let mut d = Descriptor::request(dead.function, request);
            pool.describe(buf, &mut d);
            router.rings.send(gw, d).unwrap();
            sent.push(buf);
        }
        // Request 8's buffer was reclaimed already (by the sweep, say): its descriptor is stale.
        let state = pool.state(sent[1].index);
        assert!(pool.reclaim(sent[1].index, state));

        let requests = router.drain(dead, &pool);
        assert_eq!(requests.into_iter().collect::<Vec<_>>(), vec![7]);
        assert_eq!(pool.stats().in_use(), 0);
        let ring = router.rings.ring_of(dead).unwrap();
        assert_eq!(router.rings.pop(ring), None, "a newcomer starts clean");
    }

    #[test]
    fn only_pushes_still_unfinished_later_are_unblocked() {
        let (_dir, _pool, router) = setup();
        let a = Endpoint::new(FnId(1), InstanceId(0));
        router.set_instances(a.function, &[a.instance]).unwrap();
        let ring = router.rings.ring_of(a).unwrap();
        let stale = Interrupted { ring, position: 0 };
        assert!(router.interrupted_pushes().is_empty());
        assert_eq!(router.unblock(&[stale]), 0, "nothing is reserved");
        assert!(router.rings.push(ring, &Descriptor::request(a.function, 1)));
        assert_eq!(router.unblock(&[stale]), 0, "position 0 was published");
        assert!(router.rings.pop(ring).is_some());
    }
}
