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
    #[arg(long, conflicts_with = "listen_fd")]
    listen: Option<SocketAddr>,
    /// Serve an inherited listening TCP socket, this file descriptor, instead of binding one
    /// (what `spright up` does, so that the address survives a gateway restart).
    #[arg(long)]
    listen_fd: Option<i32>,
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
                listener: args.listen_fd.map(inherited_listener).transpose()?,
            },
            log.clone(),
        )
        .await?;
        // Handlers first: whoever reads the line below may stop the gateway at once.
        let stop = spright_core::signals::shutdown();
        println!("spright gateway listening on http://{}", bound.local_addr());
        bound.serve(stop).await
    });
    if let Err(e) = &result {
        slog::error!(log, "gateway failed"; "error" => format!("{e:#}"));
    }
    drop(log);
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Takes ownership of listening socket `fd`, checking that it is one.
fn inherited_listener(fd: i32) -> anyhow::Result<std::net::TcpListener> {
    use std::os::fd::FromRawFd;
    let mut accepting: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `accepting`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut accepting as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 || accepting == 0 {
        anyhow::bail!(
            "--listen-fd {fd} is not a listening socket ({})",
            if rc != 0 {
                std::io::Error::last_os_error().to_string()
            } else {
                "not listening".into()
            }
        );
    }
    // SAFETY: the fd was handed to this process to own, and is checked to be a listening
    // socket; nothing else in the process uses it.
    Ok(unsafe { std::net::TcpListener::from_raw_fd(fd) })
}
