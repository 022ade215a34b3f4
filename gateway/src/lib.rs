//! spright's gateway: the chain's HTTP front door.
//!
//! It registers with the chain's pool-manager as function 0, then serves HTTP/1.1 (keep-alive)
//! and h2c. Each request is routed by method and longest path prefix, written once into a pool
//! buffer and sent as a descriptor to the route's first function; the answer comes back as a
//! descriptor and its body is served from the pool without a copy.

mod http;
mod metrics;
mod routes;

pub use routes::RouteTable;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use metrics::Metrics;
use slog::{info, warn, Logger};
use spright_core::ids::FnId;
use spright_core::manifest::Manifest;
use spright_sdk::runtime::{self, Runtime};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Longest a client may take to send request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (line and headers) hyper buffers; beyond it the client gets 431.
const MAX_HEAD: usize = 64 * 1024;

pub struct Gateway {
    routes: RouteTable,
    runtime: Arc<Runtime>,
    metrics: Metrics,
    timeout: Duration,
    manifest: Manifest,
    log: Logger,
}

impl Gateway {
    fn name_of(&self, f: FnId) -> &str {
        self.runtime.name_of(f)
    }

    async fn metrics_response(&self) -> hyper::Response<http::Body> {
        match router_stats(&self.manifest).await {
            Ok(stats) => *self.metrics.router.lock().unwrap() = Some(stats),
            Err(e) => warn!(self.log, "router stats unavailable"; "error" => %e),
        }
        let mut r = hyper::Response::new(http::Body::from(self.metrics.render()));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        r
    }
}

/// Asks the pool-manager for the router's counters.
async fn router_stats(manifest: &Manifest) -> anyhow::Result<spright_core::protocol::RouterStats> {
    let socket = manifest.control_socket.clone();
    let stats = tokio::task::spawn_blocking(move || {
        spright_core::protocol::query_stats(&socket, Duration::from_secs(1))
    })
    .await?
    .context("querying the pool-manager's control socket")?;
    Ok(stats)
}

/// How to run a gateway.
pub struct Config {
    pub manifest: Manifest,
    /// Overrides the chain file's listen address.
    pub listen: Option<SocketAddr>,
    /// A listening socket to serve instead of binding one (handed down by a supervisor that
    /// keeps it open across restarts, so clients queue rather than get refused meanwhile).
    pub listener: Option<std::net::TcpListener>,
}

/// A bound gateway, before it serves.
pub struct Bound {
    gateway: Arc<Gateway>,
    listener: TcpListener,
    inbound: runtime::Receiver,
    events: runtime::Events,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown` resolves or the pool-manager goes away. On `shutdown` the gateway
    /// drains: it stops accepting, closes idle keep-alive connections, and answers the requests
    /// it already took (each `Connection: close`) for up to its timeout and a second.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Bound {
            gateway,
            listener,
            mut inbound,
            events: mut pool_manager_events,
        } = self;
        // The gateway serves no requests: the runtime answers waits and rejects the rest.
        // Each request waits for its head and its answer; neither wait wakes the driver.
        gateway.runtime.anchor_timers(Some(HEADER_TIMEOUT));
        let runtime = gateway.runtime.clone();
        let mut receive = tokio::spawn(async move { runtime.receive(&mut inbound, |_| {}).await });
        let runtime = gateway.runtime.clone();
        let mut events =
            tokio::spawn(async move { runtime.follow(&mut pool_manager_events, |_| {}).await });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .keep_alive(true);
        let builder = Arc::new(builder);
        let connections = GracefulShutdown::new();
        tokio::pin!(shutdown);
        let result = loop {
            tokio::select! {
                _ = &mut shutdown => break Ok(()),
                _ = &mut events => break Err(anyhow::anyhow!("the pool-manager went away")),
                _ = &mut receive => break Err(anyhow::anyhow!("the gateway's data socket closed")),
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            warn!(gateway.log, "accept failed"; "error" => %e);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let gw = gateway.clone();
                    let builder = builder.clone();
                    let watcher = connections.watcher();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| http::handle(gw.clone(), req));
                        let connection = builder.serve_connection(TokioIo::new(stream), service);
                        let _ = watcher.watch(connection).await;
                    });
                }
            }
        };
        drop(listener);
        if result.is_ok() {
            drain(&gateway, connections).await;
        }
        receive.abort();
        events.abort();
        result
    }
}

/// How often a draining gateway looks at what it still has in flight.
const DRAIN_TICK: Duration = Duration::from_millis(100);

/// Asks every connection to finish (idle HTTP/1 connections close, busy ones after their
/// response, HTTP/2 ones get GOAWAY) and waits until they have, or until nothing has been in
/// flight in the chain for two ticks (a client may hold an idle HTTP/2 connection open for as
/// long as it likes), or for the gateway's timeout and a second at most.
async fn drain(gateway: &Gateway, connections: GracefulShutdown) {
    let open = connections.count();
    let limit = gateway.timeout + Duration::from_secs(1);
    let deadline = tokio::time::sleep(limit);
    let closed = connections.shutdown();
    tokio::pin!(deadline, closed);
    let mut idle_ticks = 0;
    loop {
        tokio::select! {
            _ = &mut closed => break,
            _ = &mut deadline => {
                warn!(gateway.log, "requests still in flight after draining; closing them";
                    "in_flight" => gateway.runtime.in_flight(), "drain" => ?limit);
                return;
            }
            _ = tokio::time::sleep(DRAIN_TICK) => {
                idle_ticks = if gateway.runtime.in_flight() == 0 { idle_ticks + 1 } else { 0 };
                if idle_ticks >= 2 {
                    break;
                }
            }
        }
    }
    if open > 0 {
        info!(gateway.log, "drained"; "connections" => open);
    }
}

/// Registers with the chain as the gateway and binds the HTTP listener.
pub async fn bind(config: Config, log: Logger) -> anyhow::Result<Bound> {
    let manifest = config.manifest;
    let log = log.new(slog::o!("chain" => manifest.chain.clone()));
    let joined = Runtime::join(&manifest.gateway_socket, Some(&manifest.pool.path), &log)
        .await
        .context("registering with the chain's pool-manager")?;
    let listener = match config.listener {
        Some(inherited) => {
            inherited
                .set_nonblocking(true)
                .context("the inherited listening socket")?;
            TcpListener::from_std(inherited).context("the inherited listening socket")?
        }
        None => {
            let listen: SocketAddr = match config.listen {
                Some(a) => a,
                None => manifest
                    .spec
                    .listen
                    .parse()
                    .context("the chain's gateway.listen")?,
            };
            TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?
        }
    };
    let log = joined.log;
    let runtime = Arc::new(joined.runtime);
    let metrics = Metrics::new(runtime.clone());
    info!(log, "gateway listening"; "address" => %listener.local_addr()?, "routing" => %manifest.routing);
    let gateway = Arc::new(Gateway {
        routes: RouteTable::new(&manifest.spec.routes),
        runtime,
        metrics,
        timeout: Duration::from_millis(manifest.spec.timeout_ms),
        manifest,
        log,
    });
    Ok(Bound {
        gateway,
        listener,
        inbound: joined.inbound,
        events: joined.events,
    })
}
