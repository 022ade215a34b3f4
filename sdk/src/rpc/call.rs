//! The calling side: typed methods, arguments read in place, and the context a function calls
//! others through, whichever host runs it.

use super::wire::Wire;
use crate::error::CallError;
use crate::function::Context;
use crate::message::Message;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;

/// The request-line method of RPC calls between functions; the target is the method's name.
pub const RPC_METHOD: &str = "RPC";

/// A future that can move between threads.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One method of a function: its request and response types.
pub trait Method: Send + Sync + 'static {
    /// The function that serves it (its name in the chain file).
    const SERVICE: &'static str;
    /// The method's name.
    const NAME: &'static str;
    type Req: Wire;
    type Resp: Wire;
}

/// An argument or a reply: in place in a pool buffer under spright, decoded otherwise.
/// Dereferences to the message.
pub struct Arg<T: Wire> {
    inner: ArgInner<T>,
}

enum ArgInner<T> {
    InPlace(Message),
    Owned(Box<T>),
}

impl<T: Wire> Arg<T> {
    pub fn owned(value: T) -> Arg<T> {
        Arg {
            inner: ArgInner::Owned(Box::new(value)),
        }
    }

    /// The message's body as a `T`, in place; copied only if the sender misaligned it.
    pub(crate) fn in_place(message: Message) -> Result<Arg<T>, WireError> {
        let body = message.body();
        if body.len() != size_of::<T>() {
            return Err(WireError::Size {
                type_name: std::any::type_name::<T>(),
                expected: size_of::<T>(),
                got: body.len(),
            });
        }
        if bytemuck::try_from_bytes::<T>(body).is_ok() {
            return Ok(Arg {
                inner: ArgInner::InPlace(message),
            });
        }
        Ok(Arg::owned(bytemuck::pod_read_unaligned(body)))
    }

    /// Whether the value is read in place from shared memory.
    pub fn is_in_place(&self) -> bool {
        matches!(self.inner, ArgInner::InPlace(_))
    }
}

impl<T: Wire> Deref for Arg<T> {
    type Target = T;
    fn deref(&self) -> &T {
        match &self.inner {
            // Size and alignment were checked when the Arg was made.
            ArgInner::InPlace(m) => bytemuck::from_bytes(m.body()),
            ArgInner::Owned(b) => b,
        }
    }
}

/// How hosts other than spright put messages on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{type_name} is {expected} bytes in place, the message body has {got}")]
    Size {
        type_name: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("malformed JSON for {type_name}: {source}")]
    Json {
        type_name: &'static str,
        source: serde_json::Error,
    },
    #[error("{type_name} has no protobuf encoding")]
    NoProto { type_name: &'static str },
    #[error("malformed protobuf for {type_name}: {message}")]
    Proto {
        type_name: &'static str,
        message: String,
    },
}

impl Codec {
    pub fn encode<T: Wire>(self, value: &T) -> Result<Vec<u8>, WireError> {
        let type_name = std::any::type_name::<T>();
        match self {
            Codec::Json => {
                serde_json::to_vec(value).map_err(|source| WireError::Json { type_name, source })
            }
            Codec::Proto => value.encode_proto().ok_or(WireError::NoProto { type_name }),
        }
    }

    pub fn decode<T: Wire>(self, bytes: &[u8]) -> Result<T, WireError> {
        let type_name = std::any::type_name::<T>();
        match self {
            Codec::Json => serde_json::from_slice(bytes)
                .map_err(|source| WireError::Json { type_name, source }),
            Codec::Proto => match T::decode_proto(bytes) {
                None => Err(WireError::NoProto { type_name }),
                Some(r) => r.map_err(|message| WireError::Proto { type_name, message }),
            },
        }
    }
}

/// Calls to other functions over a host's own transport (HTTP, gRPC): bytes in the host's
/// codec, in and out.
pub trait Remote: Send + Sync + 'static {
    fn codec(&self) -> Codec;
    fn call(
        &self,
        service: &'static str,
        method: &'static str,
        body: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, CallError>>;
}

/// What a function calls others through.
#[derive(Clone)]
pub struct Cx {
    inner: CxInner,
}

#[derive(Clone)]
enum CxInner {
    Pool(Context),
    Remote(Arc<dyn Remote>),
}

impl Cx {
    pub(crate) fn pool(ctx: Context) -> Cx {
        Cx {
            inner: CxInner::Pool(ctx),
        }
    }

    /// Calls through a host's transport.
    pub fn remote(remote: Arc<dyn Remote>) -> Cx {
        Cx {
            inner: CxInner::Remote(remote),
        }
    }

    /// Calls method `M` of its function and waits for the reply. Under spright the request is
    /// written into a pool buffer and the reply read in place; other hosts serialise.
    pub async fn call<M: Method>(&self, request: &M::Req) -> Result<Arg<M::Resp>, CallError> {
        let failed = |message: String| CallError::Failed {
            function: M::SERVICE.to_owned(),
            message,
        };
        match &self.inner {
            CxInner::Pool(ctx) => {
                let bytes = bytemuck::bytes_of(request);
                let reply = ctx
                    .call_aligned(M::SERVICE, RPC_METHOD, M::NAME, |room| {
                        if bytes.len() > room.len() {
                            return usize::MAX; // does not fit: the call fails
                        }
                        room[..bytes.len()].copy_from_slice(bytes);
                        bytes.len()
                    })
                    .await?;
                if reply.status() != 200 {
                    return Err(failed(format!(
                        "status {}: {}",
                        reply.status(),
                        String::from_utf8_lossy(reply.body())
                    )));
                }
                Arg::in_place(reply).map_err(|e| failed(e.to_string()))
            }
            CxInner::Remote(remote) => {
                let codec = remote.codec();
                let body = codec.encode(request).map_err(|e| failed(e.to_string()))?;
                let reply = remote.call(M::SERVICE, M::NAME, body).await?;
                let value = codec
                    .decode::<M::Resp>(&reply)
                    .map_err(|e| failed(e.to_string()))?;
                Ok(Arg::owned(value))
            }
        }
    }
}
