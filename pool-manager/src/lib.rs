//! The per-chain pool-manager.
//!
//! It creates the chain's pool, sets up routing (SPROXY in the kernel, the user-space relay, or
//! the descriptor rings of poll mode), publishes the chain's runtime directory (manifest, one
//! registration socket per function, the gateway's socket, a control socket) and then serves
//! registrations: each instance that
//! connects gets a fresh TCP data socket by `SCM_RIGHTS`, registered with the router. When an
//! instance goes away it is withdrawn at once, the buffers it held are swept back into the pool,
//! and every other member is told which requests were affected.

mod control;
mod eproxy;
mod load;
mod members;
mod membership;
mod paths;
mod placement;
pub mod privileges;
mod router;
mod runtime_dir;
mod sweep;
mod traffic;

pub use paths::{ChainPaths, Locations};

use anyhow::Context;
use membership::Members;
use router::{KernelRouter, PollRouter, Relay, Router};
use slog::{info, o, Logger};
use spright_core::chain::{Chain, CpuPlacement, RoutingMode};
use spright_core::manifest::ChainKey;
use spright_core::pool::Pool;
use spright_core::rings::POLL_INSTANCES;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub chain: Chain,
    /// Which replica of the chain this is, when several may run on one node (in Kubernetes, the
    /// chain pod's UID); names its runtime directory, pool and pins (see `ChainKey`).
    pub replica: Option<String>,
    /// Overrides the chain file's routing mode.
    pub routing: Option<RoutingMode>,
    pub locations: Locations,
    /// Mode of the pool file and sockets; 0o660 lets a group of function users in.
    pub file_mode: u32,
    /// Drop all capabilities once set up (the default).
    pub drop_privileges: bool,
    /// Where the gateway really listens, when not where the chain file says (a supervisor
    /// that bound it, perhaps on port 0): what EPROXY counts.
    pub gateway_listen: Option<std::net::SocketAddr>,
}

impl Options {
    pub fn new(chain: Chain) -> Options {
        Options {
            chain,
            replica: None,
            routing: None,
            locations: Locations::default(),
            file_mode: 0o660,
            drop_privileges: true,
            gateway_listen: None,
        }
    }

    /// The key that names this running chain's files.
    pub fn key(&self) -> anyhow::Result<ChainKey> {
        match &self.replica {
            Some(id) => ChainKey::replica(&self.chain.name, id).map_err(anyhow::Error::msg),
            None => Ok(ChainKey::chain(&self.chain.name)),
        }
    }

    pub fn routing(&self) -> RoutingMode {
        self.routing.unwrap_or(self.chain.routing)
    }
}

/// State shared by the pool-manager's tasks.
pub(crate) struct Shared {
    pub chain: Arc<Chain>,
    pub routing: RoutingMode,
    pub pool: Pool,
    pub router: Mutex<Router>,
    pub members: Mutex<Members>,
    /// The scaling signal: what every instance reports on the chain's load board.
    pub load: Mutex<load::LoadWatch>,
    /// The gateway's traffic counters, when EPROXY runs.
    pub eproxy: Option<spright_ebpf::eproxy::Eproxy>,
    /// Function containers' own traffic, counted by EPROXY where their shims attached it.
    pub traffic: Arc<Mutex<traffic::Registry>>,
    /// The latest scaling signal, for the control connections that watch it.
    pub load_watch: tokio::sync::watch::Sender<Vec<(u16, spright_core::protocol::FunctionLoad)>>,
    pub paths: ChainPaths,
    pub log: Logger,
}

/// Runs the pool-manager for one chain until `shutdown` resolves, then removes everything it
/// created (manifest, sockets, pool and rings files, map pins).
pub async fn run(
    opts: Options,
    log: Logger,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let routing = opts.routing();
    let key = opts.key()?;
    let paths = ChainPaths::new(&opts.locations, &key);
    let log = log.new(o!("chain" => key.to_string()));
    let claim = runtime_dir::claim(&paths, &log)?;
    runtime_dir::sweep_dead_replicas(&opts.locations, &key, &log);
    let result = serve(opts, routing, &key, paths.clone(), log.clone(), shutdown).await;
    runtime_dir::remove_all(&paths);
    drop(claim);
    info!(log, "stopped; runtime directory, pool and pins removed");
    result
}

async fn serve(
    opts: Options,
    routing: RoutingMode,
    key: &ChainKey,
    paths: ChainPaths,
    log: Logger,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let chain = Arc::new(opts.chain.clone());
    let pool = Pool::create(&paths.pool, chain.pool.spec(), &chain.name, opts.file_mode)
        .context("creating the chain's pool")?;
    let board = spright_core::load::LoadBoard::create(&paths.load, pool.pool_id(), opts.file_mode)
        .context("creating the chain's load board")?;
    let router = match routing {
        RoutingMode::Sockmap => Router::Kernel(Box::new(
            KernelRouter::load(&chain, pool.layout(), paths.pins.as_deref()).context(
                "setting up kernel routing (use --routing user where BPF is unavailable)",
            )?,
        )),
        RoutingMode::User => Router::User(Arc::new(Relay::new(
            chain.allow_list(),
            std::iter::once(spright_core::ids::GATEWAY.0)
                .chain(chain.functions.iter().map(|f| f.id)),
            chain.pool.queue_limit,
            *pool.layout(),
        ))),
        RoutingMode::Poll => {
            // The chain file may say another mode: its instance counts were not checked for this.
            if let Some(f) = chain
                .functions
                .iter()
                .find(|f| f.instances > POLL_INSTANCES)
            {
                anyhow::bail!(
                    "function {} asks for {} instances; poll routing serves at most {POLL_INSTANCES}",
                    f.name,
                    f.instances
                );
            }
            Router::Poll(Box::new(
                PollRouter::create(&paths.rings, &chain, &pool, opts.file_mode)
                    .context("creating the chain's descriptor rings")?,
            ))
        }
    };
    let eproxy = eproxy::start(&chain, opts.gateway_listen, &log)?;
    let listeners = runtime_dir::bind_sockets(&paths, &chain, opts.file_mode)?;
    let data_listener = members::DataListener::bind().await?;

    if opts.drop_privileges {
        privileges::drop_to(&[]).context("dropping capabilities")?;
    }
    info!(log, "set up";
        "routing" => %routing,
        "pool" => %paths.pool.display(),
        "buffers" => chain.pool.buffers,
        "buffer_size" => chain.pool.buffer_size,
        "capabilities" => ?privileges::effective());

    let shared = Arc::new(Shared {
        chain: chain.clone(),
        routing,
        pool,
        router: Mutex::new(router),
        members: Mutex::new(Members::default()),
        load: Mutex::new(load::LoadWatch::new(board, load::Windows::of(&chain))),
        eproxy,
        traffic: Arc::default(),
        load_watch: tokio::sync::watch::Sender::new(Vec::new()),
        paths: paths.clone(),
        log: log.clone(),
    });
    let data_listener = Arc::new(data_listener);
    let mut tasks = tokio::task::JoinSet::new();
    for (function, listener) in listeners.functions {
        tasks.spawn(members::accept_loop(
            shared.clone(),
            data_listener.clone(),
            function,
            listener,
        ));
    }
    tasks.spawn(control::serve(shared.clone(), listeners.control));
    if routing == RoutingMode::Poll {
        tasks.spawn(members::watch_interrupted_pushes(shared.clone()));
    }
    tasks.spawn(reclaim_stale_transit(shared.clone()));
    tasks.spawn(sample_load(shared.clone()));
    // Poll mode's processes spin: each needs a CPU of its own.
    let placing = chain.cpu_placement == CpuPlacement::Adaptive && routing != RoutingMode::Poll;
    let placer = Arc::new(Mutex::new(placement::Placer::default()));
    if placing {
        tasks.spawn(place_processes(shared.clone(), placer.clone()));
    }

    runtime_dir::publish_manifest(&paths, key, &chain, routing, &shared.pool)?;
    info!(log, "ready"; "manifest" => %paths.manifest.display());

    shutdown.await;
    info!(log, "shutting down");
    // Unpublish first so nothing new joins, then let members see their connections close.
    let _ = std::fs::remove_file(&paths.manifest);
    tasks.abort_all();
    // Members that outlive the chain (a function told to stop drains first) are told to take
    // their CPUs back; best effort: a registration told to stop may end before it passes this
    // on, and the placing task is aborted, not awaited.
    let orders = placer.lock().unwrap().release();
    tell_placement(&shared, orders);
    members::close_all(&shared);
    Ok(())
}

/// For the life of the chain: gathers its processes on one CPU while they use little and
/// spreads them when they need more (see `placement`).
async fn place_processes(shared: Arc<Shared>, placer: Arc<Mutex<placement::Placer>>) {
    // The relay is on every hop's path: the pool-manager moves with the chain.
    let with_self = shared.routing == RoutingMode::User;
    let mut last = std::time::Instant::now();
    let mut wait = placement::TICK;
    loop {
        tokio::time::sleep(wait).await;
        let members: Vec<u32> = {
            let members = shared.members.lock().unwrap();
            members
                .pids()
                .into_values()
                .flatten()
                // Pid 0 stays: a member in another pid namespace, which placement cannot
                // measure (it keeps the chain spread).
                .collect()
        };
        let now = std::time::Instant::now();
        let (step, orders) = {
            let mut placer = placer.lock().unwrap();
            let looked = placer.tick(&members, with_self, now - last);
            wait = placer.next_look();
            looked
        };
        last = now;
        tell_placement(&shared, orders);
        match step {
            placement::Move::Gather(cpu) => {
                slog::debug!(shared.log, "little load: the chain gathers on one CPU"; "cpu" => cpu)
            }
            placement::Move::Spread => {
                slog::debug!(shared.log, "the load grew: the chain spreads over its CPUs")
            }
            placement::Move::Stay => {}
        }
    }
}

fn tell_placement(shared: &Shared, orders: placement::Orders) {
    let members = shared.members.lock().unwrap();
    for (pid, cpu) in orders.tell {
        members.tell(pid, &spright_core::protocol::Event::Placement { cpu });
    }
}

/// For the life of the chain: takes the starting points of the load windows.
/// Every look publishes the figures to the autoscalers watching them, when they changed.
///
/// While the chain is idle it looks once a second whatever the windows: the totals cannot
/// change before a request starts, and the first look that sees one goes back to the fast tick
/// (a panic window's first figure may then span up to a second more than the window).
async fn sample_load(shared: Arc<Shared>) {
    let fast = shared.load.lock().unwrap().tick;
    let mut tick = fast;
    loop {
        tokio::time::sleep(tick).await;
        let active = {
            // Under the members lock, as every reading of the board (see control::load).
            let members = shared.members.lock().unwrap();
            shared
                .load
                .lock()
                .unwrap()
                .sample(&members.instance_ids(), spright_core::load::now_ns())
        };
        tick = if active { fast } else { load::TICK };
        if shared.load_watch.receiver_count() == 0 {
            continue;
        }
        // Only the functions whose instances follow load: the others' windows (the gateway's is
        // a minute) would keep the watchers busy long after the chain went quiet.
        let now: Vec<_> = control::load(&shared)
            .into_iter()
            .filter(|(id, _)| {
                shared
                    .chain
                    .function_by_id(spright_core::FnId(*id))
                    .is_some_and(|f| f.scaling.is_some())
            })
            .collect();
        shared.load_watch.send_if_modified(|last| {
            let changed = last.len() != now.len()
                || last
                    .iter()
                    .zip(&now)
                    .any(|((a, x), (b, y))| a != b || !x.same_figures(y));
            if changed {
                *last = now;
            }
            changed
        });
    }
}

/// How often the pool is looked over for buffers stuck in transit.
const STALE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// For the life of the chain: frees buffers that stayed in transit, unchanged, for longer than
/// a request may live (the chain's timeout and a second), whatever left them there (a receiver
/// that rejected the descriptor, a forged or lost one).
async fn reclaim_stale_transit(shared: Arc<Shared>) {
    let stale_after = Duration::from_millis(shared.chain.timeout_ms) + Duration::from_secs(1);
    let mut stale = sweep::StaleTransit::new(stale_after);
    loop {
        tokio::time::sleep(STALE_CHECK_EVERY).await;
        let reclaimed = stale.check(&shared.pool, std::time::Instant::now());
        if !reclaimed.is_empty() {
            slog::warn!(shared.log, "reclaimed buffers left in transit past the chain's timeout";
                "buffers" => reclaimed.len(), "after_ms" => stale_after.as_millis() as u64);
        }
    }
}
