//! The shim server: the process `start` spawns for a group of containers. It serves the Task
//! service under both names containerd knows it by (`containerd.task.v2.Task`, and
//! `containerd.task.v3.Task` for containerd 2.x: the same messages under a new package), reaps
//! its children, and exits once containerd shuts it down with no containers left.

use super::start::{LISTENER_FD, LISTENER_FD_ENV, READY};
use super::LaunchError;
use crate::task::TaskService;
use containerd_shim::asynchronous::monitor::monitor_notify_by_pid;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use containerd_shim::protos::ttrpc::r#async::{Server, Service};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Flags;
use log::{info, warn};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

pub fn serve(flags: &Flags) -> Result<(), LaunchError> {
    let runtime = tokio::runtime::Runtime::new().map_err(LaunchError::io("starting tokio"))?;
    let result = runtime.block_on(run(flags));
    if let Err(e) = &result {
        // Before the server is ready this reaches `start` through the stdout pipe.
        println!("{e}");
    }
    result
}

async fn run(flags: &Flags) -> Result<(), LaunchError> {
    if flags.socket.is_empty() {
        return Err(LaunchError::Other(
            "no -socket: the server is started by `start`, not by hand".into(),
        ));
    }
    set_subreaper()?;
    // Signals first: no child may exit before the reaper listens.
    let reaper = Reaper::install()?;
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)?;
    stderr_to_log();
    let listener = listener(&flags.socket)?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .map_err(|_| LaunchError::Other("TTRPC_ADDRESS is not set".into()))?;
    let publisher = RemotePublisher::new(&ttrpc_address).await.map_err(|e| {
        LaunchError::Other(format!(
            "connecting to containerd's ttrpc address {ttrpc_address}: {e}"
        ))
    })?;
    let exit = Arc::new(ExitSignal::default());
    let task = TaskService::new(&flags.namespace, publisher, exit.clone());
    tokio::spawn(reaper.run(task.clone(), exit.clone()));
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(task_services(&task));
    server
        .start()
        .await
        .map_err(|e| LaunchError::Other(format!("serving ttrpc: {e}")))?;
    announce_ready()?;
    info!("serving task API v2 and v3 on {}", flags.socket);
    exit.wait().await;
    info!("shutting down");
    // The socket goes first, so no start joins a server that is leaving.
    let _ = std::fs::remove_file(flags.socket.trim_start_matches("unix://"));
    let _ = server.shutdown().await;
    Ok(())
}

/// The Task service under the v2 and the v3 name.
fn task_services(task: &TaskService) -> HashMap<String, Service> {
    let service: Arc<dyn containerd_shim::protos::shim_async::Task + Send + Sync> =
        Arc::new(task.clone());
    let mut services = create_task(service.clone());
    let v3 = create_task(service)
        .remove(TASK_V2)
        .expect("the generated Task service");
    services.insert(TASK_V3.to_owned(), v3);
    services
}

/// The socket `start` bound and passed down, or (run by hand for debugging) a new one.
fn listener(socket: &str) -> Result<Listener, LaunchError> {
    let inherited = std::env::var(LISTENER_FD_ENV).ok() == Some(LISTENER_FD.to_string());
    let listener = if inherited {
        // SAFETY: `start` put a listening unix socket at this descriptor and nothing else
        // owns it.
        let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTENER_FD) };
        // It came without close-on-exec; runc and the containers must not inherit it.
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(LISTENER_FD, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(LaunchError::Io {
                context: "marking the listening socket close-on-exec".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        listener
    } else {
        std::os::unix::net::UnixListener::bind(socket.trim_start_matches("unix://"))
            .map_err(LaunchError::io(format!("binding {socket}")))?
    };
    Listener::try_from(listener).map_err(LaunchError::io("listening for containerd"))
}

/// Orphaned container processes become ours to reap once runc exits.
pub fn set_subreaper() -> Result<(), LaunchError> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(LaunchError::Io {
            context: "becoming a child subreaper".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Tells `start` the server serves: no more dying with it, the ready line, stdout closed.
fn announce_ready() -> Result<(), LaunchError> {
    use std::io::Write;
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY}")
        .and_then(|()| stdout.flush())
        .map_err(LaunchError::io("telling start the server is ready"))?;
    // Closed by pointing it at /dev/null: a closed descriptor 1 would be reused by the next
    // file opened, and a late print would land there.
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(LaunchError::io("opening /dev/null"))?;
    // SAFETY: replacing our own stdout descriptor.
    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), libc::STDOUT_FILENO) };
    Ok(())
}

/// Panics and anything else written to stderr go to containerd's log, as the log fifo in the
/// bundle carries the shim's log lines.
fn stderr_to_log() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking to open (no reader: no redirect rather than a hang), blocking to write.
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log");
    if let Ok(fifo) = opened {
        // SAFETY: fcntl/dup2 on descriptors we own; dup2 keeps the fifo open as stderr.
        unsafe {
            libc::fcntl(fifo.as_raw_fd(), libc::F_SETFL, libc::O_WRONLY);
            libc::dup2(fifo.as_raw_fd(), libc::STDERR_FILENO);
        }
    }
}

/// Reaps every child (runc, and container processes once runc is gone: the shim is a
/// subreaper) and hands exits to the exit monitor; stops the server on SIGTERM or SIGINT
/// once it holds no containers.
pub struct Reaper {
    child: Signal,
    term: Signal,
    int: Signal,
    _pipe: Signal,
}

impl Reaper {
    pub fn install() -> Result<Reaper, LaunchError> {
        let on =
            |kind: SignalKind| signal(kind).map_err(LaunchError::io("installing signal handlers"));
        Ok(Reaper {
            child: on(SignalKind::child())?,
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            // Writes to a closed fifo must fail, not kill the shim.
            _pipe: on(SignalKind::pipe())?,
        })
    }

    pub async fn run(mut self, task: TaskService, exit: Arc<ExitSignal>) {
        loop {
            tokio::select! {
                _ = self.child.recv() => reap().await,
                _ = self.term.recv() => stop_if_idle(&task, &exit, "SIGTERM"),
                _ = self.int.recv() => stop_if_idle(&task, &exit, "SIGINT"),
            }
        }
    }

    /// Only reaps (for `delete`, which runs runc once).
    pub async fn reap_only(mut self) {
        while self.child.recv().await.is_some() {
            reap().await;
        }
    }
}

fn stop_if_idle(task: &TaskService, exit: &ExitSignal, signal: &str) {
    let running = task.container_count();
    if running == 0 {
        info!("{signal} with no containers: shutting down");
        exit.signal();
    } else {
        // The runc v2 shim dies here and orphans its containers; containerd stops a shim
        // with Shutdown once its containers are deleted.
        warn!("{signal} ignored: {running} container(s) still in this shim");
    }
}

async fn reap() {
    loop {
        let (pid, code) = match waitpid(Some(Pid::from_raw(-1)), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, status)) => (pid, status),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                warn!("reaping children: {e}");
                return;
            }
        };
        if let Err(e) = monitor_notify_by_pid(pid.as_raw(), code).await {
            warn!("reporting the exit of {pid}: {e}");
        }
    }
}
