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
