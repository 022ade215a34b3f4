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

    /// Calls method `M` once for each of `requests`, all at once, and waits for every reply;
    /// the replies come in the requests' order. The first failure fails the whole: the calls
    /// still out are abandoned (their answers are freed when they come). Independent calls to
    /// different methods go together the same way with [`try_join!`](crate::rpc::try_join) over
    /// [`Cx::call`].
    pub async fn call_all<M: Method>(
        &self,
        requests: impl IntoIterator<Item = M::Req>,
    ) -> Result<Vec<Arg<M::Resp>>, CallError> {
        let requests: Vec<M::Req> = requests.into_iter().collect();
        futures_util::future::try_join_all(requests.iter().map(|r| self.call::<M>(r))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::wire::Str;
    use bytemuck::{Pod, Zeroable};
    use serde::{Deserialize, Serialize};
    use std::time::Duration;
    use tokio::sync::Barrier;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
    struct Word {
        text: Str<8>,
    }
    impl Wire for Word {}

    struct Shout;
    impl Method for Shout {
        const SERVICE: &'static str = "shouter";
        const NAME: &'static str = "Shout";
        type Req = Word;
        type Resp = Word;
    }

    /// Answers a call only once `group` calls are waiting at the same time; a word "fail"
    /// fails at once.
    struct Gathering {
        together: Arc<Barrier>,
    }

    impl Remote for Gathering {
        fn codec(&self) -> Codec {
            Codec::Json
        }

        fn call(
            &self,
            service: &'static str,
            _method: &'static str,
            body: Vec<u8>,
        ) -> BoxFuture<Result<Vec<u8>, CallError>> {
            let together = self.together.clone();
            Box::pin(async move {
                let word: Word = Codec::Json.decode(&body).unwrap();
                if word.text.as_str() == "fail" {
                    return Err(CallError::Failed {
                        function: service.to_owned(),
                        message: "asked to fail".into(),
                    });
                }
                let waited = tokio::time::timeout(Duration::from_secs(5), together.wait()).await;
                assert!(waited.is_ok(), "the calls were not in flight together");
                let loud = Str::new(&word.text.as_str().to_uppercase()).unwrap();
                Ok(Codec::Json.encode(&Word { text: loud }).unwrap())
            })
        }
    }

    fn word(text: &str) -> Word {
        Word {
            text: Str::new(text).unwrap(),
        }
    }

    #[tokio::test]
    async fn call_all_has_every_call_in_flight_at_once_and_keeps_their_order() {
        let words = ["a", "bb", "ccc", "dddd", "eeeee"];
        let cx = Cx::remote(Arc::new(Gathering {
            together: Arc::new(Barrier::new(words.len())),
        }));
        let replies = cx
            .call_all::<Shout>(words.iter().map(|w| word(w)))
            .await
            .unwrap();
        let got: Vec<&str> = replies.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(got, ["A", "BB", "CCC", "DDDD", "EEEEE"]);
    }

    #[tokio::test]
    async fn call_all_fails_with_the_first_failure_without_waiting_for_the_rest() {
        // The barrier never fills: only the failure can end this call_all in time.
        let cx = Cx::remote(Arc::new(Gathering {
            together: Arc::new(Barrier::new(10)),
        }));
        let outcome = tokio::time::timeout(
            Duration::from_secs(2),
            cx.call_all::<Shout>([word("x"), word("fail"), word("y")]),
        )
        .await
        .expect("call_all waited for calls after one had failed");
        let e = outcome.err().expect("a failed call fails call_all");
        assert!(e.to_string().contains("asked to fail"), "{e}");
    }
}
