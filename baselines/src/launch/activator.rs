//! The gateway of the Knative-style launch, standing in for Knative's ingress and activator:
//! routes outside requests by the chain's routes, runs sequences the way a Knative Sequence
//! does, carries calls between functions (`/_fn/<function>/<path>`), and holds requests for a
//! scaled-to-zero function while it starts.

use super::revision::Revision;
use super::LaunchError;
use crate::httpx::{self, HttpResponse};
use crate::routes::{Match, Routes};
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::sync::Arc;
use std::time::Duration;

pub struct Activator {
    routes: Routes,
    revisions: Vec<Arc<Revision>>,
    client: httpx::Client,
    /// Deadline for a whole request (the chain file's `gateway.timeout`).
    timeout: Duration,
}

/// A function's answer, read whole.
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Activator {
    pub fn new(
        routes: Routes,
        revisions: Vec<Arc<Revision>>,
        client: httpx::Client,
        timeout: Duration,
    ) -> Activator {
        Activator {
            routes,
            revisions,
            client,
            timeout,
        }
    }

    pub async fn handle(self: Arc<Self>, request: Request<Incoming>) -> HttpResponse {
        match tokio::time::timeout(self.timeout, self.route(request)).await {
            Ok(response) => response,
            Err(_) => httpx::text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("no answer within {} ms", self.timeout.as_millis()),
            ),
        }
    }

    async fn route(&self, request: Request<Incoming>) -> HttpResponse {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path();
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();

        // A call between functions: /_fn/<function>/<rest> goes to <function> as /<rest>.
        if let Some(rest) = path.strip_prefix("/_fn/") {
            let (name, rest) = rest.split_once('/').unwrap_or((rest, ""));
            let Some(index) = self.revisions.iter().position(|r| r.spec.function == name) else {
                return httpx::text(StatusCode::NOT_FOUND, format!("no function named {name:?}"));
            };
            let body = match httpx::collect(body).await {
                Ok(b) => b,
                Err(e) => return e.response(),
            };
            let target = format!("/{rest}{query}");
            return match self
                .forward(index, &parts.method, &target, content_type, body)
                .await
            {
                Ok(answer) => answer.into_response(),
                Err(response) => response,
            };
        }

        let functions = match self.routes.find(parts.method.as_str(), path) {
            Match::Route(functions) => functions,
            Match::NotFound => {
                return httpx::text(StatusCode::NOT_FOUND, format!("no route for {path}"))
            }
            Match::WrongMethod => {
                let problem = format!("{path} does not take {}", parts.method);
                return httpx::text(StatusCode::METHOD_NOT_ALLOWED, problem);
            }
        };
        let mut body = match httpx::collect(body).await {
            Ok(b) => b,
            Err(e) => return e.response(),
        };
        let target = parts.uri.path_and_query().map_or(path, |p| p.as_str());
        // A sequence: each function gets the request line and the previous one's answer.
        let mut content_type = content_type;
        let (last, init) = functions.split_last().expect("routes name a function");
        for &index in init {
            let answer = match self
                .forward(index, &parts.method, target, content_type, body)
                .await
            {
                Ok(a) => a,
                Err(response) => return response,
            };
            if !answer.status.is_success() {
                return answer.into_response();
            }
            body = answer.body;
            content_type = answer.content_type;
        }
        match self
            .forward(*last, &parts.method, target, content_type, body)
            .await
        {
            Ok(answer) => answer.into_response(),
            Err(response) => response,
        }
    }

    /// Sends one request to function `index` through its sidecar, starting it if need be.
    async fn forward(
        &self,
        index: usize,
        method: &Method,
        target: &str,
        content_type: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<Answer, HttpResponse> {
        let revision = &self.revisions[index];
        let function = &revision.spec.function;
        let _lease = revision.acquire().await.map_err(|e| {
            let status = match *e {
                LaunchError::NotReady { .. } => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::BAD_GATEWAY,
            };
            httpx::text(status, format!("{function} could not be started: {e}"))
        })?;
        let uri = format!("http://127.0.0.1:{}{target}", revision.spec.sidecar_port);
        let mut request = Request::builder().method(method.clone()).uri(uri);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = request.body(Full::new(body)).map_err(|e| {
            httpx::text(
                StatusCode::BAD_REQUEST,
                format!("cannot forward to {function}: {e}"),
            )
        })?;
        let unreachable = |problem: String| {
            httpx::text(StatusCode::BAD_GATEWAY, format!("{function}: {problem}"))
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| unreachable(httpx::chain(&e)))?;
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = httpx::collect(response.into_body())
            .await
            .map_err(|e| unreachable(format!("its answer: {e}")))?;
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }
}

impl Answer {
    fn into_response(self) -> HttpResponse {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        if let Some(ct) = self.content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        response
    }
}
