//! The Knative-style host: HTTP/1.1 with JSON messages; calls to other functions go through
//! the gateway, as they would through Knative's ingress.

use super::{bind, Env, HostError};
use crate::httpx::{self, HttpResponse};
use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use spright_sdk::rpc::{BoxFuture, Codec, Cx, HttpRequest, Remote, ServeError, Service};
use spright_sdk::CallError;
use std::sync::Arc;

pub(super) async fn serve(service: Service, env: Env) -> Result<(), HostError> {
    let listen = env.listen.ok_or(HostError::MissingEnv("SPRIGHT_LISTEN"))?;
    let listener = bind("SPRIGHT_LISTEN", listen).await?;
    let cx = Cx::remote(Arc::new(GatewayRemote {
        base: env.gateway,
        client: httpx::client(),
    }));
    let entry = Arc::new(Entry {
        service: Arc::new(service),
        cx,
        rpc: true,
    });
    httpx::serve(listener, move |req| entry.clone().handle(req)).await;
    Ok(())
}

/// A function's HTTP face: `POST /rpc/<Method>` (when `rpc`), `GET /healthz`, and its HTTP
/// entry for everything else.
pub(super) struct Entry {
    pub service: Arc<Service>,
    pub cx: Cx,
    pub rpc: bool,
}

impl Entry {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> HttpResponse {
        let (parts, body) = req.into_parts();
        if parts.method == Method::GET && parts.uri.path() == "/healthz" {
            return httpx::text(StatusCode::OK, "ok");
        }
        let body = match httpx::collect(body).await {
            Ok(b) => b,
            Err(e) => return e.response(),
        };
        if self.rpc && parts.method == Method::POST {
            if let Some(method) = parts.uri.path().strip_prefix("/rpc/") {
                return self.rpc(method, &body).await;
            }
        }
        let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let request = HttpRequest::new(parts.method.as_str(), target, Vec::from(body));
        match self.service.serve_http(request, self.cx.clone()).await {
            Ok(r) => {
                let Ok(status) = StatusCode::from_u16(r.status) else {
                    let name = self.service.name();
                    let problem = format!("{name} answered with invalid status {}", r.status);
                    return httpx::text(StatusCode::INTERNAL_SERVER_ERROR, problem);
                };
                let mut response = Response::new(Full::new(Bytes::from(r.body)));
                *response.status_mut() = status;
                let content_type = header::HeaderValue::from_str(r.content_type);
                if let (false, Ok(v)) = (r.content_type.is_empty(), content_type) {
                    response.headers_mut().insert(header::CONTENT_TYPE, v);
                }
                response
            }
            Err(e) => httpx::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{} failed: {e}", self.service.name()),
            ),
        }
    }

    async fn rpc(&self, method: &str, body: &[u8]) -> HttpResponse {
        match self
            .service
            .serve_rpc(Codec::Json, method, body, self.cx.clone())
            .await
        {
            Ok(reply) => {
                let mut r = Response::new(Full::new(Bytes::from(reply)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(e) => {
                let status = match e {
                    ServeError::NoSuchMethod { .. } => StatusCode::NOT_FOUND,
                    ServeError::BadRequest { .. } => StatusCode::BAD_REQUEST,
                    ServeError::Failed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                };
                httpx::text(status, e)
            }
        }
    }
}

/// Calls other functions as `POST {gateway}/_fn/<service>/rpc/<Method>` with JSON bodies.
struct GatewayRemote {
    base: Option<String>,
    client: httpx::Client,
}

impl Remote for GatewayRemote {
    fn codec(&self) -> Codec {
        Codec::Json
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
        let Some(base) = &self.base else {
            let e = failed("SPRIGHT_GATEWAY_URL is not set, so this function cannot call".into());
            return Box::pin(std::future::ready(Err(e)));
        };
        let url = format!("{base}/_fn/{service}/rpc/{method}");
        let request = Request::post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)));
        let client = self.client.clone();
        Box::pin(async move {
            let request = request.map_err(|e| failed(format!("POST {url}: {e}")))?;
            let response = client
                .request(request)
                .await
                .map_err(|e| failed(format!("POST {url}: {}", httpx::chain(&e))))?;
            let status = response.status();
            let body = httpx::collect(response.into_body())
                .await
                .map_err(|e| failed(format!("POST {url}: {e}")))?;
            if status != StatusCode::OK {
                let text = String::from_utf8_lossy(&body);
                return Err(failed(format!("{status}: {}", text.trim_end())));
            }
            Ok(Vec::from(body))
        })
    }
}
