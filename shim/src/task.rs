//! The Task service containerd talks to: containers and their processes, run with runc.
//!
//! A container with `spright.io/*` annotations is checked against its chain's manifest and given
//! the chain's pool and its function's registration socket before `runc create`; anything else
//! runs exactly as under a plain runc shim.

pub mod error;
pub mod events;
mod exits;
mod rpc;
pub mod state;
#[cfg(test)]
mod tests;

use crate::container::{Container, Process};
use crate::runc::{ChildIo, Runc, Runtime};
use crate::stdio::{self, ConsoleSocket, Fifos};
use crate::wiring::{self, Plan};
use containerd_shim::api;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use error::TaskError;
use events::{Events, ToContainerd};
use exits::{StartInFlight, Unclaimed};
use log::{info, warn};
use serde_json::Value;
use state::Action;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    runc: Arc<dyn Runtime>,
    runtime_root: PathBuf,
    /// Lock order: `containers`, then `unclaimed`. Never held across an await.
    containers: Mutex<HashMap<String, Container>>,
    unclaimed: Mutex<Vec<Unclaimed>>,
    starts_in_flight: AtomicUsize,
    events: Arc<dyn Events>,
    exit: Arc<ExitSignal>,
    /// Starts EPROXY on a function container's own interfaces (a stand-in in unit tests).
    count_traffic: crate::traffic::Seam,
    /// Held from looking for a namespace's count to making one: two creates at once do not
    /// both count one namespace.
    counting: Arc<tokio::sync::Mutex<()>>,
    /// EPROXY's counts of function containers' own traffic, one per network namespace and
    /// pool-manager.
    counts: Mutex<crate::traffic::Counts>,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

fn container_not_found(id: &str) -> TaskError {
    TaskError::NotFound(format!("container {id}"))
}

impl TaskService {
    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> TaskService {
        let runtime_root = std::env::var_os(spright_core::env::RUNTIME_ROOT)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(spright_core::manifest::DEFAULT_RUNTIME_ROOT));
        let events = ToContainerd {
            publisher,
            namespace: namespace.to_owned(),
        };
        let service = TaskService::with_parts(
            namespace,
            Arc::new(Runc::new(namespace)),
            Arc::new(events),
            runtime_root,
            exit,
            crate::traffic::EPROXY,
        );
        let watcher = service.clone();
        tokio::spawn(async move { watcher.watch_exits().await });
        service
    }

    /// The service over the given runtime and event sink, without following the reaper's
    /// exits (`new` does).
    fn with_parts(
        namespace: &str,
        runc: Arc<dyn Runtime>,
        events: Arc<dyn Events>,
        runtime_root: PathBuf,
        exit: Arc<ExitSignal>,
        count_traffic: crate::traffic::Seam,
    ) -> TaskService {
        TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_owned(),
                runc,
                runtime_root,
                containers: Mutex::new(HashMap::new()),
                unclaimed: Mutex::new(Vec::new()),
                starts_in_flight: AtomicUsize::new(0),
                events,
                exit,
                count_traffic,
                counting: Arc::default(),
                counts: Mutex::default(),
            }),
        }
    }

    /// How many containers this shim holds (a SIGTERM stops only an empty shim).
    pub fn container_count(&self) -> usize {
        self.inner.containers.lock().unwrap().len()
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        self.inner.events.publish(topic, event).await
    }

    fn container_runc(&self, id: &str) -> Result<(Arc<dyn Runtime>, PathBuf), TaskError> {
        let containers = self.inner.containers.lock().unwrap();
        let c = containers.get(id).ok_or_else(|| container_not_found(id))?;
        Ok((c.runc.clone(), c.bundle.clone()))
    }

    async fn create_container(&self, req: api::CreateTaskRequest) -> Result<u32, TaskError> {
        let id = req.id.clone();
        if self.inner.containers.lock().unwrap().contains_key(&id) {
            return Err(TaskError::AlreadyExists(format!("container {id}")));
        }
        if !req.checkpoint.is_empty() {
            return Err(TaskError::Unimplemented(
                "checkpoint/restore is not supported by the spright runtime".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let runc = self
            .inner
            .runc
            .with_systemd_cgroup(crate::options::systemd_cgroup(req.options.as_ref()));
        let rootfs = bundle.join("rootfs");
        let since = Instant::now();
        let _in_flight = StartInFlight::new(&self.inner.starts_in_flight);
        let mut mounted = false;
        let result = async {
            if !req.rootfs.is_empty() {
                containerd_shim::asynchronous::util::mkdir(&rootfs, 0o711).await?;
                for m in &req.rootfs {
                    mounted = true;
                    containerd_shim::asynchronous::util::mount_rootfs(m, &rootfs).await?;
                }
            }
            let (plan, own_pid_namespace) =
                wire_when_published(&bundle, &self.inner.runtime_root).await?;
            let fifos = Fifos {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            let io = if req.terminal {
                let console = ConsoleSocket::new().map_err(TaskError::io("console socket"))?;
                runc.create(&id, &bundle, Some(console.path()), ChildIo::default())
                    .await?;
                let master = console
                    .receive()
                    .map_err(TaskError::io("receiving the terminal"))?;
                stdio::console(master, &fifos).map_err(TaskError::io("terminal"))?
            } else {
                let (child, io) = stdio::pipes(&fifos, &id, &self.inner.namespace)
                    .map_err(TaskError::io("stdio pipes"))?;
                runc.create(&id, &bundle, None, child).await?;
                io
            };
            let pid = read_pid(&bundle.join("init.pid"))?;
            let mut init = Process::new(&id, "", fifos);
            init.io = Some(io);
            // Before start: the function's first packets are counted too.
            let count = match &plan {
                Plan::Function(w) => self.count_traffic(&id, pid, w).await?,
                _ => None,
            };
            Ok::<_, TaskError>((plan, own_pid_namespace, init, pid, count))
        }
        .await;
        let (plan, own_pid_namespace, mut init, pid, count) = match result {
            Ok(r) => r,
            Err(e) => {
                // Nothing half-created stays: no runc state, no rootfs mount.
                let _ = runc.delete(&id, &bundle, true).await;
                if mounted {
                    unmount(&rootfs);
                }
                return Err(e);
            }
        };
        if let Plan::Function(w) = &plan {
            info!("{id} joins chain {} as function {}", w.chain, w.function);
        }
        let early_exit = {
            let mut containers = self.inner.containers.lock().unwrap();
            let early = self.record_pid(&mut init, pid, since);
            containers.insert(
                id.clone(),
                Container {
                    id: id.clone(),
                    bundle,
                    rootfs_mounted: mounted,
                    runc,
                    init,
                    execs: HashMap::new(),
                    function: match plan {
                        Plan::Function(w) => Some(w),
                        _ => None,
                    },
                    count,
                    own_pid_namespace,
                },
            );
            early
        };
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint.clone(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        if let Some((code, at)) = early_exit {
            self.spawn_finish(id, String::new(), pid, code, at, own_pid_namespace);
        }
        Ok(pid)
    }

    /// Has EPROXY count function container `id`'s traffic (its init is `pid`): the count it
    /// shares, if one is made or joined.
    async fn count_traffic(
        &self,
        id: &str,
        pid: u32,
        wiring: &wiring::FunctionWiring,
    ) -> Result<Option<crate::traffic::CountKey>, TaskError> {
        use crate::traffic::not_counted;
        let Some(control) = &wiring.control else {
            return Ok(None);
        };
        // Opened now, while the init waits on runc's exec fifo (see Netns).
        let netns = match (self.inner.count_traffic.open)(pid) {
            Ok(n) => n,
            Err(e) => {
                not_counted(id, wiring, e).map_err(TaskError::Failed)?;
                return Ok(None);
            }
        };
        let key = (netns.id, control.id);
        // Held until the count is in `counts`, or until a start that outlived the deadline
        // below has ended: one attempt at a time.
        let one_at_a_time = self.inner.counting.clone().lock_owned().await;
        if self.inner.counts.lock().unwrap().join(key) {
            info!("{id} shares the count of its network namespace with another running container");
            return Ok(Some(key));
        }
        let (start, namespace, id_owned, w) = (
            self.inner.count_traffic.start,
            self.inner.namespace.clone(),
            id.to_owned(),
            wiring.clone(),
        );
        let attaching = tokio::task::spawn_blocking(move || {
            (start(&namespace, &id_owned, netns, &w), one_at_a_time)
        });
        // Every step inside has its own deadline; this one keeps a create from waiting forever
        // whatever happens (a count that comes later is dropped: nothing stays attached).
        let why_not = match tokio::time::timeout(COUNT_TIMEOUT, attaching).await {
            Ok(Ok((started, one_at_a_time))) => {
                let started = started.map_err(TaskError::Failed)?;
                let key = started.map(|counting| {
                    self.inner.counts.lock().unwrap().insert(key, counting);
                    key
                });
                drop(one_at_a_time);
                return Ok(key);
            }
            Ok(Err(e)) => format!("{e}"),
            Err(_) => format!("attaching and handing over took over {COUNT_TIMEOUT:?}"),
        };
        not_counted(id, wiring, why_not).map_err(TaskError::Failed)?;
        Ok(None)
    }

    /// Container `id`'s function stopped using its namespace's count (its init exited, or it
    /// is deleted before it ran): the count ends with the last container sharing it.
    pub(crate) async fn uncount_traffic(&self, key: Option<crate::traffic::CountKey>) {
        let Some(key) = key else {
            return;
        };
        let last = self.inner.counts.lock().unwrap().leave(key);
        crate::traffic::stop(last).await;
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        let (runc, bundle, fifos, spec, own_pid_namespace) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers.get(id).ok_or_else(|| container_not_found(id))?;
            let p = c
                .execs
                .get(exec_id)
                .ok_or_else(|| exec_not_found(id, exec_id))?;
            p.check(Action::Start)?;
            (
                c.runc.clone(),
                c.bundle.clone(),
                p.fifos.clone(),
                p.spec.clone(),
                c.own_pid_namespace,
            )
        };
        // Dot files named after the exec: they can never be the bundle's own files.
        let process_json = bundle.join(format!(".exec-{exec_id}.json"));
        let pid_file = bundle.join(format!(".exec-{exec_id}.pid"));
        let since = Instant::now();
        let _in_flight = StartInFlight::new(&self.inner.starts_in_flight);
        let launched = async {
            std::fs::write(&process_json, &spec).map_err(TaskError::io("writing the exec spec"))?;
            if fifos.terminal {
                let console = ConsoleSocket::new().map_err(TaskError::io("console socket"))?;
                runc.exec(
                    id,
                    &bundle,
                    &process_json,
                    &pid_file,
                    Some(console.path()),
                    ChildIo::default(),
                )
                .await?;
                let io = console
                    .receive()
                    .map_err(TaskError::io("receiving the terminal"))
                    .and_then(|m| stdio::console(m, &fifos).map_err(TaskError::io("terminal")));
                Ok::<_, TaskError>((io, read_pid(&pid_file)))
            } else {
                let (child, io) = stdio::pipes(&fifos, id, &self.inner.namespace)
                    .map_err(TaskError::io("stdio pipes"))?;
                runc.exec(id, &bundle, &process_json, &pid_file, None, child)
                    .await?;
                Ok((Ok(io), read_pid(&pid_file)))
            }
        }
        .await;
        let _ = std::fs::remove_file(&process_json);
        let _ = std::fs::remove_file(&pid_file);
        let (io, pid) = match launched? {
            (Ok(io), Ok(pid)) => (io, pid),
            (io, pid) => {
                // runc started it but the shim cannot serve it: it must not run untracked.
                if let Ok(pid) = &pid {
                    let _ = runc.signal(*pid, libc::SIGKILL);
                }
                return Err(io.err().or(pid.err()).expect("one of them failed"));
            }
        };
        let early_exit = {
            let mut containers = self.inner.containers.lock().unwrap();
            let Some(p) = containers
                .get_mut(id)
                .and_then(|c| c.execs.get_mut(exec_id))
            else {
                return Err(exec_not_found(id, exec_id));
            };
            // Two starts of one exec can both pass the check above; runc refuses the second.
            let _ = p.apply(Action::Start);
            p.io = Some(io);
            self.record_pid(p, pid, since)
        };
        if let Some((code, at)) = early_exit {
            self.spawn_finish(
                id.to_owned(),
                exec_id.to_owned(),
                pid,
                code,
                at,
                own_pid_namespace,
            );
        }
        Ok(pid)
    }

    /// Closes (`false`) or opens the gate `finish` waits on before reporting an exit: closed
    /// while a start is carried out and its event published.
    fn start_gate(&self, id: &str, exec_id: &str, open: bool) {
        let containers = self.inner.containers.lock().unwrap();
        if let Some(p) = containers.get(id).and_then(|c| c.process(exec_id)) {
            p.started.send_replace(open);
        }
    }
}

fn exec_not_found(id: &str, exec_id: &str) -> TaskError {
    TaskError::NotFound(format!("exec {exec_id} in {id}"))
}

fn read_pid(path: &Path) -> Result<u32, TaskError> {
    let text = std::fs::read_to_string(path).map_err(TaskError::io("reading runc's pid file"))?;
    text.trim()
        .parse()
        .map_err(|_| TaskError::Failed(format!("{} holds no pid: {text:?}", path.display())))
}

/// How long attaching EPROXY and handing its counts over may take a create at most.
const COUNT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a function of a replica pod (`spright.io/functions`) waits for the pool-manager
/// started beside it in the pod to publish the chain.
const REPLICA_POD_WAIT: Duration = Duration::from_secs(30);

/// [`wire`], waiting for the chain where the container is started beside its own pool-manager.
async fn wire_when_published(
    bundle: &Path,
    runtime_root: &Path,
) -> Result<(Plan, bool), TaskError> {
    let deadline = Instant::now() + REPLICA_POD_WAIT;
    loop {
        match wire(bundle, runtime_root) {
            Err(Unwired::NotYet(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(Unwired::NotYet(e)) => {
                return Err(TaskError::InvalidArgument(format!(
                    "{e} (waited {REPLICA_POD_WAIT:?} for the pool-manager of this pod to \
                     publish it: is it the pod's first container, a sidecar?)"
                )))
            }
            Err(Unwired::Failed(e)) => return Err(e),
            Ok(wired) => return Ok(wired),
        }
    }
}

enum Unwired {
    /// The chain is not published yet, and this container may wait for it.
    NotYet(TaskError),
    Failed(TaskError),
}

impl From<TaskError> for Unwired {
    fn from(e: TaskError) -> Unwired {
        Unwired::Failed(e)
    }
}

/// Applies the container's SPRIGHT annotations to its bundle's spec, and says whether the
/// container gets a PID namespace of its own. The spec is read as JSON and written back only
/// for a function, with nothing but spright's parts changed.
fn wire(bundle: &Path, runtime_root: &Path) -> Result<(Plan, bool), Unwired> {
    let config = bundle.join("config.json");
    let read = |e: String| TaskError::InvalidArgument(format!("reading {}: {e}", config.display()));
    let text = std::fs::read(&config).map_err(|e| read(e.to_string()))?;
    let mut spec: Value = serde_json::from_slice(&text).map_err(|e| read(e.to_string()))?;
    let own_pid_namespace = spec
        .pointer("/linux/namespaces")
        .and_then(Value::as_array)
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n["type"] == "pid" && n.get("path").is_none_or(|p| p == ""))
        });
    let annotations = wiring::annotations(&spec);
    let plan = wiring::plan(&annotations, runtime_root).map_err(|e| {
        let waits = matches!(
            e,
            wiring::WiringError::NoChain {
                source: spright_core::manifest::ManifestError::Missing { .. },
                ..
            }
        ) && wiring::waits_for_its_chain(&annotations);
        let e = TaskError::InvalidArgument(format!("spright: {e}"));
        if waits {
            Unwired::NotYet(e)
        } else {
            Unwired::Failed(e)
        }
    })?;
    if let Plan::Function(w) = &plan {
        wiring::apply(&mut spec, w);
        let out = serde_json::to_vec(&spec).map_err(|e| TaskError::Failed(e.to_string()))?;
        std::fs::write(&config, out)
            .map_err(|e| TaskError::Failed(format!("writing {}: {e}", config.display())))?;
    }
    Ok((plan, own_pid_namespace))
}

fn unmount(rootfs: &Path) {
    if let Err(e) = containerd_shim::mount::umount_recursive(rootfs.to_str(), libc::MNT_DETACH) {
        warn!("unmounting {}: {e}", rootfs.display());
    }
}
