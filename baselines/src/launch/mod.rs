//! `spright-baseline`: starting a whole chain file the baseline way, Knative-style
//! ([`knative`]) or gRPC-style ([`grpc`]), and stopping everything it started.

pub mod activator;
pub mod grpc;
pub mod knative;
pub mod nginx;
pub mod pod;
pub mod ports;
pub mod process;
pub mod revision;

use crate::workloads::Workload;
use process::{find_program, Proc};
use spright_core::chain::Chain;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The binary hosting the example workloads' services.
const HOST: &str = "spright-baseline-host";

/// What both launches take.
#[derive(Debug, Clone)]
pub struct Options {
    pub chain: PathBuf,
    /// Where outside requests arrive.
    pub listen: SocketAddr,
    /// `SPRIGHT_THREADS` of every function.
    pub threads: usize,
    /// How long every part may take to answer at launch.
    pub ready_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Chain(#[from] spright_core::chain::ChainError),
    #[error("functions[{index}] ({function}) has no command (the baselines do not run images)")]
    NoCommand { index: usize, function: String },
    #[error("function {function}: command {command:?} is not an executable on PATH")]
    NotFound { function: String, command: String },
    #[error(
        "spright-baseline-host is neither beside this launcher nor on PATH \
         (cargo build -p spright-baselines --bins builds it)"
    )]
    NoHost,
    #[error(
        "nginx not found at /usr/sbin/nginx nor on PATH (scripts/install-deps.sh installs it)"
    )]
    NoNginx,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("routes[{index}] ({route}): {problem}")]
    Unsupported {
        index: usize,
        route: String,
        problem: String,
    },
    #[error("--listen {0} has no port: the entry function binds it itself, so name one")]
    NoPort(SocketAddr),
    #[error("{0} before it was ready")]
    Exited(String),
    #[error("{what} not ready within {after:?}")]
    NotReady { what: String, after: Duration },
    #[error("{function}: {problem}")]
    ColdStart { function: String, problem: String },
}

impl LaunchError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> LaunchError {
        LaunchError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Each function's program and arguments, checked before anything starts. Where the chain
/// names an example workload's spright binary, its service runs in `spright-baseline-host`
/// instead: those binaries run on spright alone.
fn commands(chain: &Chain) -> Result<Vec<(PathBuf, Vec<String>)>, LaunchError> {
    chain
        .functions
        .iter()
        .enumerate()
        .map(|(index, f)| {
            let Some((command, args)) = f.command.as_ref().and_then(|c| c.split_first()) else {
                return Err(LaunchError::NoCommand {
                    index,
                    function: f.name.clone(),
                });
            };
            if let Some(workload) = Workload::by_binary(command) {
                let host = find_host().ok_or(LaunchError::NoHost)?;
                let args = std::iter::once(workload.name.to_owned()).chain(args.iter().cloned());
                return Ok((host, args.collect()));
            }
            let program = find_program(command).ok_or_else(|| LaunchError::NotFound {
                function: f.name.clone(),
                command: command.clone(),
            })?;
            Ok((program, args.to_vec()))
        })
        .collect()
}

/// `spright-baseline-host`: beside the running launcher (one build makes both), else on PATH.
fn find_host() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .map(|exe| exe.with_file_name(HOST));
    match beside {
        Some(host) if process::is_executable(&host) => Some(host),
        _ => find_program(HOST),
    }
}

/// Waits until every address accepts connections, failing as soon as one of `procs` exits.
async fn wait_ports(
    procs: &mut [Proc],
    addrs: &[(String, SocketAddr)],
    within: Duration,
) -> Result<(), LaunchError> {
    let started = Instant::now();
    for (what, addr) in addrs {
        loop {
            if let Some(exit) = procs.iter_mut().find_map(Proc::exited) {
                return Err(LaunchError::Exited(exit));
            }
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), connect).await {
                break;
            }
            if started.elapsed() >= within {
                return Err(LaunchError::NotReady {
                    what: format!("{what} (port {addr})"),
                    after: within,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// SIGTERM and SIGINT, caught from the start so that a stop during launch still cleans up.
struct StopSignal {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> Result<StopSignal, LaunchError> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind| signal(kind).map_err(|e| LaunchError::io("catching signals", e));
        Ok(StopSignal {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Tells whoever started us that every part answers.
fn announce_ready(listen: SocketAddr) {
    use std::io::Write;
    println!("ready: http://{listen}");
    let _ = std::io::stdout().flush();
}
