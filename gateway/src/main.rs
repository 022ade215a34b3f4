//! `spright-gateway --chain <name>`: the HTTP gateway of a running chain.

use anyhow::Context;
use clap::Parser;
use spright_core::logging::{self, LogFormat};
use spright_core::manifest::{ChainKey, Manifest, ManifestError};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(version, about = "HTTP gateway of a spright chain")]
struct Args {
    /// The chain to serve (its pool-manager must be running).
    #[arg(long)]
    chain: String,
    /// Which replica of the chain to serve, when several run on one node (the pool-manager's
    /// --replica).
    #[arg(long)]
    replica: Option<String>,
    /// Parent of the per-chain runtime directory.
    #[arg(long, default_value = spright_core::manifest::DEFAULT_RUNTIME_ROOT)]
    runtime_root: PathBuf,
    /// Listen address, overriding the chain file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Seconds to wait for the chain's manifest to appear.
    #[arg(long, default_value_t = 30)]
    wait: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Log as text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log = logging::logger("gateway", args.log_format);
    let key = match &args.replica {
        Some(id) => ChainKey::replica(&args.chain, id),
        None => ChainKey::parse(&args.chain),
    }
    .map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let manifest = loop {
        match Manifest::load(&args.runtime_root, &key) {
            Ok(m) => break m,
            Err(ManifestError::Missing { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(e.into()),
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let bound = spright_gateway::bind(
            spright_gateway::Config {
                manifest,
                listen: args.listen,
            },
            log.clone(),
        )
        .await?;
        println!("spright gateway listening on http://{}", bound.local_addr());
        bound.serve(spright_core::signals::shutdown()).await
    });
    if let Err(e) = &result {
        slog::error!(log, "gateway failed"; "error" => format!("{e:#}"));
    }
    drop(log);
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}
