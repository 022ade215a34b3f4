//! The gRPC-style host (like the original Online Boutique): unary calls on
//! `/spright.<service>/<Method>` whose messages are the protobuf encoding the SDK produces,
//! served by tonic over HTTP/2; calls to peers go straight to them, one multiplexed channel
//! per peer.

use super::http::Entry;
use super::{bind, Env, HostError};
use crate::httpx;
use bytes::{Buf, BufMut};
use spright_sdk::rpc::{BoxFuture, Codec, Cx, Remote, ServeError, Service};
use spright_sdk::CallError;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

pub(super) async fn serve(service: Service, env: Env) -> Result<(), HostError> {
    let listen = env.listen.ok_or(HostError::MissingEnv("SPRIGHT_LISTEN"))?;
    let listener = bind("SPRIGHT_LISTEN", listen).await?;
    let http_listener = match env.http_listen {
        Some(addr) => Some(bind("SPRIGHT_HTTP_LISTEN", addr).await?),
        None => None,
    };
    let service = Arc::new(service);
    let cx = Cx::remote(Arc::new(Peers::new(env.peers, env.call_timeout)));
    let router = Router {
        prefix: format!("/spright.{}/", service.name()),
        service: service.clone(),
        cx: cx.clone(),
    };
    let grpc = tonic::transport::Server::builder()
        .serve_with_incoming(router, TcpIncoming::from(listener).with_nodelay(Some(true)));
    let Some(http_listener) = http_listener else {
        return grpc.await.map_err(|e| grpc_error(listen, &e));
    };
    // Requests from outside the chain arrive as plain HTTP, as at OB's frontend.
    let entry = Arc::new(Entry {
        service,
        cx,
        rpc: false,
    });
    tokio::select! {
        r = grpc => r.map_err(|e| grpc_error(listen, &e)),
        () = httpx::serve(http_listener, move |req| entry.clone().handle(req)) => Ok(()),
    }
}

fn grpc_error(addr: std::net::SocketAddr, e: &tonic::transport::Error) -> HostError {
    HostError::Grpc {
        addr,
        message: httpx::chain(e),
    }
}

/// Passes message bytes through untouched: the SDK has already encoded them (protobuf).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut message = vec![0; src.remaining()];
        src.copy_to_slice(&mut message);
        Ok(Some(message))
    }
}

/// Routes every request by its path to the service's methods: no per-method code generation.
#[derive(Clone)]
struct Router {
    /// `/spright.<service>/`
    prefix: String,
    service: Arc<Service>,
    cx: Cx,
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let path = request.uri().path();
        let call = Unary {
            method: path.strip_prefix(&self.prefix).map(str::to_owned),
            path: path.to_owned(),
            service: self.service.clone(),
            cx: self.cx.clone(),
        };
        Box::pin(async move {
            Ok(tonic::server::Grpc::new(RawCodec)
                .unary(call, request)
                .await)
        })
    }
}

/// One unary call, once the request message has arrived.
struct Unary {
    method: Option<String>,
    path: String,
    service: Arc<Service>,
    cx: Cx,
}

impl tonic::server::UnaryService<Vec<u8>> for Unary {
    type Response = Vec<u8>;
    type Future = BoxFuture<Result<tonic::Response<Vec<u8>>, Status>>;

    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        let Some(method) = &self.method else {
            let name = self.service.name();
            let status = Status::unimplemented(format!("{name} does not serve {}", self.path));
            return Box::pin(std::future::ready(Err(status)));
        };
        let answer =
            self.service
                .serve_rpc(Codec::Proto, method, request.get_ref(), self.cx.clone());
        Box::pin(async move {
            match answer.await {
                Ok(reply) => Ok(tonic::Response::new(reply)),
                Err(e) => Err(match e {
                    ServeError::NoSuchMethod { .. } => Status::unimplemented(e.to_string()),
                    ServeError::BadRequest { .. } => Status::invalid_argument(e.to_string()),
                    ServeError::Failed { .. } => Status::internal(e.to_string()),
                }),
            }
        })
    }
}

/// Calls to the functions in `SPRIGHT_PEERS`, each over its own lazily opened channel.
struct Peers {
    peers: HashMap<String, Peer>,
    /// Every call's deadline, so that a stuck peer fails its callers as spright's gateway and
    /// the Knative-style activator do, instead of holding them forever.
    timeout: std::time::Duration,
}

struct Peer {
    addr: String,
    channel: OnceLock<Result<Channel, String>>,
}

impl Peers {
    fn new(peers: Vec<(String, String)>, timeout: std::time::Duration) -> Peers {
        let peers = peers
            .into_iter()
            .map(|(name, addr)| {
                let channel = OnceLock::new();
                (name, Peer { addr, channel })
            })
            .collect();
        Peers { peers, timeout }
    }
}

impl Peer {
    /// The peer's channel, opened on first use (it needs the runtime) and reused: HTTP/2
    /// multiplexes every call over it.
    fn channel(&self) -> Result<Channel, String> {
        self.channel
            .get_or_init(|| {
                Endpoint::from_shared(format!("http://{}", self.addr))
                    .map(|e| e.tcp_nodelay(true).connect_lazy())
                    .map_err(|e| format!("{}: {e}", self.addr))
            })
            .clone()
    }
}

impl Remote for Peers {
    fn codec(&self) -> Codec {
        Codec::Proto
    }

    fn call(
        &self,
        service: &'static str,
        method: &'static str,
        body: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, CallError>> {
        let failed = move |message: String| CallError::Failed {
            function: service.to_owned(),
            message,
        };
        let Some(peer) = self.peers.get(service) else {
            let e = failed(format!("{service} is not in SPRIGHT_PEERS"));
            return Box::pin(std::future::ready(Err(e)));
        };
        let channel = match peer.channel() {
            Ok(c) => c,
            Err(e) => return Box::pin(std::future::ready(Err(failed(e)))),
        };
        let addr = peer.addr.clone();
        let timeout = self.timeout;
        let path = format!("/spright.{service}/{method}");
        Box::pin(async move {
            let path = path
                .parse::<http::uri::PathAndQuery>()
                .map_err(|e| failed(format!("{path}: {e}")))?;
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .map_err(|e| failed(format!("{addr}: {}", httpx::chain(&e))))?;
            let mut request = tonic::Request::new(body);
            request.set_timeout(timeout);
            let reply = tokio::time::timeout(timeout, grpc.unary(request, path, RawCodec))
                .await
                .map_err(|_| CallError::Timeout {
                    function: service.to_owned(),
                    ms: timeout.as_millis() as u64,
                })?
                .map_err(|s| failed(format!("{addr}: {:?}: {}", s.code(), s.message())))?;
            Ok(reply.into_inner())
        })
    }
}
