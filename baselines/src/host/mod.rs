//! Hosting one [`Service`] the way the environment asks (see the crate docs for the choices).
//!
//! Environment:
//! - `SPRIGHT_HOST`: `spright` (default), `http` or `grpc`;
//! - `SPRIGHT_LISTEN` (http, grpc): `host:port` to serve on;
//! - `SPRIGHT_THREADS`: tokio worker threads, default 1;
//! - `SPRIGHT_GATEWAY_URL` (http): where calls to other functions go, as
//!   `POST {url}/_fn/<service>/rpc/<Method>`;
//! - `SPRIGHT_PEERS` (grpc): `name=host:port,...`, the functions this one may call;
//! - `SPRIGHT_HTTP_LISTEN` (grpc, optional): also serve outside HTTP requests there (whenever
//!   set: a service without an HTTP entry answers them 404, naming itself).

mod env;
mod grpc;
mod http;

pub use env::{parse_peers, Env};
pub use grpc::RawCodec;

use spright_sdk::rpc::Service;
use std::net::SocketAddr;

/// Why a function could not be hosted.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0} is not set")]
    MissingEnv(&'static str),
    #[error("{var}={value:?}: {problem}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        problem: String,
    },
    #[error("cannot listen on {addr} ({var}): {source}")]
    Bind {
        var: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("gRPC server on {addr}: {message}")]
    Grpc { addr: SocketAddr, message: String },
    #[error(transparent)]
    Spright(#[from] spright_sdk::SdkError),
}

/// Hosts `service` as `SPRIGHT_HOST` says until SIGTERM or SIGINT.
pub fn run(service: Service) -> anyhow::Result<()> {
    let name = service.name().to_owned();
    host(service).map_err(|e| anyhow::Error::new(e).context(format!("function {name}")))
}

fn host(service: Service) -> Result<(), HostError> {
    let env = Env::from_env()?;
    match env.host {
        env::Host::Spright => Ok(spright_sdk::run(service)?),
        env::Host::Http => on_runtime(env.threads, http::serve(service, env)),
        env::Host::Grpc => on_runtime(env.threads, grpc::serve(service, env)),
    }
}

fn on_runtime(
    threads: usize,
    serve: impl std::future::Future<Output = Result<(), HostError>>,
) -> Result<(), HostError> {
    // One thread means one thread, as the spright SDK does it: a current-thread runtime, so
    // that the data planes compared run their functions alike.
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(HostError::Runtime)?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = serve => r,
            _ = spright_core::signals::shutdown() => Ok(()),
        }
    });
    // Connections still open are cut rather than waited for: the caller asked us to stop.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

async fn bind(var: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, HostError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HostError::Bind { var, addr, source })
}
