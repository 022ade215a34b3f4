//! Process exits: every child the shim's reaper reaps is matched to the process it was, marked
//! at once, and reported to containerd once the process's output is out and after its start
//! event.

use super::TaskService;
use crate::container::Process;
use containerd_shim::asynchronous::monitor::monitor_subscribe;
use containerd_shim::monitor::{Subject, Topic};
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use log::{info, warn};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long an exit waits for the process's output to be copied out before it is reported.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// How long an exit waits for its process's start event to go out first.
const START_EVENT: Duration = Duration::from_secs(5);
/// Exits of pids the shim does not know yet: a process can exit before `runc create`/`exec`
/// returns and its pid is recorded. They are kept only while a start is in flight, and only
/// briefly, so a reused pid never inherits an old exit.
const UNCLAIMED_MAX: usize = 1024;
const UNCLAIMED_FOR: Duration = Duration::from_secs(30);

pub struct Unclaimed {
    pid: u32,
    code: i32,
    at: Timestamp,
    seen: Instant,
}

/// Counts a create or exec start in flight while alive.
pub struct StartInFlight<'a>(&'a AtomicUsize);

impl<'a> StartInFlight<'a> {
    pub fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        StartInFlight(counter)
    }
}

impl Drop for StartInFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TaskService {
    /// Follows every exit the reaper reports.
    pub(super) async fn watch_exits(&self) {
        let mut subscription = match monitor_subscribe(Topic::Pid).await {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot watch process exits: {e}");
                return;
            }
        };
        while let Some(event) = subscription.rx.recv().await {
            if let Subject::Pid(pid) = event.subject {
                self.exited(pid as u32, event.exit_code, super::now());
            }
        }
    }

    /// A child was reaped: mark its process at once (so kill and delete know it is gone) and
    /// report the exit in the background.
    pub(super) fn exited(&self, pid: u32, code: i32, at: Timestamp) {
        let found = {
            let mut containers = self.inner.containers.lock().unwrap();
            let hit = containers.values_mut().find_map(|c| {
                let (id, own_pid_namespace) = (c.id.clone(), c.own_pid_namespace);
                c.live_process_mut(pid).map(|p| {
                    p.reaped = Some((code, at.clone()));
                    (id, p.exec_id.clone(), own_pid_namespace)
                })
            });
            if hit.is_none() && self.inner.starts_in_flight.load(Ordering::SeqCst) > 0 {
                // Perhaps a process whose start has not recorded its pid yet (or runc itself).
                let mut unclaimed = self.inner.unclaimed.lock().unwrap();
                unclaimed.retain(|u| u.seen.elapsed() < UNCLAIMED_FOR);
                if unclaimed.len() >= UNCLAIMED_MAX {
                    unclaimed.remove(0);
                }
                unclaimed.push(Unclaimed {
                    pid,
                    code,
                    at: at.clone(),
                    seen: Instant::now(),
                });
            }
            hit
        };
        if let Some((id, exec_id, own_pid_namespace)) = found {
            self.spawn_finish(id, exec_id, pid, code, at, own_pid_namespace);
        }
    }

    /// Records a started process's pid; if that pid already exited during this start, takes
    /// the exit. Called with the containers lock held, so an exit cannot slip between.
    pub(super) fn record_pid(
        &self,
        p: &mut Process,
        pid: u32,
        since: Instant,
    ) -> Option<(i32, Timestamp)> {
        p.pid = pid;
        let mut unclaimed = self.inner.unclaimed.lock().unwrap();
        let i = unclaimed
            .iter()
            .position(|u| u.pid == pid && u.seen >= since)?;
        let u = unclaimed.remove(i);
        p.reaped = Some((u.code, u.at.clone()));
        Some((u.code, u.at))
    }

    /// Reports an exit in the background: one process's slow output must not hold up another's.
    pub(super) fn spawn_finish(
        &self,
        id: String,
        exec_id: String,
        pid: u32,
        code: i32,
        at: Timestamp,
        own_pid_namespace: bool,
    ) {
        let service = self.clone();
        tokio::spawn(async move {
            service
                .finish(&id, &exec_id, pid, code, at, own_pid_namespace)
                .await
        });
    }

    pub(super) async fn finish(
        &self,
        id: &str,
        exec_id: &str,
        pid: u32,
        code: i32,
        at: Timestamp,
        own_pid_namespace: bool,
    ) {
        if exec_id.is_empty() {
            // A stopped function no longer shares its namespace's count: at once, not after
            // its output is out.
            let counted = {
                let mut containers = self.inner.containers.lock().unwrap();
                containers.get_mut(id).and_then(|c| c.count.take())
            };
            self.uncount_traffic(counted).await;
        }
        if exec_id.is_empty() && !own_pid_namespace {
            // Without a PID namespace of its own nothing ends the container's other processes
            // when its init exits (a private namespace's kernel would): kill them, as the runc
            // v2 shim does.
            if let Ok((runc, bundle)) = self.container_runc(id) {
                let _ = runc.kill(id, &bundle, libc::SIGKILL as u32, true).await;
            }
        }
        let (waiter, mut started) = {
            let containers = self.inner.containers.lock().unwrap();
            let Some(p) = containers.get(id).and_then(|c| c.process(exec_id)) else {
                return;
            };
            (
                p.io.as_ref().map(|io| io.output_waiter()),
                p.started.subscribe(),
            )
        };
        // After the output: the pipes end when their last holder exits.
        if let Some(waiter) = waiter {
            let _ = tokio::task::spawn_blocking(move || waiter.wait(OUTPUT_DRAIN)).await;
        }
        // After the start event (for a process whose start is still being reported).
        let _ = tokio::time::timeout(START_EVENT, started.wait_for(|s| *s)).await;
        {
            let mut containers = self.inner.containers.lock().unwrap();
            let Some(p) = containers.get_mut(id).and_then(|c| c.process_mut(exec_id)) else {
                return;
            };
            // Reported once: a second report of one exit is refused by its state.
            if !p.set_exited(code, at.clone()) {
                return;
            }
        }
        let what = if exec_id.is_empty() { "init" } else { exec_id };
        info!("{id} {what} exited with {code}");
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
}
