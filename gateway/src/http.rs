//! One HTTP request through the chain: route it, write it into a pool buffer, send its
//! descriptor to the route's first function, wait for the answer, and turn that into the
//! HTTP response, with the body served straight from the pool.

use crate::metrics::{RequestLabels, RouteLabel};
use crate::Gateway;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use slog::debug;
use spright_core::descriptor::RefuseReason;
use spright_core::envelope::{self, ENVELOPE_HEADER_SIZE};
use spright_sdk::runtime::{next_hop, Destination, Failure, Position, Step, Trail};
use spright_sdk::Message;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

pub type Body = Full<Bytes>;

/// Request headers that describe the hop, not the request: never forwarded into the chain.
const HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
];

fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut text = message.into();
    text.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub async fn handle(
    gw: Arc<Gateway>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    if req.uri().path() == "/metrics" && req.method() == Method::GET {
        return Ok(gw.metrics_response().await);
    }
    let (label, response) = match gw.routes.find(req.method().as_str(), req.uri().path()) {
        Some((index, route)) => {
            let label = gw.routes.label(index);
            let response = match next_hop(&route.sequence, Position::Entry) {
                Some(first) => {
                    // The gateway's concurrency is the chain's: every routed request until it is
                    // answered.
                    let _busy = gw.runtime.busy();
                    through_chain(&gw, req, index, first).await
                }
                None => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("route {label} has no functions"),
                ),
            };
            (label, response)
        }
        None => {
            let response = if gw.routes.path_known(req.uri().path()) {
                error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("no route for {} {}", req.method(), req.uri().path()),
                )
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    format!("no route for {} {}", req.method(), req.uri().path()),
                )
            };
            ("unrouted", response)
        }
    };
    gw.metrics
        .requests
        .get_or_create(&RequestLabels {
            route: label.to_owned(),
            code: response.status().as_u16(),
        })
        .inc();
    gw.metrics
        .latency
        .get_or_create(&RouteLabel {
            route: label.to_owned(),
        })
        .observe(start.elapsed().as_secs_f64());
    Ok(response)
}

/// The request line and forwarded headers, as envelope meta.
fn request_meta(req: &Request<Incoming>) -> Vec<u8> {
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut meta = Vec::with_capacity(256);
    meta.extend_from_slice(req.method().as_str().as_bytes());
    meta.push(b' ');
    meta.extend_from_slice(target.as_bytes());
    meta.push(b'\n');
    for (name, value) in req.headers() {
        if HOP_HEADERS.contains(&name.as_str()) {
            continue;
        }
        // Functions read meta as UTF-8 lines: values that are not UTF-8 (legal in HTTP as
        // obs-text) are not forwarded, and hyper already refuses newlines in them.
        let v = value.as_bytes();
        if std::str::from_utf8(v).is_err() || v.contains(&b'\n') || v.contains(&b'\r') {
            continue;
        }
        meta.extend_from_slice(name.as_str().as_bytes());
        meta.extend_from_slice(b": ");
        meta.extend_from_slice(v);
        meta.push(b'\n');
    }
    meta
}

async fn through_chain(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    route: u16,
    first: Step,
) -> Response<Body> {
    let runtime = &gw.runtime;
    let meta = request_meta(&req);
    let buffer_size = runtime.pool().buffer_size() as usize;
    let room = envelope::body_capacity(buffer_size, meta.len());
    if ENVELOPE_HEADER_SIZE + meta.len() > buffer_size {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request line and headers do not fit a {buffer_size}-byte buffer"),
        );
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > room as u64) {
        return too_large(room);
    }

    // However this future ends, even dropped by hyper when the client goes away, the wait goes.
    let mut answer = runtime.open_request();
    let request_id = answer.key();
    let mut lease = match runtime.lease(request_id) {
        Ok(l) => l,
        Err(_) => {
            let mut r = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the chain's buffer pool is exhausted; retry shortly",
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    };

    // The body goes straight from the connection into the pool buffer.
    let body_at = ENVELOPE_HEADER_SIZE + meta.len();
    let mut body_len = 0usize;
    {
        let space = lease.space();
        space[ENVELOPE_HEADER_SIZE..body_at].copy_from_slice(&meta);
    }
    // A slow upload holds a pool buffer: it gets the chain's deadline, no more.
    let mut body = req.into_body();
    let read_body = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body: {e}"),
                )
            })?;
            if let Ok(data) = frame.into_data() {
                if body_len + data.len() > room {
                    return Err(too_large(room));
                }
                lease.space()[body_at + body_len..body_at + body_len + data.len()]
                    .copy_from_slice(&data);
                body_len += data.len();
            }
        }
        Ok(())
    };
    match tokio::time::timeout(gw.timeout, read_body).await {
        Ok(Ok(())) => {}
        Ok(Err(response)) => return response,
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms",
                    gw.timeout.as_millis()
                ),
            )
        }
    }
    envelope::write_header(lease.space(), 0, meta.len(), body_len);
    lease.set_len(body_at + body_len);

    let d = Trail::start(request_id, route, runtime.me().instance).to(Destination::Next(first));
    if let Err(e) = runtime.send_lease(lease, d) {
        return error(
            StatusCode::BAD_GATEWAY,
            format!("sending into the chain: {e}"),
        );
    }

    let mut retried = false;
    loop {
        let failure = match answer.outcome(gw.timeout).await {
            Ok(message) => return to_http(message),
            Err(failure) => failure,
        };
        match failure {
            Failure::Timeout { .. } => {
                let reclaimed = runtime.reclaim_in_transit(request_id);
                debug!(gw.log, "request timed out"; "request" => request_id, "reclaimed" => reclaimed);
            }
            // An instance may have left between the router's choice and its delivery; one
            // retry picks among those that remain.
            Failure::Refused {
                function,
                reason: Some(RefuseReason::NoDestination),
                lease: Some(lease),
            } if !retried => {
                retried = true;
                answer.reopen();
                if runtime.send_lease(lease, d).is_ok() {
                    continue;
                }
                return chain_failed(
                    gw,
                    &Failure::Refused {
                        function,
                        reason: Some(RefuseReason::NoDestination),
                        lease: None,
                    },
                );
            }
            _ => {}
        }
        return chain_failed(gw, &failure);
    }
}

/// The answer to a request the chain did not answer with a message. Back-pressure and
/// exhaustion (503) tell the client to retry after a second.
fn chain_failed(gw: &Gateway, failure: &Failure) -> Response<Body> {
    let status =
        StatusCode::from_u16(failure.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = error(status, failure.http_text(|f| gw.name_of(f)));
    if failure.retry_after() {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn too_large(room: usize) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the {room} bytes a pool buffer holds"),
    )
}

/// The body of a reply, served from the pool buffer; the buffer is freed when hyper is done.
struct PoolBody(Message);

impl AsRef<[u8]> for PoolBody {
    fn as_ref(&self) -> &[u8] {
        self.0.body()
    }
}

fn to_http(message: Message) -> Response<Body> {
    let Ok(status) = StatusCode::from_u16(message.status()) else {
        return error(
            StatusCode::BAD_GATEWAY,
            format!(
                "the chain answered with invalid status {}",
                message.status()
            ),
        );
    };
    let headers = reply_headers(&message);
    let mut r = Response::new(Full::new(Bytes::from_owner(PoolBody(message))));
    *r.status_mut() = status;
    for (name, value) in headers {
        r.headers_mut().append(name, value);
    }
    r
}

fn reply_headers(message: &Message) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (k, v) in message.headers() {
        if HOP_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(k)) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            out.push((name, value));
        }
    }
    out
}
