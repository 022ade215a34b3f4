//! The embedded runner: `spright up <chain file>` starts a chain's pool-manager, gateway and
//! functions as local processes on the same data path containers use, restarts functions that
//! exit, and on Ctrl-C stops everything in order and checks that the pool, the map pins and the
//! sockets are gone.

mod binaries;
mod process;
mod scaling;

pub use binaries::Binaries;

use anyhow::{bail, Context};
use slog::{info, warn, Logger};
use spright_core::chain::{Chain, RoutingMode};
use spright_core::env;
use spright_core::logging::LogFormat;
use spright_core::manifest::{ChainKey, Manifest, ManifestError};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How to run a chain.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub chain_file: PathBuf,
    pub routing: Option<RoutingMode>,
    pub runtime_root: PathBuf,
    pub pool_dir: PathBuf,
    pub pin_root: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    /// Restart functions that exit.
    pub restart: bool,
    pub log_format: LogFormat,
    /// How long the parts have to come up.
    pub ready_timeout: Duration,
}

impl UpOptions {
    pub fn new(chain_file: PathBuf) -> UpOptions {
        UpOptions {
            chain_file,
            routing: None,
            runtime_root: PathBuf::from(spright_core::manifest::DEFAULT_RUNTIME_ROOT),
            pool_dir: PathBuf::from("/dev/shm"),
            pin_root: Some(PathBuf::from("/sys/fs/bpf/spright")),
            listen: None,
            restart: true,
            log_format: LogFormat::Text,
            ready_timeout: Duration::from_secs(20),
        }
    }
}

const STOP_GRACE: Duration = Duration::from_secs(5);

/// The descriptor number the gateway finds its listening socket at.
const INHERITED_LISTENER: i32 = 3;

/// Runs the chain until `shutdown` resolves or its pool-manager or gateway fails.
pub async fn up(
    opts: UpOptions,
    log: Logger,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let chain = Chain::load(&opts.chain_file)?;
    let routing = opts.routing.unwrap_or(chain.routing);
    let bins = Binaries::locate();
    let chain_dir = binaries::chain_dir(&opts.chain_file)?;
    // Resolve every command before starting anything, so a typo fails fast. A function
    // without a command is left to the user (a debugger, a container): it registers itself.
    let mut programs = Vec::new();
    for f in &chain.functions {
        programs.push(match &f.command {
            Some(cmd) => Some(bins.program(&cmd[0], &chain_dir)?),
            None => None,
        });
    }

    // The runner holds the gateway's listening socket for the chain's whole life and hands it
    // down: a restarted gateway serves the same address, and clients that connect while it is
    // down wait in the backlog instead of being refused.
    let listen: SocketAddr = match opts.listen {
        Some(a) => a,
        None => chain.listen.parse().context("the chain's gateway.listen")?,
    };
    let listener =
        std::net::TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;

    let gateway_address = listener
        .local_addr()
        .context("the gateway's listening socket")?;
    let mut pool_manager = start_pool_manager(&opts, &bins, routing, gateway_address)?;
    let manifest = match wait_manifest(&opts, &chain, &mut pool_manager).await {
        Ok(m) => m,
        Err(e) => {
            process::stop(&mut pool_manager, STOP_GRACE).await;
            return Err(e);
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let result = run_chain(
        &opts,
        &chain,
        &manifest,
        &bins,
        &programs,
        &mut pool_manager,
        listener,
        stop_tx,
        stop_rx,
        &log,
        shutdown,
    )
    .await;

    info!(log, "stopping the pool-manager");
    process::stop(&mut pool_manager, STOP_GRACE).await;
    check_cleanup(&opts, &chain, &log);
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_chain(
    opts: &UpOptions,
    chain: &Chain,
    manifest: &Manifest,
    bins: &Binaries,
    programs: &[Option<PathBuf>],
    pool_manager: &mut Child,
    listener: std::net::TcpListener,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    log: &Logger,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (mut gateway, address) =
        start_gateway(opts, bins, chain, &listener, opts.ready_timeout).await?;

    let mut functions = tokio::task::JoinSet::new();
    let mut scaled = Vec::new();
    for (f, program) in chain.functions.iter().zip(programs) {
        let Some(program) = program else {
            warn!(log, "function has no command: not started; register it with SPRIGHT_SOCKET";
                "function" => &f.name,
                "socket" => %manifest.function(&f.name).expect("in manifest").socket.display());
            continue;
        };
        let grace = Duration::from_millis(chain.timeout_ms) + STOP_GRACE;
        for instance in 0..f.instances {
            functions.spawn(supervise_function(
                function_command(opts, chain, manifest, f, program),
                f.name.clone(),
                instance,
                opts.restart,
                grace,
                stop_rx.clone(),
                log.clone(),
            ));
        }
        // Above its minimum, a scaled function's instances come and go with the load.
        if let Some(spec) = f.scaling {
            let (name, id) = (f.name.clone(), f.id);
            let (opts, chain, manifest, f, program, log) = (
                opts.clone(),
                chain.clone(),
                manifest.clone(),
                f.clone(),
                program.clone(),
                log.clone(),
            );
            let start = move |instance: u16| {
                let (stop_tx, stop_rx) = watch::channel(false);
                let task = tokio::spawn(supervise_function(
                    function_command(&opts, &chain, &manifest, &f, &program),
                    f.name.clone(),
                    instance,
                    opts.restart,
                    grace,
                    stop_rx,
                    log.clone(),
                ));
                scaling::Extra {
                    stop: stop_tx,
                    task,
                }
            };
            scaled.push(scaling::ScaledFunction::new(
                name,
                id,
                spec,
                Box::new(start),
            ));
        }
    }
    if !scaled.is_empty() {
        functions.spawn(scaling::follow(
            manifest.control_socket.clone(),
            scaled,
            stop_rx.clone(),
            log.clone(),
        ));
    }

    let ready = wait_registered(
        manifest,
        chain,
        opts.ready_timeout,
        pool_manager,
        &mut gateway,
    )
    .await;
    if let Err(e) = ready {
        let _ = stop_tx.send(true);
        while functions.join_next().await.is_some() {}
        process::stop(&mut gateway, STOP_GRACE).await;
        return Err(e);
    }
    print_banner(chain, manifest, address);

    tokio::pin!(shutdown);
    let describe = |status: std::io::Result<std::process::ExitStatus>| {
        status
            .map(|s| process::describe(&s))
            .unwrap_or_else(|e| e.to_string())
    };
    // Until told to stop: a pool-manager or gateway that dies is started again (unless
    // --no-restart). While the pool-manager is down the chain's requests fail (its functions
    // and gateway lose their registration, exit and are restarted once it is back); while the
    // gateway is down new connections wait in the listener's backlog.
    // No delay for a first restart; then doubling while they keep dying.
    let mut backoff = process::Backoff::new(Duration::ZERO);
    let result = loop {
        let exited = tokio::select! {
            _ = &mut shutdown => break Ok(()),
            status = pool_manager.wait() => ("pool-manager", describe(status)),
            status = gateway.wait() => ("gateway", describe(status)),
        };
        if !opts.restart {
            break Err(anyhow::anyhow!("the {} stopped ({})", exited.0, exited.1));
        }
        warn!(log, "a part of the chain exited; starting it again"; "part" => exited.0, "status" => &exited.1);
        // The gateway dies with its pool-manager: whichever exit was seen first, a dead
        // pool-manager comes back first, or the gateway would have nothing to register with.
        let restart = async {
            tokio::time::sleep(backoff.next()).await;
            if pool_manager.try_wait()?.is_some() {
                let address = listener.local_addr()?;
                *pool_manager =
                    restart_pool_manager(opts, bins, chain, manifest.routing, address).await?;
            }
            if gateway.try_wait()?.is_some() {
                gateway = restart_gateway(opts, bins, chain, &listener, log).await?;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            r = restart => if let Err(e) = r { break Err(e) },
        }
    };
    // No new connections from here on: they would wait in a backlog nobody serves.
    drop(listener);
    // The gateway first: it drains (answers the requests it took, which still need the
    // functions), then the functions stop.
    info!(log, "stopping the gateway, then the functions");
    let drain = Duration::from_millis(chain.timeout_ms) + STOP_GRACE;
    process::stop(&mut gateway, drain).await;
    let _ = stop_tx.send(true);
    while functions.join_next().await.is_some() {}
    result
}

/// Starts a pool-manager in place of one that died, and waits for its manifest. What the dead
/// one left (pool, pins, sockets) its successor clears as it starts.
async fn restart_pool_manager(
    opts: &UpOptions,
    bins: &Binaries,
    chain: &Chain,
    routing: RoutingMode,
    gateway: SocketAddr,
) -> anyhow::Result<Child> {
    let mut pool_manager = start_pool_manager(opts, bins, routing, gateway)?;
    match wait_manifest(opts, chain, &mut pool_manager).await {
        Ok(_) => Ok(pool_manager),
        Err(e) => {
            process::stop(&mut pool_manager, STOP_GRACE).await;
            Err(e.context("starting the pool-manager again"))
        }
    }
}

/// Starts the gateway again on the same listening socket, retrying (it cannot register while
/// the pool-manager is itself coming back) for up to the ready timeout.
async fn restart_gateway(
    opts: &UpOptions,
    bins: &Binaries,
    chain: &Chain,
    listener: &std::net::TcpListener,
    log: &Logger,
) -> anyhow::Result<Child> {
    let deadline = Instant::now() + opts.ready_timeout;
    let mut backoff = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match start_gateway(opts, bins, chain, listener, left).await {
            Ok((gateway, _)) => {
                info!(log, "gateway serving again");
                return Ok(gateway);
            }
            Err(e) if Instant::now() + backoff < deadline => {
                info!(log, "gateway not up yet; retrying"; "error" => format!("{e:#}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e.context("starting the gateway again")),
        }
    }
}

fn log_format_name(f: LogFormat) -> &'static str {
    match f {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    }
}

fn start_pool_manager(
    opts: &UpOptions,
    bins: &Binaries,
    routing: RoutingMode,
    gateway: SocketAddr,
) -> anyhow::Result<Child> {
    let program = bins.find("spright-pool-manager");
    let mut cmd = Command::new(&program);
    cmd.arg(&opts.chain_file)
        .arg("--routing")
        .arg(routing.to_string())
        .arg("--gateway-listen")
        .arg(gateway.to_string())
        .arg("--runtime-root")
        .arg(&opts.runtime_root)
        .arg("--pool-dir")
        .arg(&opts.pool_dir)
        .arg("--log-format")
        .arg(log_format_name(opts.log_format))
        .stdin(Stdio::null());
    match &opts.pin_root {
        Some(p) => cmd.arg("--pin-root").arg(p),
        None => cmd.arg("--no-pin"),
    };
    process::supervised(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("starting {}", program.display()))
}

async fn wait_manifest(
    opts: &UpOptions,
    chain: &Chain,
    pool_manager: &mut Child,
) -> anyhow::Result<Manifest> {
    let deadline = Instant::now() + opts.ready_timeout;
    loop {
        if let Some(status) = pool_manager.try_wait()? {
            bail!(
                "the pool-manager exited during setup ({})",
                process::describe(&status)
            );
        }
        match Manifest::load(&opts.runtime_root, &ChainKey::chain(&chain.name)) {
            // The manifest of a dead predecessor may linger until ours replaces it.
            Ok(m) if Some(m.pid) == pool_manager.id() => return Ok(m),
            Ok(_) | Err(ManifestError::Missing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() > deadline {
            bail!(
                "the pool-manager did not publish the chain within {:?}",
                opts.ready_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_gateway(
    opts: &UpOptions,
    bins: &Binaries,
    chain: &Chain,
    listener: &std::net::TcpListener,
    timeout: Duration,
) -> anyhow::Result<(Child, String)> {
    let program = bins.find("spright-gateway");
    let mut cmd = Command::new(&program);
    cmd.arg("--chain")
        .arg(&chain.name)
        .arg("--runtime-root")
        .arg(&opts.runtime_root)
        .arg("--log-format")
        .arg(log_format_name(opts.log_format))
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd.arg("--listen-fd").arg(INHERITED_LISTENER.to_string());
    process::supervised(&mut cmd);
    process::inherit_fd(&mut cmd, listener.as_raw_fd(), INHERITED_LISTENER);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(timeout, lines.next_line()).await;
    let address = match first {
        Ok(Ok(Some(line))) => line.rsplit(' ').next().unwrap_or_default().to_owned(),
        _ => {
            let status = process::stop(&mut child, STOP_GRACE).await;
            bail!(
                "the gateway did not start ({})",
                status
                    .map(|s| process::describe(&s))
                    .unwrap_or_else(|| "no answer".into())
            );
        }
    };
    // Keep draining its stdout so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, address))
}

/// Waits until every function has all its instances registered.
async fn wait_registered(
    manifest: &Manifest,
    chain: &Chain,
    timeout: Duration,
    pool_manager: &mut Child,
    gateway: &mut Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = pool_manager.try_wait()? {
            bail!("the pool-manager exited ({})", process::describe(&s));
        }
        if let Some(s) = gateway.try_wait()? {
            bail!("the gateway exited ({})", process::describe(&s));
        }
        let socket = manifest.control_socket.clone();
        let stats = tokio::task::spawn_blocking(move || {
            spright_core::protocol::query_stats(&socket, Duration::from_secs(1))
        })
        .await?;
        let missing: Vec<String> = match &stats {
            Ok(stats) => chain
                .functions
                .iter()
                .filter(|f| f.command.is_some())
                .filter_map(|f| {
                    let have = stats
                        .functions
                        .iter()
                        .find(|s| s.id == f.id)
                        .map(|s| s.instances)
                        .unwrap_or(0);
                    (have < f.instances).then(|| format!("{} ({have}/{})", f.name, f.instances))
                })
                .collect(),
            Err(e) => vec![format!("pool-manager stats: {e}")],
        };
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "functions did not register within {timeout:?}: {}",
                missing.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How `spright up` starts an instance of `f`.
fn function_command(
    opts: &UpOptions,
    chain: &Chain,
    manifest: &Manifest,
    f: &spright_core::chain::Function,
    program: &Path,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(&f.command.as_ref().expect("checked")[1..])
        .envs(&f.env)
        .env(env::CHAIN, &chain.name)
        .env(env::FUNCTION, &f.name)
        .env(
            env::SOCKET,
            manifest
                .function(&f.name)
                .expect("in manifest")
                .socket
                .clone(),
        )
        .env(env::POOL, &manifest.pool.path)
        .env(env::LOG_FORMAT, log_format_name(opts.log_format))
        .stdin(Stdio::null());
    process::supervised(&mut cmd);
    cmd
}

/// Runs one function instance, restarting it (with backoff) when it exits, until told to stop;
/// told, it has `grace` to finish what it has (it withdraws from load balancing first).
async fn supervise_function(
    mut cmd: Command,
    name: String,
    instance: u16,
    restart: bool,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
    log: Logger,
) {
    let mut backoff = process::Backoff::new(Duration::from_millis(100));
    loop {
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                warn!(log, "cannot start function"; "function" => &name, "error" => %e);
                if !restart {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next()) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
        };
        let pid = child.id().unwrap_or(0);
        tokio::select! {
            status = child.wait() => {
                let how = status.map(|s| process::describe(&s)).unwrap_or_else(|e| e.to_string());
                warn!(log, "function exited"; "function" => &name, "instance" => instance, "pid" => pid, "status" => &how);
                if !restart {
                    return;
                }
            }
            _ = stop.changed() => {
                process::stop(&mut child, grace).await;
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next()) => {}
            _ = stop.changed() => return,
        }
        info!(log, "restarting function"; "function" => &name, "instance" => instance);
    }
}

fn print_banner(chain: &Chain, manifest: &Manifest, address: String) {
    let mut out = format!(
        "spright: chain {} is up (routing: {}, pool: {} x {} bytes)\n  gateway  {address}\n",
        chain.name, manifest.routing, chain.pool.buffers, chain.pool.buffer_size
    );
    for r in &chain.routes {
        let names: Vec<&str> = r
            .sequence
            .iter()
            .map(|&id| chain.name_of(spright_core::FnId(id)))
            .collect();
        out.push_str(&format!(
            "  {:<6} {:<12} -> {}\n",
            r.method.as_deref().unwrap_or("*"),
            r.path,
            names.join(" -> ")
        ));
    }
    out.push_str(&format!("  metrics  {address}/metrics\nCtrl-C stops the chain and removes its pool, map pins and sockets.\n"));
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// After the pool-manager stopped: its pool (and rings), pins and runtime directory must be
/// gone.
fn check_cleanup(opts: &UpOptions, chain: &Chain, log: &Logger) {
    let key = ChainKey::chain(&chain.name);
    let runtime_dir = spright_core::manifest::runtime_dir(&opts.runtime_root, &key);
    let pool = spright_core::manifest::pool_file(&opts.pool_dir, &key);
    let rings = spright_core::rings::rings_path(&pool);
    let pins = opts.pin_root.as_ref().map(|p| p.join(&chain.name));
    let left: Vec<&Path> = [
        Some(runtime_dir.as_path()),
        Some(pool.as_path()),
        Some(rings.as_path()),
        pins.as_deref(),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.exists())
    .collect();
    if left.is_empty() {
        info!(log, "chain stopped; pool, pins and sockets removed"; "chain" => &chain.name);
        return;
    }
    warn!(log, "the pool-manager left files behind; removing them"; "paths" => ?left);
    let _ = std::fs::remove_dir_all(&runtime_dir);
    let _ = std::fs::remove_file(&pool);
    let _ = std::fs::remove_file(&rings);
    if let Some(p) = &pins {
        let _ = std::fs::remove_dir_all(p);
    }
}
