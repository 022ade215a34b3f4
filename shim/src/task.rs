//! The Task service containerd talks to: containers and their processes, run with runc.
//!
//! A container with `spright.io/*` annotations is checked against its chain's manifest and given
//! the chain's pool and its function's registration socket before `runc create`; anything else
//! runs exactly as under a plain runc shim.

use crate::container::{Container, Process};
use crate::runc::{ChildIo, Runc};
use crate::stdio::{self, ConsoleSocket, Fifos};
use crate::wiring::{self, Plan};
use async_trait::async_trait;
use containerd_shim::api::{self, Status};
use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Error, Task, TtrpcContext, TtrpcResult};
use log::{info, warn};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an exit waits for the process's output to be copied out before it is reported.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// Exits of pids the shim does not know yet (a process can exit before its pid is recorded).
const UNCLAIMED_MAX: usize = 1024;

#[derive(Clone)]
pub struct TaskService {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    runc: Runc,
    runtime_root: PathBuf,
    containers: Mutex<HashMap<String, Container>>,
    unclaimed: Mutex<Vec<(u32, i32, Timestamp)>>,
    publisher: RemotePublisher,
    exit: Arc<ExitSignal>,
}

fn now() -> Timestamp {
    containerd_shim::util::timestamp().unwrap_or_default()
}

fn not_found(what: impl std::fmt::Display) -> containerd_shim::protos::ttrpc::Error {
    Error::NotFoundError(what.to_string()).into()
}

fn failed(e: impl std::fmt::Display) -> containerd_shim::protos::ttrpc::Error {
    Error::Other(e.to_string()).into()
}

impl TaskService {
    pub fn new(namespace: &str, publisher: RemotePublisher, exit: Arc<ExitSignal>) -> TaskService {
        let runtime_root = std::env::var_os("SPRIGHT_RUNTIME_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(spright_core::manifest::DEFAULT_RUNTIME_ROOT));
        let service = TaskService {
            inner: Arc::new(Inner {
                namespace: namespace.to_owned(),
                runc: Runc::new(namespace),
                runtime_root,
                containers: Mutex::new(HashMap::new()),
                unclaimed: Mutex::new(Vec::new()),
                publisher,
                exit,
            }),
        };
        let watcher = service.clone();
        tokio::spawn(async move { watcher.watch_exits().await });
        service
    }

    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        let ctx = containerd_shim::protos::ttrpc::context::Context::default();
        if let Err(e) = self
            .inner
            .publisher
            .publish(ctx, topic, &self.inner.namespace, event)
            .await
        {
            warn!("publishing {topic}: {e}");
        }
    }

    /// Records every exit the shim reaps against the process it belongs to.
    async fn watch_exits(&self) {
        let mut subscription = match monitor_subscribe(Topic::Pid).await {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot watch process exits: {e}");
                return;
            }
        };
        while let Some(event) = subscription.rx.recv().await {
            let Subject::Pid(pid) = event.subject else {
                continue;
            };
            self.exited(pid as u32, event.exit_code, now()).await;
        }
    }

    /// A process exited: once its output is out, mark it and tell containerd.
    async fn exited(&self, pid: u32, code: i32, at: Timestamp) {
        let found = {
            let mut containers = self.inner.containers.lock().unwrap();
            containers.values_mut().find_map(|c| {
                let id = c.id.clone();
                c.live_process_mut(pid).map(|p| (id, p.exec_id.clone()))
            })
        };
        let Some((id, exec_id)) = found else {
            // runc itself, or a process whose pid is not recorded yet.
            let mut unclaimed = self.inner.unclaimed.lock().unwrap();
            if unclaimed.len() >= UNCLAIMED_MAX {
                unclaimed.remove(0);
            }
            unclaimed.push((pid, code, at));
            return;
        };
        self.finish(&id, &exec_id, pid, code, at).await;
    }

    async fn finish(&self, id: &str, exec_id: &str, pid: u32, code: i32, at: Timestamp) {
        // Report the exit after the output (the pipes end when their last holder exits).
        let waiter = {
            let containers = self.inner.containers.lock().unwrap();
            containers
                .get(id)
                .and_then(|c| c.process(exec_id))
                .and_then(|p| p.io.as_ref())
                .map(|io| io.output_waiter())
        };
        if let Some(waiter) = waiter {
            let _ = tokio::task::spawn_blocking(move || waiter.wait(OUTPUT_DRAIN)).await;
        }
        {
            let mut containers = self.inner.containers.lock().unwrap();
            let Some(p) = containers.get_mut(id).and_then(|c| c.process_mut(exec_id)) else {
                return;
            };
            if p.is_stopped() {
                return;
            }
            p.set_exited(code, at.clone());
        }
        info!(
            "{id} {} exited with {code}",
            if exec_id.is_empty() { "init" } else { exec_id }
        );
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: id.to_owned(),
                id: if exec_id.is_empty() {
                    id.to_owned()
                } else {
                    exec_id.to_owned()
                },
                pid,
                exit_status: code as u32,
                exited_at: MessageField::some(at),
                ..Default::default()
            }),
        )
        .await;
    }

    /// A pid was just recorded: if it already exited, report that now.
    async fn claim_early_exit(&self, id: &str, exec_id: &str, pid: u32) {
        let early = {
            let mut unclaimed = self.inner.unclaimed.lock().unwrap();
            unclaimed
                .iter()
                .position(|(p, _, _)| *p == pid)
                .map(|i| unclaimed.remove(i))
        };
        if let Some((_, code, at)) = early {
            self.finish(id, exec_id, pid, code, at).await;
        }
    }

    fn container_runc(&self, id: &str) -> TtrpcResult<(Runc, PathBuf)> {
        let containers = self.inner.containers.lock().unwrap();
        let c = containers
            .get(id)
            .ok_or_else(|| not_found(format!("container {id}")))?;
        Ok((c.runc.clone(), c.bundle.clone()))
    }

    async fn create_container(&self, req: api::CreateTaskRequest) -> Result<u32, Error> {
        let id = req.id.clone();
        if self.inner.containers.lock().unwrap().contains_key(&id) {
            return Err(Error::FailedPreconditionError(format!(
                "container {id} already exists"
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        let runc = self
            .inner
            .runc
            .clone()
            .with_systemd_cgroup(systemd_cgroup(&req));
        let rootfs = bundle.join("rootfs");
        let mut mounted = false;
        let result = async {
            if !req.rootfs.is_empty() {
                containerd_shim::asynchronous::util::mkdir(&rootfs, 0o711).await?;
                for m in &req.rootfs {
                    mounted = true;
                    containerd_shim::asynchronous::util::mount_rootfs(m, &rootfs).await?;
                }
            }
            let plan = wire(&bundle, &self.inner.runtime_root)?;
            let fifos = Fifos {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            let io = if req.terminal {
                let console = ConsoleSocket::new().map_err(io_err("console socket"))?;
                runc.create(&id, &bundle, Some(console.path()), ChildIo::default())
                    .await
                    .map_err(|e| Error::Other(e.to_string()))?;
                let master = console
                    .receive()
                    .map_err(io_err("receiving the terminal"))?;
                stdio::console(master, &fifos).map_err(io_err("terminal"))?
            } else {
                let (child, io) = stdio::pipes(&fifos).map_err(io_err("stdio pipes"))?;
                runc.create(&id, &bundle, None, child)
                    .await
                    .map_err(|e| Error::Other(e.to_string()))?;
                io
            };
            let pid = read_pid(&bundle.join("init.pid"))?;
            let mut init = Process::new("", fifos);
            init.pid = pid;
            init.io = Some(io);
            Ok::<_, Error>((plan, init))
        }
        .await;
        let (plan, init) = match result {
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
        let pid = init.pid;
        if let Plan::Function(w) = &plan {
            info!("{id} joins chain {} as function {}", w.chain, w.function);
        }
        self.inner.containers.lock().unwrap().insert(
            id.clone(),
            Container {
                id: id.clone(),
                bundle: bundle.clone(),
                rootfs_mounted: mounted,
                runc,
                init,
                execs: HashMap::new(),
                function: match plan {
                    Plan::Function(w) => Some(w),
                    _ => None,
                },
            },
        );
        self.claim_early_exit(&id, "", pid).await;
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
        Ok(pid)
    }

    async fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32, Error> {
        let (runc, bundle, fifos, spec) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get(id)
                .ok_or_else(|| Error::NotFoundError(format!("container {id}")))?;
            let p = c
                .execs
                .get(exec_id)
                .ok_or_else(|| Error::NotFoundError(format!("exec {exec_id} in {id}")))?;
            if p.status != Status::CREATED {
                return Err(Error::FailedPreconditionError(format!(
                    "exec {exec_id} was already started"
                )));
            }
            (
                c.runc.clone(),
                c.bundle.clone(),
                p.fifos.clone(),
                p.spec.clone(),
            )
        };
        let process_json = bundle.join(format!("{exec_id}.json"));
        let pid_file = bundle.join(format!("{exec_id}.pid"));
        std::fs::write(&process_json, &spec).map_err(io_err("writing the exec spec"))?;
        let io = if fifos.terminal {
            let console = ConsoleSocket::new().map_err(io_err("console socket"))?;
            runc.exec(
                id,
                &bundle,
                &process_json,
                &pid_file,
                Some(console.path()),
                ChildIo::default(),
            )
            .await
            .map_err(|e| Error::Other(e.to_string()))?;
            let master = console
                .receive()
                .map_err(io_err("receiving the terminal"))?;
            stdio::console(master, &fifos).map_err(io_err("terminal"))?
        } else {
            let (child, io) = stdio::pipes(&fifos).map_err(io_err("stdio pipes"))?;
            runc.exec(id, &bundle, &process_json, &pid_file, None, child)
                .await
                .map_err(|e| Error::Other(e.to_string()))?;
            io
        };
        let _ = std::fs::remove_file(&process_json);
        let pid = read_pid(&pid_file)?;
        let _ = std::fs::remove_file(&pid_file);
        {
            let mut containers = self.inner.containers.lock().unwrap();
            if let Some(p) = containers
                .get_mut(id)
                .and_then(|c| c.execs.get_mut(exec_id))
            {
                p.pid = pid;
                p.status = Status::RUNNING;
                p.io = Some(io);
            }
        }
        self.claim_early_exit(id, exec_id, pid).await;
        Ok(pid)
    }
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |err| Error::IoError {
        context: what.to_owned(),
        err,
    }
}

fn read_pid(path: &Path) -> Result<u32, Error> {
    let text = std::fs::read_to_string(path).map_err(io_err("reading runc's pid file"))?;
    text.trim()
        .parse()
        .map_err(|_| Error::Other(format!("{} holds no pid: {text:?}", path.display())))
}

fn systemd_cgroup(req: &api::CreateTaskRequest) -> bool {
    req.options
        .as_ref()
        .and_then(|any| api::Options::parse_from_bytes(&any.value).ok())
        .is_some_and(|o| o.systemd_cgroup)
}

/// Applies the container's SPRIGHT annotations to its bundle's spec.
fn wire(bundle: &Path, runtime_root: &Path) -> Result<Plan, Error> {
    let config = bundle.join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&config)
        .map_err(|e| Error::InvalidArgument(format!("reading {}: {e}", config.display())))?;
    let annotations = spec.annotations().clone().unwrap_or_default();
    let plan = wiring::plan(&annotations, runtime_root)
        .map_err(|e| Error::InvalidArgument(format!("spright: {e}")))?;
    if let Plan::Function(w) = &plan {
        wiring::apply(&mut spec, w);
        spec.save(&config)
            .map_err(|e| Error::Other(format!("writing {}: {e}", config.display())))?;
    }
    Ok(plan)
}

fn unmount(rootfs: &Path) {
    if let Err(e) = containerd_shim::mount::umount_recursive(rootfs.to_str(), libc::MNT_DETACH) {
        warn!("unmounting {}: {e}", rootfs.display());
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        info!("create {} (bundle {})", req.id, req.bundle);
        let pid = self.create_container(req).await?;
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        if !req.exec_id.is_empty() {
            let pid = self.start_exec(&req.id, &req.exec_id).await?;
            self.publish(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                Box::new(TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                }),
            )
            .await;
            return Ok(api::StartResponse {
                pid,
                ..Default::default()
            });
        }
        let (runc, bundle) = self.container_runc(&req.id)?;
        runc.start(&req.id, &bundle).await.map_err(failed)?;
        let pid = {
            let mut containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(format!("container {}", req.id)))?;
            if c.init.status == Status::CREATED {
                c.init.status = Status::RUNNING;
            }
            c.init.pid
        };
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let containers = self.inner.containers.lock().unwrap();
        let c = containers
            .get(&req.id)
            .ok_or_else(|| not_found(format!("container {}", req.id)))?;
        let p = c
            .process(&req.exec_id)
            .ok_or_else(|| not_found(format!("exec {} in {}", req.exec_id, req.id)))?;
        Ok(api::StateResponse {
            id: if p.exec_id.is_empty() {
                c.id.clone()
            } else {
                p.exec_id.clone()
            },
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid,
            status: p.status.into(),
            stdin: p.fifos.stdin.clone(),
            stdout: p.fifos.stdout.clone(),
            stderr: p.fifos.stderr.clone(),
            terminal: p.fifos.terminal,
            exit_status: p.exit_status,
            exited_at: p.exited_at.clone().into(),
            exec_id: p.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let mut exited = {
            let containers = self.inner.containers.lock().unwrap();
            containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .map(|p| p.exited.subscribe())
                .ok_or_else(|| not_found(format!("process {} {}", req.id, req.exec_id)))?
        };
        let _ = exited.wait_for(|done| *done).await;
        let containers = self.inner.containers.lock().unwrap();
        let p = containers
            .get(&req.id)
            .and_then(|c| c.process(&req.exec_id))
            .ok_or_else(|| not_found(format!("process {} {}", req.id, req.exec_id)))?;
        Ok(api::WaitResponse {
            exit_status: p.exit_status,
            exited_at: p.exited_at.clone().into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let (runc, bundle, pid, stopped) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get(&req.id)
                .ok_or_else(|| not_found(format!("container {}", req.id)))?;
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| not_found(format!("exec {} in {}", req.exec_id, req.id)))?;
            (c.runc.clone(), c.bundle.clone(), p.pid, p.is_stopped())
        };
        if stopped {
            return Err(not_found("process already finished"));
        }
        if req.exec_id.is_empty() {
            runc.kill(&req.id, &bundle, req.signal, req.all)
                .await
                .map_err(failed)?;
        } else {
            // SAFETY: signalling a process of this container by pid.
            if unsafe { libc::kill(pid as libc::pid_t, req.signal as libc::c_int) } != 0 {
                return Err(failed(std::io::Error::last_os_error()));
            }
        }
        Ok(api::Empty::default())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(format!("container {}", req.id)))?;
            let p = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(format!("exec {} in {}", req.exec_id, req.id)))?;
            if p.status == Status::RUNNING {
                return Err(Error::FailedPreconditionError(format!(
                    "exec {} is still running",
                    req.exec_id
                ))
                .into());
            }
            let p = c.execs.remove(&req.exec_id).expect("present");
            return Ok(api::DeleteResponse {
                pid: p.pid,
                exit_status: p.exit_status,
                exited_at: p.exited_at.into(),
                ..Default::default()
            });
        }
        let (runc, bundle, status) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get(&req.id)
                .ok_or_else(|| not_found(format!("container {}", req.id)))?;
            (c.runc.clone(), c.bundle.clone(), c.init.status)
        };
        if status == Status::RUNNING || status == Status::PAUSED {
            return Err(Error::FailedPreconditionError(format!(
                "container {} is still running; kill it first",
                req.id
            ))
            .into());
        }
        if let Err(e) = runc
            .delete(&req.id, &bundle, status == Status::CREATED)
            .await
        {
            warn!("runc delete {}: {e}", req.id);
        }
        let c = self
            .inner
            .containers
            .lock()
            .unwrap()
            .remove(&req.id)
            .ok_or_else(|| not_found(format!("container {}", req.id)))?;
        if c.rootfs_mounted {
            unmount(&c.bundle.join("rootfs"));
        }
        let exited_at = c.init.exited_at.clone().unwrap_or_else(now);
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: c.id.clone(),
                pid: c.init.pid,
                exit_status: c.init.exit_status,
                exited_at: MessageField::some(exited_at.clone()),
                id: c.id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::DeleteResponse {
            pid: c.init.pid,
            exit_status: c.init.exit_status,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let (runc, _) = self.container_runc(&req.id)?;
        let pids = runc.ps(&req.id).await.map_err(failed)?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim::protos::api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        let (runc, bundle) = self.container_runc(&req.id)?;
        runc.pause(&req.id, &bundle).await.map_err(failed)?;
        if let Some(c) = self.inner.containers.lock().unwrap().get_mut(&req.id) {
            c.init.status = Status::PAUSED;
        }
        self.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            Box::new(TaskPaused {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::default())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        let (runc, bundle) = self.container_runc(&req.id)?;
        runc.resume(&req.id, &bundle).await.map_err(failed)?;
        if let Some(c) = self.inner.containers.lock().unwrap().get_mut(&req.id) {
            c.init.status = Status::RUNNING;
        }
        self.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            Box::new(TaskResumed {
                container_id: req.id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::default())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        {
            let mut containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(format!("container {}", req.id)))?;
            if c.execs.contains_key(&req.exec_id) {
                return Err(Error::FailedPreconditionError(format!(
                    "exec {} already exists",
                    req.exec_id
                ))
                .into());
            }
            let mut p = Process::new(
                &req.exec_id,
                Fifos {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
            );
            p.spec = req
                .spec
                .as_ref()
                .map(|s| s.value.clone())
                .unwrap_or_default();
            if let Some(w) = &c.function {
                p.spec = wiring::apply_to_exec(&p.spec, w)
                    .map_err(|e| Error::InvalidArgument(format!("exec {}: {e}", req.exec_id)))?;
            }
            c.execs.insert(req.exec_id.clone(), p);
        }
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(api::Empty::default())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let containers = self.inner.containers.lock().unwrap();
        let io = containers
            .get(&req.id)
            .and_then(|c| c.process(&req.exec_id))
            .and_then(|p| p.io.as_ref())
            .ok_or_else(|| not_found(format!("process {} {}", req.id, req.exec_id)))?;
        io.resize(req.width, req.height).map_err(failed)?;
        Ok(api::Empty::default())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let containers = self.inner.containers.lock().unwrap();
        if let Some(io) = containers
            .get(&req.id)
            .and_then(|c| c.process(&req.exec_id))
            .and_then(|p| p.io.as_ref())
        {
            io.close_stdin();
        }
        Ok(api::Empty::default())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let (runc, _) = self.container_runc(&req.id)?;
        let resources = req
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| Error::InvalidArgument("update without resources".into()))?;
        runc.update(&req.id, resources).await.map_err(failed)?;
        Ok(api::Empty::default())
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let pid = {
            let containers = self.inner.containers.lock().unwrap();
            containers
                .get(&req.id)
                .map(|c| c.init.pid)
                .ok_or_else(|| not_found(format!("container {}", req.id)))?
        };
        let metrics = tokio::task::spawn_blocking(move || {
            let cgroup = containerd_shim::cgroup::get_cgroup(pid)?;
            containerd_shim::cgroup::collect_metrics(&cgroup)
        })
        .await
        .map_err(failed)??;
        let mut any = Any::new();
        any.type_url = "io.containerd.cgroups.v1.Metrics".into();
        any.value = metrics.write_to_bytes().map_err(failed)?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = {
            let containers = self.inner.containers.lock().unwrap();
            containers.get(&req.id).map(|c| c.init.pid).unwrap_or(0)
        };
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        if self.inner.containers.lock().unwrap().is_empty() {
            info!("no containers left: shutting down");
            self.inner.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
