//! Concurrent load over keep-alive connections, recording every request's outcome and times.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

/// One request's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: Instant,
    pub finished: Instant,
    /// The status, or 0 if the connection failed.
    pub status: u16,
    pub body: Bytes,
}

/// What to send.
#[derive(Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub method: &'static str,
    pub path: String,
    /// The body of request `i`.
    pub body: Arc<dyn Fn(usize) -> Vec<u8> + Send + Sync>,
    pub connections: usize,
    /// Total requests; with `until` set, a cap.
    pub requests: usize,
    /// Stop early when this turns true.
    pub until: Option<Arc<AtomicBool>>,
    /// Counts finished requests (to watch progress).
    pub completed: Arc<AtomicUsize>,
}

impl Load {
    pub fn new(
        addr: SocketAddr,
        method: &'static str,
        path: &str,
        body: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    ) -> Load {
        Load {
            addr,
            method,
            path: path.to_owned(),
            body: Arc::new(body),
            connections: 1,
            requests: 1,
            until: None,
            completed: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// Runs the load and returns every outcome, with the index of the request it was.
pub fn run(load: Load) -> Vec<(usize, Outcome)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..load.connections {
            let load = load.clone();
            let next = next.clone();
            tasks.push(tokio::spawn(async move { connection(load, next).await }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_by_key(|(i, _)| *i);
        all
    })
}

/// How long one request may take before the load records it as failed (status 0).
const REQUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

async fn connect(addr: SocketAddr) -> Option<http1::SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn connection(load: Load, next: Arc<AtomicUsize>) -> Vec<(usize, Outcome)> {
    let mut out = Vec::new();
    let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
    loop {
        if load
            .until
            .as_ref()
            .is_some_and(|u| u.load(Ordering::Relaxed))
        {
            break;
        }
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= load.requests {
            break;
        }
        // A connection the server closed between requests (`Connection: close`, a draining
        // gateway) is replaced before sending, as any client's connection pool does: no
        // request was lost on it.
        if let Some(s) = sender.as_mut() {
            if s.ready().await.is_err() {
                sender = None;
            }
        }
        if sender.is_none() {
            sender = tokio::time::timeout(REQUEST_LIMIT, connect(load.addr))
                .await
                .ok()
                .flatten();
        }
        let started = Instant::now();
        let (status, body) = match sender.as_mut() {
            None => (0, Bytes::new()),
            Some(s) => {
                let req = hyper::Request::builder()
                    .method(load.method)
                    .uri(&load.path)
                    .header("host", "test")
                    .body(Full::new(Bytes::from((load.body)(i))))
                    .unwrap();
                let exchange = async {
                    match s.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            match resp.into_body().collect().await {
                                Ok(b) => (status, b.to_bytes()),
                                Err(_) => (0, Bytes::new()),
                            }
                        }
                        Err(_) => (0, Bytes::new()),
                    }
                };
                // A hung request is a finding to report, not a wait that never ends.
                tokio::time::timeout(REQUEST_LIMIT, exchange)
                    .await
                    .unwrap_or_else(|_| {
                        (
                            0,
                            Bytes::from(format!("no answer within {REQUEST_LIMIT:?}")),
                        )
                    })
            }
        };
        if status == 0 {
            sender = None; // reconnect
        }
        load.completed.fetch_add(1, Ordering::Relaxed);
        out.push((
            i,
            Outcome {
                started,
                finished: Instant::now(),
                status,
                body,
            },
        ));
    }
    out
}

/// Checks load that ran across a function being killed (at `killed_at`) and coming back (at
/// `restarted_at`): every answer is the right body (`expected(i)`) or a 502; every request in
/// flight at the kill finished within a second of it; there was at least one 502; and requests
/// were served again after the restart.
pub fn assert_failed_fast_and_recovered(
    what: &str,
    outcomes: &[(usize, Outcome)],
    expected: impl Fn(usize) -> Vec<u8>,
    killed_at: Instant,
    restarted_at: Instant,
) {
    let mut failed = 0;
    for (i, o) in outcomes {
        match o.status {
            200 => assert_eq!(
                o.body.as_ref(),
                expected(*i).as_slice(),
                "{what}: request {i}"
            ),
            502 => failed += 1,
            other => panic!(
                "{what}: request {i} got {other}: {}",
                String::from_utf8_lossy(&o.body)
            ),
        }
        if o.started < killed_at {
            assert!(
                o.finished < killed_at + std::time::Duration::from_secs(1),
                "{what}: request {i}, in flight at the kill, took {:?} after it to finish",
                o.finished - killed_at
            );
        }
    }
    assert!(failed > 0, "{what}: no 502 while the function was down");
    assert!(
        outcomes
            .iter()
            .any(|(_, o)| o.started > restarted_at && o.status == 200),
        "{what}: nothing served after the function came back"
    );
}

/// Checks that every request was answered 200 with exactly `expected(i)`.
pub fn assert_all_answered(
    what: &str,
    outcomes: &[(usize, Outcome)],
    expected: impl Fn(usize) -> Vec<u8>,
) {
    for (i, o) in outcomes {
        assert_eq!(
            o.status,
            200,
            "{what}: request {i}: {}",
            String::from_utf8_lossy(&o.body)
        );
        assert_eq!(
            o.body.as_ref(),
            expected(*i).as_slice(),
            "{what}: request {i} got a wrong body"
        );
    }
}
