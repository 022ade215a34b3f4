//! The routing decision, written once for the planes that route in user space: the
//! pool-manager's relay and the senders of poll mode's rings. SPROXY makes the same decision in
//! the kernel (`ebpf/src/bpf/sproxy.bpf.c`, C); `pool-manager`'s conformance test holds all three
//! to one table of cases.
//!
//! For a descriptor sent by `from` (its identity comes from where it was sent, never from the
//! descriptor):
//! 1. the sender is stamped into `src_fn`/`src_instance`;
//! 2. a descriptor of another ABI version, or one already marked refused, is refused as
//!    [`RefuseReason::BadDescriptor`];
//! 3. a destination that is not a function of the chain is refused as
//!    [`RefuseReason::NoDestination`], a pair not in the allow list as
//!    [`RefuseReason::Forbidden`];
//! 4. the instance named is tried, or for [`ANY_INSTANCE`] up to [`MAX_TRIES`] of the
//!    function's instances in the plane's order; one that is gone is passed over, one whose
//!    queue is full too (but then the refusal says [`RefuseReason::Busy`]);
//! 5. where the buffer goes is recorded before the descriptor becomes visible, and the record is
//!    undone if it was not delivered after all: a refusal changes no record;
//! 6. a refusal is marked on the descriptor and handed back to the sender.

use crate::descriptor::{Descriptor, Kind, RefuseReason, ABI_VERSION, DESCRIPTOR_SIZE};
use crate::ids::{Endpoint, FnId, InstanceId, ANY_INSTANCE};
use crate::pool::PoolLayout;
use crate::transit;
use std::sync::atomic::AtomicU64;

/// How many instances one send tries before it is refused (SPROXY's MAX_TRIES).
pub const MAX_TRIES: usize = 4;

/// Why an instance did not take a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTaken {
    /// Its queue is full.
    Full,
    /// It has no socket or ring any more (it left, or never came).
    Gone,
}

/// Instances to try for one send, in order: at most [`MAX_TRIES`], with no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Candidates {
    instances: [InstanceId; MAX_TRIES],
    len: usize,
}

impl Candidates {
    /// The first [`MAX_TRIES`] of `instances`, from index `first` on, wrapping around.
    pub fn rotated(instances: &[InstanceId], first: usize) -> Candidates {
        let n = instances.len();
        (0..n.min(MAX_TRIES))
            .map(|k| instances[(first + k) % n])
            .collect()
    }

    /// Only the instance named.
    pub fn named(instance: InstanceId) -> Candidates {
        let mut c = Candidates::default();
        c.instances[0] = instance;
        c.len = 1;
        c
    }

    pub fn as_slice(&self) -> &[InstanceId] {
        &self.instances[..self.len]
    }
}

impl FromIterator<InstanceId> for Candidates {
    /// The first [`MAX_TRIES`] instances of `iter`.
    fn from_iter<I: IntoIterator<Item = InstanceId>>(iter: I) -> Candidates {
        let mut c = Candidates::default();
        for instance in iter.into_iter().take(MAX_TRIES) {
            c.instances[c.len] = instance;
            c.len += 1;
        }
        c
    }
}

/// What one routing plane knows of the chain and how it hands a descriptor over. The decision
/// itself is [`route`]'s.
pub trait Plane {
    /// Whether `f` is a function of this chain (the gateway included).
    fn is_function(&self, f: FnId) -> bool;
    /// Whether `src` may send to `dst`.
    fn allowed(&self, src: FnId, dst: FnId) -> bool;
    /// Where a descriptor for any instance of `f` is tried, in order. Empty if none runs.
    fn candidates(&self, f: FnId) -> Candidates;
    /// Hands `d` to instance `to`'s queue.
    fn offer(&self, to: Endpoint, d: &Descriptor) -> Result<(), NotTaken>;
    /// Hands a refusal back into the sender's own queue; `false` if it could not be (its queue
    /// is past twice the limit, or gone), in which case the refusal is lost to the sender.
    fn hand_back(&self, from: Endpoint, d: &Descriptor) -> bool;
    /// The pool whose buffers descriptors name, and the transit word of buffer `index`.
    fn pool(&self) -> &PoolLayout;
    fn transit_slot(&self, index: u32) -> Option<&AtomicU64>;
    /// Counts a delivery from `src` to `dst`, and a refusal of what `src` sent.
    fn count_delivered(&self, src: FnId, dst: FnId, bytes: u64);
    fn count_refused(&self, src: FnId);
}

/// What [`route`] did with a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Handed to this instance.
    Delivered(Endpoint),
    /// Refused, and the refusal handed back to the sender.
    Refused(RefuseReason),
    /// Refused, and the refusal could not be handed back (see [`Plane::hand_back`]).
    RefusalLost(RefuseReason),
}

/// Routes `d`, sent by `from`, through `plane` (see the module's documentation).
pub fn route<P: Plane + ?Sized>(plane: &P, from: Endpoint, mut d: Descriptor) -> Routed {
    d.src_fn = from.function.0;
    d.src_instance = from.instance.0;
    let reason = match decide(plane, &mut d) {
        Ok(to) => {
            plane.count_delivered(from.function, to.function, DESCRIPTOR_SIZE as u64);
            return Routed::Delivered(to);
        }
        Err(reason) => reason,
    };
    d.refuse(reason);
    plane.count_refused(from.function);
    if plane.hand_back(from, &d) {
        Routed::Refused(reason)
    } else {
        Routed::RefusalLost(reason)
    }
}

/// Delivers `d` (its `dst_instance` set to the instance that took it), or says why not (`d`
/// unchanged but for its sender).
fn decide<P: Plane + ?Sized>(plane: &P, d: &mut Descriptor) -> Result<Endpoint, RefuseReason> {
    if d.version != ABI_VERSION || d.kind == Kind::Refused as u8 {
        return Err(RefuseReason::BadDescriptor);
    }
    let dst = FnId(d.dst_fn);
    if !plane.is_function(dst) {
        return Err(RefuseReason::NoDestination);
    }
    if !plane.allowed(FnId(d.src_fn), dst) {
        return Err(RefuseReason::Forbidden);
    }
    let candidates = if d.dst_instance == ANY_INSTANCE.0 {
        plane.candidates(dst)
    } else {
        Candidates::named(InstanceId(d.dst_instance))
    };
    let mut reason = RefuseReason::NoDestination;
    for &instance in candidates.as_slice() {
        let to = Endpoint::new(dst, instance);
        let mut out = *d;
        out.dst_instance = instance.0;
        // Before the descriptor is visible: its receiver may pass it on at once.
        let recorded = plane
            .pool()
            .index_of(out.offset)
            .and_then(|i| plane.transit_slot(i))
            .map(|slot| transit::record(slot, out.generation, to.router_key()));
        match plane.offer(to, &out) {
            Ok(()) => {
                *d = out;
                return Ok(to);
            }
            Err(not_taken) => {
                if let Some(recorded) = recorded {
                    recorded.undo();
                }
                if not_taken == NotTaken::Full {
                    reason = RefuseReason::Busy;
                }
            }
        }
    }
    Err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_rotate_and_stop_at_max_tries() {
        let ids: Vec<InstanceId> = (0..6).map(InstanceId).collect();
        let c = Candidates::rotated(&ids, 4);
        assert_eq!(
            c.as_slice(),
            &[InstanceId(4), InstanceId(5), InstanceId(0), InstanceId(1)]
        );
        assert_eq!(Candidates::rotated(&ids[..2], 1).as_slice().len(), 2);
        assert!(Candidates::rotated(&[], 3).as_slice().is_empty());
        assert_eq!(
            Candidates::named(InstanceId(9)).as_slice(),
            &[InstanceId(9)]
        );
    }
}
