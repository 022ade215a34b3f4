//! A function's pod and its scale, as Knative's autoscaler and activator keep it: up while
//! requests come, stopped after a grace period without any (scale to zero), started again by
//! the next request, which waits for it (a cold start). A pod whose process died is started
//! again by its next request too, as Kubernetes restarts crashed containers.

use super::pod::{Pod, PodSpec};
use super::LaunchError;
use crate::httpx;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a cold start may take before its requests fail (504).
pub const COLD_START_DEADLINE: Duration = Duration::from_secs(10);

pub struct Revision {
    pub spec: PodSpec,
    scale_to_zero: Option<Duration>,
    client: httpx::Client,
    /// Fast path: the pod answers and is not being stopped. Paired with `active` (both
    /// SeqCst) so that a request and the reaper never both go ahead: the request counts
    /// itself before reading `up`, the reaper clears `up` before reading the count.
    up: AtomicBool,
    /// Requests holding a [`Lease`].
    active: AtomicUsize,
    /// When the last request ended (or the pod came up), in ms since `epoch`.
    last_active_ms: AtomicU64,
    epoch: Instant,
    /// Starts so far; a request that waited while one failed takes that failure.
    attempts: AtomicU64,
    cold_starts: AtomicU64,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    pod: Option<Pod>,
    last_error: Option<Arc<LaunchError>>,
    /// The launcher is stopping: no more starts.
    closed: bool,
}

/// A request's hold on the pod: it is not scaled down while any is held.
pub struct Lease {
    revision: Arc<Revision>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.revision.touch();
        self.revision.active.fetch_sub(1, SeqCst);
    }
}

impl Revision {
    pub fn new(spec: PodSpec, scale_to_zero: Option<Duration>, client: httpx::Client) -> Revision {
        Revision {
            spec,
            scale_to_zero,
            client,
            up: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            attempts: AtomicU64::new(0),
            cold_starts: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    pub fn cold_starts(&self) -> u64 {
        self.cold_starts.load(SeqCst)
    }

    /// Starts the pod at launch and waits for it, within `within`.
    pub async fn start(&self, within: Duration) -> Result<(), LaunchError> {
        let mut state = self.state.lock().await;
        let pod = self.start_pod(within).await?;
        state.pod = Some(pod);
        self.touch();
        self.up.store(true, SeqCst);
        Ok(())
    }

    /// Holds the pod up for one request, starting it first if it is down.
    pub async fn acquire(self: &Arc<Self>) -> Result<Lease, Arc<LaunchError>> {
        self.active.fetch_add(1, SeqCst);
        let lease = Lease {
            revision: self.clone(),
        };
        if self.up.load(SeqCst) {
            return Ok(lease);
        }
        // In a task of its own: a client that gives up must not abort a start others wait on.
        let seen = self.attempts.load(SeqCst);
        let revision = self.clone();
        match tokio::spawn(async move { revision.cold_start(seen).await }).await {
            Ok(Ok(())) => Ok(lease),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(Arc::new(LaunchError::ColdStart {
                function: self.spec.function.clone(),
                problem: e.to_string(),
            })),
        }
    }

    async fn cold_start(&self, seen_attempts: u64) -> Result<(), Arc<LaunchError>> {
        let mut state = self.state.lock().await;
        if state.pod.is_some() {
            self.up.store(true, SeqCst);
            return Ok(());
        }
        if state.closed {
            return Err(Arc::new(LaunchError::ColdStart {
                function: self.spec.function.clone(),
                problem: "the launcher is stopping".into(),
            }));
        }
        if self.attempts.load(SeqCst) != seen_attempts {
            if let Some(e) = &state.last_error {
                return Err(e.clone()); // the start this request waited for failed
            }
        }
        self.attempts.fetch_add(1, SeqCst);
        let begun = Instant::now();
        let function = &self.spec.function;
        match self.start_pod(COLD_START_DEADLINE).await {
            Ok(pod) => {
                let n = self.cold_starts.fetch_add(1, SeqCst) + 1;
                eprintln!(
                    "cold start #{n} of {function}: pid {} ready in {} ms",
                    pod.pid(),
                    begun.elapsed().as_millis()
                );
                state.pod = Some(pod);
                state.last_error = None;
                self.touch();
                self.up.store(true, SeqCst);
                Ok(())
            }
            Err(e) => {
                let ms = begun.elapsed().as_millis();
                eprintln!("cold start of {function} failed after {ms} ms: {e}");
                let e = Arc::new(e);
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Starts a pod and waits until it answers; stops it again if it does not.
    async fn start_pod(&self, within: Duration) -> Result<Pod, LaunchError> {
        let mut pod = Pod::start(&self.spec)?;
        match pod.wait_healthy(&self.spec, &self.client, within).await {
            Ok(()) => Ok(pod),
            Err(e) => {
                pod.stop().await;
                Err(e)
            }
        }
    }

    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_active_ms.fetch_max(now, SeqCst);
    }

    fn idle(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_active_ms.load(SeqCst)))
    }

    /// Watches the pod until the launcher stops: restarts crashed pods on demand and, with
    /// scale to zero, stops pods idle for the grace period.
    pub async fn watch(self: Arc<Self>) {
        let tick = match self.scale_to_zero {
            Some(grace) => (grace / 4).clamp(Duration::from_millis(10), Duration::from_millis(250)),
            None => Duration::from_millis(250),
        };
        loop {
            tokio::time::sleep(tick).await;
            // Busy means a start or a stop is under way: look again next tick.
            let Ok(mut state) = self.state.try_lock() else {
                continue;
            };
            if state.closed {
                return;
            }
            let Some(pod) = state.pod.as_mut() else {
                continue;
            };
            if let Some(exit) = pod.exited() {
                self.up.store(false, SeqCst);
                eprintln!("{exit}; its next request starts it again");
                if let Some(pod) = state.pod.take() {
                    pod.stop().await;
                }
                continue;
            }
            let Some(grace) = self.scale_to_zero else {
                continue;
            };
            if self.active.load(SeqCst) > 0 || self.idle() < grace {
                continue;
            }
            self.up.store(false, SeqCst);
            if self.active.load(SeqCst) > 0 || self.idle() < grace {
                self.up.store(true, SeqCst); // a request slipped in
                continue;
            }
            let Some(pod) = state.pod.take() else {
                continue;
            };
            let pid = pod.pid();
            // Requests arriving meanwhile wait for the lock, then start it again.
            pod.stop().await;
            let function = &self.spec.function;
            eprintln!("scaled {function} to zero (pid {pid} stopped) after {grace:?} idle");
        }
    }

    /// Takes the pod for the final stop; no start happens after this.
    pub async fn close(&self) -> Option<Pod> {
        let mut state = self.state.lock().await;
        state.closed = true;
        self.up.store(false, SeqCst);
        state.pod.take()
    }
}
