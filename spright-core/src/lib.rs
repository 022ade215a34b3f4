//! spright's shared core: the descriptor ABI, the shared-memory pool, chain files, the manifest
//! and the registration protocol. It depends on nothing else of spright's, so a function, the
//! gateway, the pool-manager and the shim all agree on one definition.

pub mod affinity;
pub mod chain;
pub mod descriptor;
pub mod env;
pub mod envelope;
pub mod fdpass;
pub mod ids;
pub mod load;
pub mod logging;
pub mod manifest;
pub mod names;
pub mod pool;
pub mod protocol;
pub mod rings;
pub mod route;
mod shm_file;
#[cfg(feature = "signals")]
pub mod signals;
pub mod transit;

pub use chain::{Chain, ChainError, RoutingMode};
pub use descriptor::{
    Descriptor, DescriptorFramer, Kind, RefuseReason, ReplyError, DESCRIPTOR_SIZE,
};
pub use ids::{Endpoint, FnId, InstanceId, ANY_INSTANCE, GATEWAY};
pub use manifest::{ChainKey, Manifest};
pub use pool::{BufferRef, DescriptorError, Pool, PoolError, PoolSpec};
