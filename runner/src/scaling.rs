//! Instances that follow load (`instances: {min, max, target_concurrency, window}`), sized as
//! Knative's autoscaler sizes a revision, from the pool-manager's scaling signal: the
//! concurrency of each function averaged over its stable window, and over its panic window (a
//! tenth of it) to react to bursts.
//!
//! - Wanted instances: the stable concurrency over the target, rounded up, within min..=max.
//! - Panic: when the panic window asks for at least twice the instances running, the panic
//!   figure is used instead, and no instance is removed until a whole stable window has passed
//!   without another such burst.
//! - At most half the instances go in one decision, none while the panic window still keeps
//!   them busy, and none while the figures cover less than half the stable window (the chain,
//!   or a restarted pool-manager, is young), so a lull or a gap in the data does not empty a
//!   function about to be busy again.
//!
//! Removing an instance is a SIGTERM: it withdraws from load balancing, finishes what it has
//! and leaves (see the SDK), so no request is lost to a scale-down.

use slog::{info, Logger};
use spright_core::chain::Scaling;
use spright_core::protocol::{ControlRequest, ControlResponse, FunctionLoad};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

/// How much more the panic window must ask for than is running to start panicking (Knative's
/// default panic threshold, 200%).
const PANIC_THRESHOLD: f64 = 2.0;

/// The sizing decisions for one function.
#[derive(Debug)]
pub struct Autoscaler {
    spec: Scaling,
    /// Panicking until then (extended by every new burst).
    panic_until: Option<Instant>,
}

impl Autoscaler {
    pub fn new(spec: Scaling) -> Autoscaler {
        Autoscaler {
            spec,
            panic_until: None,
        }
    }

    /// How often the decision is worth taking again: a few times per panic window.
    pub fn tick(&self) -> Duration {
        (self.spec.panic_window() / 2).clamp(Duration::from_millis(250), Duration::from_secs(2))
    }

    pub fn panicking(&self, now: Instant) -> bool {
        self.panic_until.is_some_and(|t| now < t)
    }

    /// The instances `function` should have, given `running` now and its `load`.
    pub fn wanted(&mut self, now: Instant, running: u16, load: &FunctionLoad) -> u16 {
        let target = self.spec.target_concurrency as f64;
        let instances =
            |concurrency: f64| (concurrency / target).ceil().min(u16::MAX as f64) as u16;
        let stable = instances(load.stable_concurrency);
        let burst = instances(load.panic_concurrency);
        if running > 0 && burst as f64 >= PANIC_THRESHOLD * running as f64 {
            self.panic_until = Some(now + self.spec.stable_window());
        }
        // Too little history (the chain, or a restarted pool-manager, is young): nothing goes.
        let seen_enough =
            load.stable_window_seconds >= self.spec.stable_window().as_secs_f64() / 2.0;
        let wanted = if self.panicking(now) {
            // Never fewer while panicking.
            burst.max(stable).max(running)
        } else {
            self.panic_until = None;
            // At most half of them go at once, and none the panic window still keeps busy.
            let floor = if seen_enough {
                running.div_ceil(2)
            } else {
                running
            };
            stable.max(floor).max(burst.min(running))
        };
        wanted.clamp(self.spec.min, self.spec.max)
    }
}

/// An instance started above a function's minimum.
pub struct Extra {
    /// Tells its supervisor to stop it (and not start it again).
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

type Starter = Box<dyn FnMut(u16) -> Extra + Send>;

/// A function whose instances follow load.
pub struct ScaledFunction {
    name: String,
    id: u16,
    min: u16,
    autoscaler: Autoscaler,
    /// Starts instance number N (counting the minimum's).
    start: Starter,
    extras: Vec<Extra>,
}

impl ScaledFunction {
    pub fn new(name: String, id: u16, spec: Scaling, start: Starter) -> ScaledFunction {
        ScaledFunction {
            name,
            id,
            min: spec.min,
            autoscaler: Autoscaler::new(spec),
            start,
            extras: Vec::new(),
        }
    }

    fn running(&self) -> u16 {
        self.min + self.extras.len() as u16
    }
}

/// For the life of the chain: sizes every scaled function to its load, then stops the
/// instances it started (each finishing what it has) once `stop` says so.
pub async fn follow(
    control: PathBuf,
    mut functions: Vec<ScaledFunction>,
    mut stop: watch::Receiver<bool>,
    log: Logger,
) {
    let tick = functions
        .iter()
        .map(|f| f.autoscaler.tick())
        .min()
        .unwrap_or(Duration::from_secs(2));
    let mut leaving: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut signal = Signal::default();
    let mut loads: Vec<(u16, FunctionLoad)> = Vec::new();
    loop {
        // The pool-manager says when the figures change (nothing while the chain is idle);
        // a timer only while something may still have to go (instances above the minimum,
        // or a panic that has to run out).
        let unsettled = functions
            .iter()
            .any(|f| !f.extras.is_empty() || f.autoscaler.panicking(Instant::now()));
        tokio::select! {
            _ = stop.changed() => break,
            got = signal.next(&control) => match got {
                Some(now) => loads = now,
                None => {
                    // The pool-manager is restarting: decide nothing on its predecessor's
                    // figures (its successor's first ones cover too little to remove
                    // anything), and look again in a moment.
                    loads.clear();
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
            _ = tokio::time::sleep(tick), if unsettled => {}
        }
        leaving.retain(|t| !t.is_finished());
        let now = Instant::now();
        for f in &mut functions {
            let Some(load) = loads.iter().find(|(id, _)| *id == f.id).map(|(_, l)| *l) else {
                continue;
            };
            let running = f.running();
            let wanted = f.autoscaler.wanted(now, running, &load);
            if wanted == running {
                continue;
            }
            info!(log, "scaling"; "function" => &f.name, "from" => running, "to" => wanted,
                "stable_concurrency" => format!("{:.2}", load.stable_concurrency),
                "panic_concurrency" => format!("{:.2}", load.panic_concurrency),
                "panicking" => f.autoscaler.panicking(now));
            while f.running() < wanted {
                let n = f.running();
                let extra = (f.start)(n);
                f.extras.push(extra);
            }
            while f.running() > wanted {
                // The newest goes first; it withdraws, finishes and leaves on its own time.
                let extra = f.extras.pop().expect("above the minimum");
                let _ = extra.stop.send(true);
                leaving.push(extra.task);
            }
        }
    }
    for f in &mut functions {
        for extra in f.extras.drain(..) {
            let _ = extra.stop.send(true);
            leaving.push(extra.task);
        }
    }
    for task in leaving {
        let _ = task.await;
    }
}

/// The pool-manager's control connection, watching the scaling signal (it writes a line each
/// time the figures change), opened again after the pool-manager restarts.
#[derive(Default)]
struct Signal {
    lines: Option<tokio::io::Lines<BufReader<UnixStream>>>,
}

impl Signal {
    /// The next figures, or `None` when the pool-manager cannot be reached (or hung up).
    /// Cancel-safe: a line half read stays buffered for the next call.
    async fn next(&mut self, control: &Path) -> Option<Vec<(u16, FunctionLoad)>> {
        match self.next_once(control).await {
            Ok(loads) => Some(loads),
            Err(_) => {
                self.lines = None;
                None
            }
        }
    }

    async fn next_once(&mut self, control: &Path) -> std::io::Result<Vec<(u16, FunctionLoad)>> {
        if self.lines.is_none() {
            let mut conn =
                tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(control))
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
            let mut line = serde_json::to_vec(&ControlRequest::WatchLoad)?;
            line.push(b'\n');
            conn.write_all(&line).await?;
            self.lines = Some(BufReader::new(conn).lines());
        }
        let lines = self.lines.as_mut().expect("connected above");
        let Some(answer) = lines.next_line().await? else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        match serde_json::from_str(&answer)? {
            ControlResponse::Load { functions } => Ok(functions),
            other => Err(std::io::Error::other(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Scaling {
        Scaling {
            min: 1,
            max: 4,
            target_concurrency: 2,
            window_ms: 6_000,
        }
    }

    fn load(stable: f64, panic: f64) -> FunctionLoad {
        FunctionLoad {
            stable_concurrency: stable,
            panic_concurrency: panic,
            stable_window_seconds: 6.0,
            ..FunctionLoad::default()
        }
    }

    #[test]
    fn nothing_is_removed_on_too_little_history() {
        let mut a = Autoscaler::new(spec());
        let t = Instant::now();
        let young = FunctionLoad {
            stable_window_seconds: 2.0,
            ..load(0.0, 0.0)
        };
        assert_eq!(
            a.wanted(t, 3, &young),
            3,
            "a restarted pool-manager reports nothing yet"
        );
        assert_eq!(a.wanted(t, 3, &load(0.0, 0.0)), 2);
        // Scaling up needs no history.
        let burst = FunctionLoad {
            stable_window_seconds: 0.5,
            ..load(0.0, 8.0)
        };
        assert_eq!(a.wanted(t, 1, &burst), 4);
    }

    #[test]
    fn steady_load_gets_its_concurrency_over_the_target_within_bounds() {
        let mut a = Autoscaler::new(spec());
        let t = Instant::now();
        assert_eq!(a.wanted(t, 1, &load(0.0, 0.0)), 1, "never below min");
        assert_eq!(a.wanted(t, 2, &load(3.0, 3.0)), 2);
        assert_eq!(a.wanted(t, 2, &load(5.0, 5.0)), 3);
        assert_eq!(a.wanted(t, 4, &load(40.0, 30.0)), 4, "never above max");
    }

    #[test]
    fn a_burst_scales_up_at_once_and_holds_for_a_stable_window() {
        let mut a = Autoscaler::new(spec());
        let t = Instant::now();
        // The stable window has hardly seen it yet; the panic window has.
        assert_eq!(a.wanted(t, 1, &load(0.5, 8.0)), 4);
        assert!(a.panicking(t));
        // The burst is over, but panic holds the instances for a stable window.
        let later = t + Duration::from_secs(3);
        assert_eq!(a.wanted(later, 4, &load(1.0, 0.0)), 4);
        // Then they go, at most half at a time.
        let after = t + Duration::from_secs(7);
        assert_eq!(a.wanted(after, 4, &load(0.5, 0.0)), 2);
        assert!(!a.panicking(after));
        assert_eq!(a.wanted(after, 2, &load(0.5, 0.0)), 1);
    }

    #[test]
    fn a_rise_short_of_the_threshold_is_followed_without_panic() {
        let mut a = Autoscaler::new(spec());
        let t = Instant::now();
        // The panic window asks for 3 with 2 running: under twice as many.
        assert_eq!(a.wanted(t, 2, &load(2.0, 5.0)), 2);
        assert!(!a.panicking(t));
        assert_eq!(a.wanted(t, 2, &load(5.5, 5.0)), 3);
    }
}
