//! `spright-pool-manager <chain file>`: runs one chain's pool-manager until SIGINT or SIGTERM.

use anyhow::Context;
use clap::Parser;
use spright_core::chain::{Chain, RoutingMode};
use spright_core::logging::{self, LogFormat};
use spright_pool_manager::{run, Locations, Options};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    version,
    about = "Per-chain pool-manager: pool, SPROXY and function registration"
)]
struct Args {
    /// The chain file (YAML).
    chain: PathBuf,
    /// Which replica of the chain this is, when several run on one node: names the chain's
    /// runtime directory, pool and pins `<chain>@<replica>` (in Kubernetes, the pod's UID).
    #[arg(long)]
    replica: Option<String>,
    /// Routing mode, overriding the chain file: sockmap (kernel, needs BPF), user or poll.
    #[arg(long)]
    routing: Option<RoutingMode>,
    /// Parent of the per-chain runtime directory.
    #[arg(long, default_value = spright_core::manifest::DEFAULT_RUNTIME_ROOT)]
    runtime_root: PathBuf,
    /// Directory for the pool file (tmpfs or hugetlbfs).
    #[arg(long, default_value = "/dev/shm")]
    pool_dir: PathBuf,
    /// Parent directory for SPROXY's map pins, in bpffs.
    #[arg(long, default_value = "/sys/fs/bpf/spright")]
    pin_root: PathBuf,
    /// Do not pin SPROXY's maps.
    #[arg(long)]
    no_pin: bool,
    /// Where the gateway really listens, when not at the chain file's gateway.listen (EPROXY
    /// counts its traffic there).
    #[arg(long)]
    gateway_listen: Option<std::net::SocketAddr>,
    /// Keep capabilities after setup (for debugging).
    #[arg(long)]
    keep_privileges: bool,
    /// Log as text or json.
    #[arg(long, default_value = "text")]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let chain = Chain::load(&args.chain)?;
    let log = logging::logger("pool-manager", args.log_format);
    let mut opts = Options::new(chain);
    opts.replica = args.replica;
    opts.routing = args.routing;
    opts.drop_privileges = !args.keep_privileges;
    opts.gateway_listen = args.gateway_listen;
    opts.locations = Locations {
        runtime_root: args.runtime_root,
        pool_dir: args.pool_dir,
        pin_root: (!args.no_pin).then_some(args.pin_root),
    };
    let runtime = match opts.routing() {
        // Idle most of the time: one thread is plenty.
        RoutingMode::Sockmap | RoutingMode::Poll => tokio::runtime::Builder::new_current_thread(),
        // The relay is on every request's path.
        RoutingMode::User => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .context("starting the async runtime")?;
    let result =
        runtime.block_on(async { run(opts, log.clone(), spright_core::signals::shutdown()).await });
    if let Err(e) = &result {
        slog::error!(log, "pool-manager failed"; "error" => format!("{e:#}"));
    }
    drop(log);
    result
}
