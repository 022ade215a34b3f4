//! The serving side: a function as a set of typed methods, plus an optional HTTP entry point
//! for requests from the gateway. Runs under spright as a [`Handler`]; other hosts drive it
//! with [`Service::serve_rpc`] and [`Service::serve_http`].

use super::call::{Arg, BoxFuture, Codec, Cx, Method, RPC_METHOD};
use crate::function::{Context, Error, Handler};
use crate::message::{Message, Request, Response};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

/// A request from outside the chain (through the gateway).
pub struct HttpRequest {
    method: String,
    target: String,
    body: HttpBody,
}

enum HttpBody {
    InPlace(Message),
    Owned(Vec<u8>),
}

impl HttpRequest {
    pub fn new(method: &str, target: &str, body: Vec<u8>) -> HttpRequest {
        HttpRequest {
            method: method.to_owned(),
            target: target.to_owned(),
            body: HttpBody::Owned(body),
        }
    }

    fn in_place(message: Message) -> HttpRequest {
        HttpRequest {
            method: message.method().to_owned(),
            target: message.target().to_owned(),
            body: HttpBody::InPlace(message),
        }
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    /// Path and query.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn path(&self) -> &str {
        self.target
            .split_once('?')
            .map(|(p, _)| p)
            .unwrap_or(&self.target)
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let (_, query) = self.target.split_once('?')?;
        form_value(query, name)
    }

    /// The body; under spright, in place in shared memory.
    pub fn body(&self) -> &[u8] {
        match &self.body {
            HttpBody::InPlace(m) => m.body(),
            HttpBody::Owned(b) => b,
        }
    }

    /// The value of field `name` of an `application/x-www-form-urlencoded` body (not
    /// percent-decoded).
    pub fn form_param(&self, name: &str) -> Option<&str> {
        form_value(std::str::from_utf8(self.body()).ok()?, name)
    }
}

fn form_value<'a>(form: &'a str, name: &str) -> Option<&'a str> {
    form.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The answer to an [`HttpRequest`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            content_type,
            body: body.into(),
        }
    }
}

/// Why [`Service::serve_rpc`] did not answer.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{service} has no method {method:?}")]
    NoSuchMethod { service: String, method: String },
    #[error("{service}.{method}: {source}")]
    BadRequest {
        service: String,
        method: &'static str,
        source: super::WireError,
    },
    #[error("{service}.{method} failed: {source}")]
    Failed {
        service: String,
        method: &'static str,
        source: Error,
    },
}

trait ErasedMethod: Send + Sync {
    fn in_pool(&self, request: Message, ctx: Context) -> BoxFuture<Result<Response, Error>>;
    fn remote(&self, codec: Codec, body: &[u8], cx: Cx) -> BoxFuture<Result<Vec<u8>, ServeError>>;
}

struct Typed<M, F> {
    /// Shared, so that naming the service in an error costs no allocation per call.
    service: Arc<str>,
    handler: Arc<F>,
    _method: PhantomData<fn() -> M>,
}

impl<M, F, Fut> ErasedMethod for Typed<M, F>
where
    M: Method,
    F: Fn(Arg<M::Req>, Cx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<M::Resp, Error>> + Send + 'static,
{
    fn in_pool(&self, request: Message, ctx: Context) -> BoxFuture<Result<Response, Error>> {
        let handler = self.handler.clone();
        let service = self.service.clone();
        Box::pin(async move {
            let arg = Arg::<M::Req>::in_place(request)
                .map_err(|e| format!("{service}.{}: {e}", M::NAME))?;
            let reply = handler(arg, Cx::pool(ctx.clone())).await?;
            let bytes = bytemuck::bytes_of(&reply);
            ctx.respond_aligned(200, "", |room| {
                if bytes.len() > room.len() {
                    return usize::MAX;
                }
                room[..bytes.len()].copy_from_slice(bytes);
                bytes.len()
            })
        })
    }

    fn remote(&self, codec: Codec, body: &[u8], cx: Cx) -> BoxFuture<Result<Vec<u8>, ServeError>> {
        let service = self.service.clone();
        let request = match codec.decode::<M::Req>(body) {
            Ok(r) => r,
            Err(source) => {
                return Box::pin(std::future::ready(Err(ServeError::BadRequest {
                    service: service.to_string(),
                    method: M::NAME,
                    source,
                })))
            }
        };
        let handler = self.handler.clone();
        Box::pin(async move {
            let reply =
                handler(Arg::owned(request), cx)
                    .await
                    .map_err(|source| ServeError::Failed {
                        service: service.to_string(),
                        method: M::NAME,
                        source,
                    })?;
            codec.encode(&reply).map_err(|e| ServeError::Failed {
                service: service.to_string(),
                method: M::NAME,
                source: e.into(),
            })
        })
    }
}

type HttpHandler = dyn Fn(HttpRequest, Cx) -> BoxFuture<Result<HttpResponse, Error>> + Send + Sync;

/// A function made of typed methods (called by other functions) and an optional HTTP entry
/// (requests from the gateway).
pub struct Service {
    name: String,
    methods: HashMap<&'static str, Box<dyn ErasedMethod>>,
    http: Option<Box<HttpHandler>>,
}

impl Service {
    /// A function named `name` (its name in the chain file).
    pub fn new(name: &str) -> Service {
        Service {
            name: name.to_owned(),
            methods: HashMap::new(),
            http: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves method `M` with `handler`.
    pub fn method<M, F, Fut>(mut self, handler: F) -> Service
    where
        M: Method,
        F: Fn(Arg<M::Req>, Cx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<M::Resp, Error>> + Send + 'static,
    {
        debug_assert_eq!(
            M::SERVICE,
            self.name,
            "method {} registered on another service",
            M::NAME
        );
        self.methods.insert(
            M::NAME,
            Box::new(Typed::<M, F> {
                service: Arc::from(self.name.as_str()),
                handler: Arc::new(handler),
                _method: PhantomData,
            }),
        );
        self
    }

    /// Serves requests from the gateway with `handler`.
    pub fn http<F, Fut>(mut self, handler: F) -> Service
    where
        F: Fn(HttpRequest, Cx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<HttpResponse, Error>> + Send + 'static,
    {
        self.http = Some(Box::new(move |req, cx| Box::pin(handler(req, cx))));
        self
    }

    /// The names of the methods served.
    pub fn methods(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.methods.keys().copied()
    }

    /// Serves one call arriving in `codec` (for hosts other than spright).
    pub fn serve_rpc(
        &self,
        codec: Codec,
        method: &str,
        body: &[u8],
        cx: Cx,
    ) -> BoxFuture<Result<Vec<u8>, ServeError>> {
        match self.methods.get(method) {
            Some(m) => m.remote(codec, body, cx),
            None => Box::pin(std::future::ready(Err(ServeError::NoSuchMethod {
                service: self.name.clone(),
                method: method.to_owned(),
            }))),
        }
    }

    /// Serves one request from outside the chain (for hosts other than spright); 404 when
    /// this function has no HTTP entry.
    pub fn serve_http(
        &self,
        request: HttpRequest,
        cx: Cx,
    ) -> BoxFuture<Result<HttpResponse, Error>> {
        match &self.http {
            Some(h) => h(request, cx),
            None => {
                let text = format!("{} serves no HTTP requests\n", self.name);
                Box::pin(std::future::ready(Ok(HttpResponse::new(
                    404,
                    "text/plain",
                    text,
                ))))
            }
        }
    }
}

impl Handler for Service {
    fn handle(
        &self,
        request: Request,
        ctx: Context,
    ) -> impl Future<Output = Result<Response, Error>> + Send {
        let future: BoxFuture<Result<Response, Error>> = if request.method() == RPC_METHOD {
            match self.methods.get(request.target()) {
                Some(m) => m.in_pool(request, ctx),
                None => {
                    let text = format!("{} has no method {:?}\n", self.name, request.target());
                    Box::pin(std::future::ready(ctx.respond(
                        404,
                        "text/plain",
                        text.as_bytes(),
                    )))
                }
            }
        } else {
            let answer = self.serve_http(HttpRequest::in_place(request), Cx::pool(ctx.clone()));
            Box::pin(async move {
                let r = answer.await?;
                ctx.respond(r.status, r.content_type, &r.body)
            })
        };
        future
    }
}
