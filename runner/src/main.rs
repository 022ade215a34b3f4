//! `spright`: run and inspect chains.
//!
//! - `spright up <chain file>`: run a chain locally until Ctrl-C;
//! - `spright check <chain file>`: validate a chain file;
//! - `spright status <chain>`: instances and router counters of a running chain.

use anyhow::Context;
use clap::{Parser, Subcommand};
use spright_core::chain::{Chain, RoutingMode};
use spright_core::logging::{self, LogFormat};
use spright_core::manifest::Manifest;
use spright_runner::{up, UpOptions};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "spright: serverless function chains over shared memory and eBPF"
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a chain locally: pool-manager, gateway and functions, until Ctrl-C.
    Up {
        /// The chain file (YAML).
        chain: PathBuf,
        /// Routing mode, overriding the chain file: sockmap (kernel), user or poll (busy-polled
        /// rings, D-SPRIGHT).
        #[arg(long)]
        routing: Option<RoutingMode>,
        /// Gateway listen address, overriding the chain file.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Parent of the per-chain runtime directory.
        #[arg(long, default_value = spright_core::manifest::DEFAULT_RUNTIME_ROOT)]
        runtime_root: PathBuf,
        /// Directory for the pool file.
        #[arg(long, default_value = "/dev/shm")]
        pool_dir: PathBuf,
        /// Do not restart functions, the gateway or the pool-manager when they exit (the
        /// gateway's or the pool-manager's exit then ends `spright up`).
        #[arg(long)]
        no_restart: bool,
        /// Seconds the parts have to come up.
        #[arg(long, default_value_t = 20)]
        ready_timeout: u64,
        /// Log as text or json.
        #[arg(long, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validate a chain file and print what it defines.
    Check { chain: PathBuf },
    /// Show a running chain's instances and router counters.
    Status {
        /// The chain's name, or `<chain>@<replica>` for one replica of several on this node.
        chain: String,
        #[arg(long, default_value = spright_core::manifest::DEFAULT_RUNTIME_ROOT)]
        runtime_root: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Up {
            chain,
            routing,
            listen,
            runtime_root,
            pool_dir,
            no_restart,
            ready_timeout,
            log_format,
        } => {
            let log = logging::logger("spright", log_format);
            let mut opts = UpOptions::new(chain);
            opts.routing = routing;
            opts.listen = listen;
            opts.runtime_root = runtime_root;
            opts.pool_dir = pool_dir;
            opts.restart = !no_restart;
            opts.log_format = log_format;
            opts.ready_timeout = Duration::from_secs(ready_timeout);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // The handlers go in before anything starts: a Ctrl-C right after the banner stops
            // the chain cleanly instead of killing the runner.
            let result = runtime
                .block_on(async { up(opts, log.clone(), spright_core::signals::shutdown()).await });
            drop(log);
            result
        }
        Cmd::Check { chain } => {
            let c = Chain::load(&chain)?;
            println!(
                "{}: chain {} is valid: {} functions, {} routes, {} x {} byte buffers, routing {}",
                chain.display(),
                c.name,
                c.functions.len(),
                c.routes.len(),
                c.pool.buffers,
                c.pool.buffer_size,
                c.routing
            );
            Ok(())
        }
        Cmd::Status {
            chain,
            runtime_root,
        } => status(&runtime_root, &chain),
    }
}

fn status(runtime_root: &std::path::Path, chain: &str) -> anyhow::Result<()> {
    let key = spright_core::manifest::ChainKey::parse(chain).map_err(anyhow::Error::msg)?;
    let manifest = Manifest::load(runtime_root, &key)?;
    let stats =
        spright_core::protocol::query_stats(&manifest.control_socket, Duration::from_secs(2))
            .with_context(|| format!("asking the pool-manager (pid {})", manifest.pid))?;
    let mut out = String::new();
    writeln!(
        out,
        "chain {} (routing {}, pool-manager pid {})",
        manifest.key(),
        manifest.routing,
        manifest.pid
    )?;
    if let Ok(pool) = spright_core::Pool::open(&manifest.pool.path) {
        let s = pool.stats();
        writeln!(
            out,
            "pool {}: {} buffers, {} free, {} in transit, {} held",
            manifest.pool.path.display(),
            s.total,
            s.free,
            s.in_transit,
            s.held
        )?;
    }
    writeln!(
        out,
        "{:<16} {:>4} {:>10} {:>10} {:>8} {:>7}  pids",
        "function", "inst", "sent", "received", "refused", "queued"
    )?;
    for f in &stats.functions {
        let pids: Vec<String> = f.pids.iter().map(u32::to_string).collect();
        writeln!(
            out,
            "{:<16} {:>4} {:>10} {:>10} {:>8} {:>7}  {}",
            f.name,
            f.instances,
            f.sent,
            f.received,
            f.refused,
            f.queued,
            pids.join(",")
        )?;
    }
    if stats.functions.iter().any(|f| f.load.is_some()) {
        writeln!(
            out,
            "{:<16} {:>9} {:>10} {:>17} {:>17}",
            "load", "in flight", "completed", "concurrency s/p", "requests/s s/p"
        )?;
        for f in &stats.functions {
            if let Some(l) = f.load {
                writeln!(
                    out,
                    "{:<16} {:>9} {:>10} {:>8.2}/{:<8.2} {:>8.1}/{:<8.1}",
                    f.name,
                    l.in_flight,
                    l.completed,
                    l.stable_concurrency,
                    l.panic_concurrency,
                    l.stable_requests_per_second,
                    l.panic_requests_per_second
                )?;
            }
        }
    }
    for t in &stats.eproxy {
        writeln!(
            out,
            "eproxy {} {:<3} {:>10} packets {:>12} bytes",
            t.interface, t.direction, t.packets, t.bytes
        )?;
    }
    for t in &stats.function_eproxy {
        let c = &t.counters;
        writeln!(
            out,
            "eproxy {} container {}/{} {} {:<3} {:>10} packets {:>12} bytes",
            t.function, t.namespace, t.container, c.interface, c.direction, c.packets, c.bytes
        )?;
    }
    print_all(&out)
}

/// Writes `text` to stdout; a reader that stopped reading (`spright status | head`) is not an
/// error.
fn print_all(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
