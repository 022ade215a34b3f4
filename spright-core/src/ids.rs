//! Identities of functions and their instances, and how they form router keys.

use std::fmt;

/// A function's numeric id within its chain. 0 is the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FnId(pub u16);

/// One running copy of a function, numbered by the pool-manager at registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InstanceId(pub u16);

/// The gateway's function id.
pub const GATEWAY: FnId = FnId(0);

/// `dst_instance` meaning "any instance; let the router choose".
pub const ANY_INSTANCE: InstanceId = InstanceId(0xFFFF);

/// Function ids must be below this (SPROXY sizes its per-function maps by it).
pub const MAX_FUNCTIONS: u16 = 1024;

/// Instances one function may have at once (SPROXY's per-function instance table).
pub const MAX_INSTANCES: u16 = 64;

/// A registered socket: which function, which instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub function: FnId,
    pub instance: InstanceId,
}

impl Endpoint {
    pub fn new(function: FnId, instance: InstanceId) -> Endpoint {
        Endpoint { function, instance }
    }

    /// The key of this endpoint's socket in SPROXY's sockhash (and the relay's table).
    pub fn router_key(self) -> u32 {
        ((self.function.0 as u32) << 16) | self.instance.0 as u32
    }

    pub fn from_router_key(key: u32) -> Endpoint {
        Endpoint::new(FnId((key >> 16) as u16), InstanceId(key as u16))
    }
}

impl fmt::Display for FnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.function.0, self.instance.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_key_round_trips() {
        let e = Endpoint::new(FnId(513), InstanceId(7));
        assert_eq!(e.router_key(), (513 << 16) | 7);
        assert_eq!(Endpoint::from_router_key(e.router_key()), e);
    }
}
