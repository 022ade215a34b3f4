//! Building descriptors: one constructor per kind, every one through [`Trail::descriptor`], so
//! that what a request carries through the chain is copied in exactly one place.

use super::sequence::Step;
use spright_core::descriptor::{Descriptor, Kind, ReplyError, ABI_VERSION};
use spright_core::ids::{FnId, InstanceId, ANY_INSTANCE, GATEWAY};

/// What every descriptor of a request carries unchanged through the chain (`hops` aside,
/// which counts its steps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trail {
    pub request_id: u64,
    /// Index of the chain route it came in on.
    pub route: u16,
    /// The gateway instance that owns it (final replies go there).
    pub origin_instance: u16,
    /// Its position in the route's sequence.
    pub hops: u8,
}

/// Who called, for a request that is a call: where its reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub function: FnId,
    pub instance: InstanceId,
    pub call_id: u32,
}

/// Where an answer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Back to the function that called.
    Caller(Caller),
    /// On to the next step of the sequence (as a request).
    Next(Step),
    /// To the gateway instance that owns the request.
    Gateway,
}

impl Trail {
    /// A request the gateway instance `origin_instance` takes in on route `route`.
    pub fn start(request_id: u64, route: u16, origin_instance: InstanceId) -> Trail {
        Trail {
            request_id,
            route,
            origin_instance: origin_instance.0,
            hops: 0,
        }
    }

    /// The trail a received descriptor carries.
    pub fn of(d: &Descriptor) -> Trail {
        Trail {
            request_id: d.request_id,
            route: d.route,
            origin_instance: d.origin_instance,
            hops: d.hops,
        }
    }

    /// The message for `to`, its buffer described when it is sent.
    pub fn to(self, to: Destination) -> Descriptor {
        match to {
            Destination::Caller(c) => {
                self.descriptor(Kind::Reply, c.function, c.instance, c.call_id)
            }
            Destination::Next(step) => Trail {
                hops: step.hops,
                ..self
            }
            .descriptor(Kind::Request, step.function, ANY_INSTANCE, 0),
            Destination::Gateway => {
                self.descriptor(Kind::Reply, GATEWAY, InstanceId(self.origin_instance), 0)
            }
        }
    }

    /// A bufferless error answer for `to` (a reply: the error ends the request there).
    pub fn error_to(self, to: Destination, code: ReplyError) -> Descriptor {
        let mut d = match to {
            Destination::Next(_) => self.to(Destination::Gateway),
            to => self.to(to),
        };
        d.status = code as u8;
        d
    }

    /// A call to any instance of `callee`, correlated by `call_id`.
    pub fn call(self, callee: FnId, call_id: u32) -> Descriptor {
        self.descriptor(Kind::Request, callee, ANY_INSTANCE, call_id)
    }

    fn descriptor(
        self,
        kind: Kind,
        dst: FnId,
        dst_instance: InstanceId,
        call_id: u32,
    ) -> Descriptor {
        Descriptor {
            version: ABI_VERSION,
            kind: kind as u8,
            hops: self.hops,
            dst_fn: dst.0,
            dst_instance: dst_instance.0,
            route: self.route,
            origin_instance: self.origin_instance,
            request_id: self.request_id,
            call_id,
            ..Descriptor::default()
        }
    }
}

impl Caller {
    /// The caller of a received request, if it is a call.
    pub fn of(d: &Descriptor) -> Option<Caller> {
        (d.call_id != 0).then_some(Caller {
            function: FnId(d.src_fn),
            instance: InstanceId(d.src_instance),
            call_id: d.call_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAIL: Trail = Trail {
        request_id: 42,
        route: 3,
        origin_instance: 1,
        hops: 2,
    };

    #[test]
    fn every_kind_copies_the_trail_through() {
        let caller = Caller {
            function: FnId(5),
            instance: InstanceId(7),
            call_id: 9,
        };
        let reply = TRAIL.to(Destination::Caller(caller));
        assert_eq!(Trail::of(&reply), TRAIL);
        assert_eq!(
            (reply.kind, reply.dst_fn, reply.dst_instance, reply.call_id),
            (2, 5, 7, 9)
        );

        let step = Step {
            function: FnId(4),
            hops: 3,
        };
        let forward = TRAIL.to(Destination::Next(step));
        assert_eq!((forward.kind, forward.dst_fn, forward.hops), (1, 4, 3));
        assert_eq!(forward.dst_instance, ANY_INSTANCE.0);
        assert_eq!(forward.call_id, 0);

        let last = TRAIL.to(Destination::Gateway);
        assert_eq!((last.kind, last.dst_fn, last.dst_instance), (2, 0, 1));

        let call = TRAIL.call(FnId(6), 11);
        assert_eq!((call.kind, call.dst_fn, call.call_id), (1, 6, 11));
        assert_eq!(Trail::of(&call), TRAIL);
        assert_eq!(Caller::of(&call).map(|c| c.call_id), Some(11));
        assert_eq!(Caller::of(&forward), None);
    }

    #[test]
    fn an_error_for_the_next_step_goes_to_the_gateway() {
        let step = Step {
            function: FnId(4),
            hops: 3,
        };
        let d = TRAIL.error_to(Destination::Next(step), ReplyError::DownstreamBusy);
        assert_eq!((d.kind, d.dst_fn, d.dst_instance), (2, 0, 1));
        assert_eq!(d.status, ReplyError::DownstreamBusy as u8);
        assert!(!d.has_buffer());
    }
}
