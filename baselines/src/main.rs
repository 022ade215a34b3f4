//! `spright-baseline`: runs a chain file the way the systems spright is compared with would.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use spright_baselines::launch::{self, Options};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Run a chain file as Knative-style or gRPC-style services, for comparison")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Each function behind an nginx sidecar (queue-proxy) and an activator-like gateway;
    /// calls between functions go through the gateway.
    Knative {
        #[command(flatten)]
        common: Common,
        /// Stop a function (process and sidecar) after this long without requests, and start
        /// it again on the next one; functions start stopped ("2s", "300ms").
        #[arg(long, value_parser = duration)]
        scale_to_zero: Option<Duration>,
        /// Worker threads of the gateway.
        #[arg(long, default_value_t = 2)]
        gateway_threads: usize,
    },
    /// Each function a gRPC server calling its peers directly; outside requests go straight to
    /// the entry function's HTTP listener. RPC-style chains with one entry function only.
    Grpc {
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Args)]
struct Common {
    /// The chain file.
    chain: PathBuf,
    /// Where outside requests arrive.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Worker threads of every function (SPRIGHT_THREADS).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// How long every part may take to answer at launch.
    #[arg(long, default_value = "20s", value_parser = duration)]
    ready_timeout: Duration,
}

impl Common {
    fn options(&self) -> anyhow::Result<Options> {
        anyhow::ensure!(self.threads > 0, "--threads must be at least 1");
        Ok(Options {
            chain: self.chain.clone(),
            listen: self.listen,
            threads: self.threads,
            ready_timeout: self.ready_timeout,
        })
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    spright_core::chain::parse_millis(s).map(Duration::from_millis)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (threads, options) = match &cli.mode {
        Mode::Knative {
            common,
            gateway_threads,
            ..
        } => ((*gateway_threads).max(1), common.options()?),
        // The launcher only watches its children here.
        Mode::Grpc { common } => (1, common.options()?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let chain = options.chain.display().to_string();
    let result = runtime.block_on(async {
        match &cli.mode {
            Mode::Knative { scale_to_zero, .. } => {
                launch::knative::run(&options, *scale_to_zero).await
            }
            Mode::Grpc { .. } => launch::grpc::run(&options).await,
        }
    });
    runtime.shutdown_timeout(Duration::from_millis(500));
    result.with_context(|| format!("spright-baseline {chain}"))
}
