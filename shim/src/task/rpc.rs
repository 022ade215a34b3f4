//! The Task service's methods, as containerd calls them.

use super::error::TaskError;
use super::state::{Action, State};
use super::{container_not_found, exec_not_found, now, unmount, TaskService};
use crate::container::Process;
use crate::stdio::Fifos;
use crate::wiring;
use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::protos::events::task::{
    TaskDelete, TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use log::{info, warn};

impl TaskService {
    async fn start_init(&self, id: &str) -> Result<u32, TaskError> {
        let (runc, bundle) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers.get(id).ok_or_else(|| container_not_found(id))?;
            c.init.check(Action::Start)?;
            (c.runc.clone(), c.bundle.clone())
        };
        self.start_gate(id, "", false);
        if let Err(e) = runc.start(id, &bundle).await {
            self.start_gate(id, "", true);
            return Err(e.into());
        }
        let pid = {
            let mut containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get_mut(id)
                .ok_or_else(|| container_not_found(id))?;
            // An exit reported meanwhile (it waits for the start event only so long) wins.
            let _ = c.init.apply(Action::Start);
            c.init.pid
        };
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: id.to_owned(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        self.start_gate(id, "", true);
        Ok(pid)
    }

    async fn start_exec_process(&self, id: &str, exec_id: &str) -> Result<u32, TaskError> {
        self.start_gate(id, exec_id, false);
        let pid = match self.start_exec(id, exec_id).await {
            Ok(pid) => pid,
            Err(e) => {
                self.start_gate(id, exec_id, true);
                return Err(e);
            }
        };
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                pid,
                ..Default::default()
            }),
        )
        .await;
        self.start_gate(id, exec_id, true);
        Ok(pid)
    }

    /// Pauses (`freeze`) or resumes a running (paused) container.
    async fn freeze(&self, id: &str, freeze: bool) -> Result<api::Empty, TaskError> {
        let action = if freeze {
            Action::Pause
        } else {
            Action::Resume
        };
        let (runc, bundle) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers.get(id).ok_or_else(|| container_not_found(id))?;
            c.init.check(action)?;
            (c.runc.clone(), c.bundle.clone())
        };
        if freeze {
            runc.pause(id, &bundle).await?;
        } else {
            runc.resume(id, &bundle).await?;
        }
        if let Some(c) = self.inner.containers.lock().unwrap().get_mut(id) {
            // An exit that landed meanwhile is not overwritten.
            let _ = c.init.apply(action);
        }
        let container_id = id.to_owned();
        if freeze {
            let event = TaskPaused {
                container_id,
                ..Default::default()
            };
            self.publish(topics::TASK_PAUSED_EVENT_TOPIC, Box::new(event))
                .await;
        } else {
            let event = TaskResumed {
                container_id,
                ..Default::default()
            };
            self.publish(topics::TASK_RESUMED_EVENT_TOPIC, Box::new(event))
                .await;
        }
        Ok(api::Empty::default())
    }

    /// Waits until a reaped process's exit has been reported (its output drained).
    async fn settle(&self, id: &str, exec_id: &str) {
        let exited = {
            let containers = self.inner.containers.lock().unwrap();
            containers
                .get(id)
                .and_then(|c| c.process(exec_id))
                .filter(|p| p.reaped.is_some() && !p.is_stopped())
                .map(|p| p.exited.subscribe())
        };
        if let Some(mut exited) = exited {
            let _ = exited.wait_for(|done| *done).await;
        }
    }
}

fn valid_exec_id(exec_id: &str) -> Result<(), TaskError> {
    if exec_id.is_empty() || exec_id.contains('/') || exec_id.len() > 255 {
        return Err(TaskError::InvalidArgument(format!(
            "invalid exec id {exec_id:?}"
        )));
    }
    Ok(())
}

fn process_not_found(req: &api::WaitRequest) -> TaskError {
    TaskError::NotFound(format!("process {} {}", req.id, req.exec_id))
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
        let pid = if req.exec_id.is_empty() {
            self.start_init(&req.id).await?
        } else {
            self.start_exec_process(&req.id, &req.exec_id).await?
        };
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
            .ok_or_else(|| container_not_found(&req.id))?;
        let p = c
            .process(&req.exec_id)
            .ok_or_else(|| exec_not_found(&req.id, &req.exec_id))?;
        Ok(api::StateResponse {
            id: if p.exec_id.is_empty() {
                c.id.clone()
            } else {
                p.exec_id.clone()
            },
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid,
            status: p.state().status().into(),
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
                .ok_or_else(|| process_not_found(&req))?
        };
        let _ = exited.wait_for(|done| *done).await;
        let containers = self.inner.containers.lock().unwrap();
        let p = containers
            .get(&req.id)
            .and_then(|c| c.process(&req.exec_id))
            .ok_or_else(|| process_not_found(&req))?;
        Ok(api::WaitResponse {
            exit_status: p.exit_status,
            exited_at: p.exited_at.clone().into(),
            ..Default::default()
        })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let (runc, bundle, pid) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get(&req.id)
                .ok_or_else(|| container_not_found(&req.id))?;
            let p = c
                .process(&req.exec_id)
                .ok_or_else(|| exec_not_found(&req.id, &req.exec_id))?;
            let pid = p.signal_target().map_err(TaskError::from)?;
            (c.runc.clone(), c.bundle.clone(), pid)
        };
        if req.exec_id.is_empty() {
            runc.kill(&req.id, &bundle, req.signal, req.all)
                .await
                .map_err(TaskError::from)?;
        } else {
            runc.signal(pid, req.signal as libc::c_int)
                .map_err(TaskError::io("signalling the exec"))?;
        }
        Ok(api::Empty::default())
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        self.settle(&req.id, &req.exec_id).await;
        if !req.exec_id.is_empty() {
            let mut containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| container_not_found(&req.id))?;
            let p = c
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| exec_not_found(&req.id, &req.exec_id))?;
            p.check(Action::Delete).map_err(TaskError::from)?;
            let p = c.execs.remove(&req.exec_id).expect("present");
            return Ok(api::DeleteResponse {
                pid: p.pid,
                exit_status: p.exit_status,
                exited_at: p.exited_at.into(),
                ..Default::default()
            });
        }
        let (runc, bundle, never_started) = {
            let containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get(&req.id)
                .ok_or_else(|| container_not_found(&req.id))?;
            c.init.check(Action::Delete).map_err(TaskError::from)?;
            (
                c.runc.clone(),
                c.bundle.clone(),
                c.init.state() == State::Created,
            )
        };
        // runc deletes a container that was never started only by force.
        if let Err(e) = runc.delete(&req.id, &bundle, never_started).await {
            warn!("runc delete {}: {e}; forcing", req.id);
            if let Err(e) = runc.delete(&req.id, &bundle, true).await {
                // Gone already is what delete wants; anything else is left for a retry.
                if !e.to_string().contains("does not exist") {
                    return Err(TaskError::from(e).into());
                }
            }
        }
        let mut c = self
            .inner
            .containers
            .lock()
            .unwrap()
            .remove(&req.id)
            .ok_or_else(|| container_not_found(&req.id))?;
        self.uncount_traffic(c.count.take()).await;
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
        let pids = runc.ps(&req.id).await.map_err(TaskError::from)?;
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
        Ok(self.freeze(&req.id, true).await?)
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        Ok(self.freeze(&req.id, false).await?)
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        valid_exec_id(&req.exec_id)?;
        {
            let mut containers = self.inner.containers.lock().unwrap();
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| container_not_found(&req.id))?;
            if c.execs.contains_key(&req.exec_id) {
                return Err(TaskError::AlreadyExists(format!("exec {}", req.exec_id)).into());
            }
            c.init.check(Action::Exec).map_err(TaskError::from)?;
            let mut p = Process::new(
                &req.id,
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
                p.spec = wiring::apply_to_exec(&p.spec, w).map_err(|e| {
                    TaskError::InvalidArgument(format!("exec {}: {e}", req.exec_id))
                })?;
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
            .ok_or_else(|| TaskError::NotFound(format!("process {} {}", req.id, req.exec_id)))?;
        io.resize(req.width, req.height)
            .map_err(TaskError::io("resizing the terminal"))?;
        Ok(api::Empty::default())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let closer = {
            let containers = self.inner.containers.lock().unwrap();
            containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .and_then(|p| p.io.as_ref())
                .map(|io| io.stdin_closer())
        };
        if let Some(closer) = closer {
            closer.close();
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
            .ok_or_else(|| TaskError::InvalidArgument("update without resources".into()))?;
        runc.update(&req.id, resources)
            .await
            .map_err(TaskError::from)?;
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
                .ok_or_else(|| container_not_found(&req.id))?
        };
        let metrics = tokio::task::spawn_blocking(move || {
            let cgroup = containerd_shim::cgroup::get_cgroup(pid)?;
            let mut metrics = containerd_shim::cgroup::collect_metrics(&cgroup)?;
            fill_memory(&cgroup, &mut metrics);
            Ok::<_, containerd_shim::Error>(metrics)
        })
        .await
        .map_err(|e| TaskError::Failed(e.to_string()))?
        .map_err(TaskError::from)?;
        let mut any = Any::new();
        any.type_url = "io.containerd.cgroups.v1.Metrics".into();
        any.value = metrics
            .write_to_bytes()
            .map_err(|e| TaskError::Failed(e.to_string()))?;
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

/// What the library's metrics leave out of the memory controller and the runc v2 shim reports
/// (and `ctr tasks metrics` shows): the limit, the peak, the failure count, cache and RSS.
fn fill_memory(
    cgroup: &cgroups_rs::fs::Cgroup,
    metrics: &mut containerd_shim::protos::cgroups::metrics::Metrics,
) {
    for subsystem in cgroup.subsystems() {
        if let cgroups_rs::fs::Subsystem::Mem(controller) = subsystem {
            let memory = controller.memory_stat();
            let stat = metrics.memory.mut_or_insert_default();
            let usage = stat.usage.mut_or_insert_default();
            usage.limit = u64::try_from(memory.limit_in_bytes).unwrap_or(0);
            usage.max = memory.max_usage_in_bytes;
            usage.failcnt = memory.fail_cnt;
            stat.cache = memory.stat.cache;
            stat.rss = memory.stat.rss;
            stat.total_cache = memory.stat.total_cache;
            stat.total_rss = memory.stat.total_rss;
        }
    }
}
