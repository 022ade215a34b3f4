use spright_core::descriptor::RefuseReason;
use std::path::PathBuf;

/// Errors of the SDK.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("{0} is not set: start this function with `spright up`, the spright shim, or set it by hand")]
    MissingEnv(&'static str),
    #[error("cannot reach the pool-manager at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registration at {path} refused: {reason}")]
    Refused { path: PathBuf, reason: String },
    #[error("registration at {path} failed: {reason}")]
    Registration { path: PathBuf, reason: String },
    #[error(transparent)]
    Pool(#[from] spright_core::PoolError),
    #[error("the pool is exhausted (all {0} buffers in use)")]
    PoolExhausted(u32),
    #[error("message does not fit a buffer: {0}")]
    TooLarge(#[from] spright_core::envelope::EnvelopeError),
    #[error("no function named {0:?} in this chain")]
    UnknownFunction(String),
    #[error("sending a descriptor: {0}")]
    Send(std::io::Error),
    #[error("the pool-manager went away")]
    PoolManagerGone,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why a call to another function failed. More reasons may come: match with a wildcard arm.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    #[error("call to {function} refused: {}", reason.map(|r| r.as_str()).unwrap_or("unknown reason"))]
    Refused {
        function: String,
        reason: Option<RefuseReason>,
    },
    /// Back-pressure: the callee's queue is full (`pool.queue_limit`); retrying later may
    /// succeed, retrying at once will probably not.
    #[error("{function} is busy (its queue is full); try again later")]
    Busy { function: String },
    #[error("{function} went away while handling the call")]
    Gone { function: String },
    #[error("{function} did not answer within {ms} ms")]
    Timeout { function: String, ms: u64 },
    #[error("call to {function} failed: {message}")]
    Failed { function: String, message: String },
}
