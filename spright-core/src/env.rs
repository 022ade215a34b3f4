//! The environment variables that spright's parts pass each other, named once: the runner and
//! the shim set them, the SDK and the baseline hosts read them.

/// The function's registration socket (the runner's path, or where the shim mounts it).
pub const SOCKET: &str = "SPRIGHT_SOCKET";
/// The chain's pool file, as the function sees it.
pub const POOL: &str = "SPRIGHT_POOL";
/// The chain's name (informational: the socket decides which chain a function joins).
pub const CHAIN: &str = "SPRIGHT_CHAIN";
/// Which replica of the chain, when several run on one node (Kubernetes: the chain pod's UID).
pub const REPLICA: &str = "SPRIGHT_REPLICA";
/// The function's name in its chain.
pub const FUNCTION: &str = "SPRIGHT_FUNCTION";
/// Worker threads of a function's runtime.
pub const THREADS: &str = "SPRIGHT_THREADS";
/// Log format of a function: `json` or `text`.
pub const LOG_FORMAT: &str = "SPRIGHT_LOG_FORMAT";
/// A baseline host's per-request timeout, in milliseconds.
pub const TIMEOUT_MS: &str = "SPRIGHT_TIMEOUT_MS";
/// Where the shim looks for chains' runtime directories (default `/run/spright`).
pub const RUNTIME_ROOT: &str = "SPRIGHT_RUNTIME_ROOT";
