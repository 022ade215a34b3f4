//! HTTP/1.1 plumbing the hosts and the gateway share: the accept loop, bounded bodies and
//! one-line text answers.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// The largest body a host or the gateway accepts (or takes from an upstream).
pub const MAX_BODY: usize = 8 << 20;

pub type HttpResponse = Response<Full<Bytes>>;

/// A response whose body is `message` on one line.
pub fn text(status: StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    let mut line = message.to_string().replace(['\r', '\n'], " ");
    line.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(line)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("reading the body: {0}")]
    Read(String),
}

impl BodyError {
    /// The answer to a client whose request body failed.
    pub fn response(&self) -> HttpResponse {
        match self {
            BodyError::TooLarge => text(StatusCode::PAYLOAD_TOO_LARGE, self),
            BodyError::Read(_) => text(StatusCode::BAD_REQUEST, self),
        }
    }
}

/// Reads `body` whole, refusing more than [`MAX_BODY`] bytes.
pub async fn collect<B>(body: B) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Read(chain(&*e))),
    }
}

/// `error: cause: cause`, for errors (like hyper's) whose own message says little.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Serves HTTP/1.1 (keep-alive) on `listener` with `handle` until the future is dropped.
pub async fn serve<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a connection reset before accept: keep serving.
                eprintln!("accept on {:?}: {e}", listener.local_addr());
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = handle(req);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            // A client that goes away mid-request is not our error to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The pooled keep-alive HTTP/1.1 client the hosts and the gateway call upstreams with.
pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}
