//! The scaling signal: each function's concurrency (requests in flight) and request rate,
//! averaged over a stable and a panic window as Knative's autoscaler does, read off the chain's
//! load board (`spright_core::load`), where every instance keeps its own figures.
//!
//! Averages are exact, not sampled: an instance keeps the integral of its requests in flight
//! over time, so the mean concurrency over a window is the integral's growth divided by the
//! window's length. Samples are only the windows' starting points, taken once a tick.

use spright_core::ids::{Endpoint, FnId, InstanceId};
use spright_core::load::{LoadBoard, Reading};
use spright_core::protocol::FunctionLoad;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Knative's default stable window (a scaled function may set its own)...
pub const STABLE_WINDOW: Duration = Duration::from_secs(60);
/// ...and its default panic window (10% of the stable one).
pub const PANIC_WINDOW: Duration = Duration::from_secs(6);

/// The windows a function's figures are averaged over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub stable: Duration,
    pub panic: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            stable: STABLE_WINDOW,
            panic: PANIC_WINDOW,
        }
    }
}

impl Windows {
    /// Each function's windows: its scaling's, or Knative's defaults.
    pub fn of(chain: &spright_core::Chain) -> BTreeMap<u16, Windows> {
        chain
            .functions
            .iter()
            .filter_map(|f| {
                let s = f.scaling?;
                Some((
                    f.id,
                    Windows {
                        stable: s.stable_window(),
                        panic: s.panic_window(),
                    },
                ))
            })
            .collect()
    }
}
/// How often the windows' starting points are sampled, at most (and always while the chain is
/// idle)...
pub const TICK: Duration = Duration::from_secs(1);
/// ...and at least (for short panic windows: a third of the shortest).
pub const FASTEST_TICK: Duration = Duration::from_millis(200);

/// The sampling tick for these windows.
pub fn tick_for(windows: &BTreeMap<u16, Windows>) -> Duration {
    windows
        .values()
        .map(|w| w.panic / 3)
        .min()
        .unwrap_or(TICK)
        .clamp(FASTEST_TICK, TICK)
}

/// A function's totals at one instant: what its live instances report plus what the ones that
/// left had reported by then.
fn key(e: Endpoint) -> (u16, u16) {
    (e.function.0, e.instance.0)
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    at_ns: u64,
    busy_ns: u64,
    completed: u64,
}

#[derive(Debug, Default)]
struct History {
    /// Figures of the instances that left, as of their leaving.
    retired_busy_ns: u64,
    retired_completed: u64,
    /// Oldest first, reaching back a little past the stable window.
    samples: VecDeque<Totals>,
}

pub struct LoadWatch {
    /// How often [`LoadWatch::sample`] should be called.
    pub tick: Duration,
    board: LoadBoard,
    functions: BTreeMap<u16, History>,
    /// Each live instance's last good reading, used when its slot cannot be read (locked or
    /// changing): an instance's figures never go backwards.
    last: std::cell::RefCell<BTreeMap<(u16, u16), Reading>>,
    /// Functions with windows of their own; the others have the defaults.
    windows: BTreeMap<u16, Windows>,
}

impl LoadWatch {
    pub fn new(board: LoadBoard, windows: BTreeMap<u16, Windows>) -> LoadWatch {
        LoadWatch {
            tick: tick_for(&windows),
            board,
            functions: BTreeMap::new(),
            last: Default::default(),
            windows,
        }
    }

    fn windows(&self, function: u16) -> Windows {
        self.windows.get(&function).copied().unwrap_or_default()
    }

    /// A new instance takes `endpoint`'s slot: it starts from nothing. Called under the
    /// members lock, before anyone can read the instance as live.
    pub fn joined(&mut self, endpoint: Endpoint, now_ns: u64) {
        self.board.reset(endpoint, now_ns);
        self.last.get_mut().remove(&key(endpoint));
        self.functions.entry(endpoint.function.0).or_default();
    }

    /// `endpoint` left: what it had done stays in its function's totals, its requests in
    /// flight do not (they were abandoned). Called under the members lock, with the instance
    /// no longer live, so it is counted once, retired.
    pub fn left(&mut self, endpoint: Endpoint, now_ns: u64) {
        let r = self.reading(endpoint, now_ns);
        self.last.get_mut().remove(&key(endpoint));
        self.board.reset(endpoint, now_ns);
        let h = self.functions.entry(endpoint.function.0).or_default();
        h.retired_busy_ns = h.retired_busy_ns.saturating_add(r.busy_ns);
        h.retired_completed = h.retired_completed.saturating_add(r.completed);
    }

    /// `endpoint`'s figures now: its slot's, or its last good ones when the slot cannot be
    /// read, and never less than those.
    fn reading(&self, endpoint: Endpoint, now_ns: u64) -> Reading {
        let mut last = self.last.borrow_mut();
        let before = last.get(&key(endpoint)).copied().unwrap_or_default();
        let r = match self.board.read(endpoint, now_ns) {
            Some(r) => Reading {
                in_flight: r.in_flight,
                busy_ns: r.busy_ns.max(before.busy_ns),
                completed: r.completed.max(before.completed),
            },
            None => before,
        };
        last.insert(key(endpoint), r);
        r
    }

    fn current(&self, function: u16, instances: &[InstanceId], now_ns: u64) -> (Totals, u32) {
        let h = self.functions.get(&function);
        let mut t = Totals {
            at_ns: now_ns,
            busy_ns: h.map_or(0, |h| h.retired_busy_ns),
            completed: h.map_or(0, |h| h.retired_completed),
        };
        let mut in_flight = 0u32;
        for &i in instances {
            let r = self.reading(Endpoint::new(FnId(function), i), now_ns);
            t.busy_ns = t.busy_ns.saturating_add(r.busy_ns);
            t.completed = t.completed.saturating_add(r.completed);
            in_flight = in_flight.saturating_add(r.in_flight);
        }
        (t, in_flight)
    }

    /// Takes the windows' starting points (once a tick).
    /// Returns whether anything happened since the last sample (a request in flight, or one
    /// finished): while nothing does, the caller may look less often, since the totals stay
    /// exactly as they are until the next request starts.
    pub fn sample(&mut self, live: &BTreeMap<u16, Vec<InstanceId>>, now_ns: u64) -> bool {
        let functions: Vec<u16> = self.functions.keys().copied().collect();
        let mut active = false;
        for f in functions {
            let keep = (self.windows(f).stable + 2 * TICK).as_nanos() as u64;
            // (Kept for the longest tick: a shorter one keeps a few samples more.)
            let (t, in_flight) = self.current(f, live.get(&f).map_or(&[][..], |v| v), now_ns);
            let h = self.functions.get_mut(&f).expect("listed above");
            let moved = h
                .samples
                .back()
                .is_none_or(|last| (last.busy_ns, last.completed) != (t.busy_ns, t.completed));
            active |= in_flight > 0 || moved;
            h.samples.push_back(t);
            while h
                .samples
                .front()
                .is_some_and(|s| now_ns.saturating_sub(s.at_ns) > keep)
            {
                h.samples.pop_front();
            }
        }
        active
    }

    /// `function`'s figures now.
    pub fn figures(&self, function: u16, instances: &[InstanceId], now_ns: u64) -> FunctionLoad {
        let (now, in_flight) = self.current(function, instances, now_ns);
        let samples = self.functions.get(&function).map(|h| &h.samples);
        let over = |window: Duration| -> (f64, f64, f64) {
            let Some(samples) = samples else {
                return (0.0, 0.0, 0.0);
            };
            let from = now_ns.saturating_sub(window.as_nanos() as u64);
            // The newest sample from the window's start or before (so the window spans at
            // least its length, at most a tick more), else the oldest (the window is as long
            // as the chain is old when it is younger than that).
            let Some(start) = samples
                .iter()
                .rev()
                .find(|s| s.at_ns <= from)
                .or(samples.front())
            else {
                return (0.0, 0.0, 0.0);
            };
            let span = now.at_ns.saturating_sub(start.at_ns);
            if span == 0 {
                return (0.0, 0.0, 0.0);
            }
            let busy = now.busy_ns.saturating_sub(start.busy_ns) as f64;
            let done = now.completed.saturating_sub(start.completed) as f64;
            (
                busy / span as f64,
                done * 1e9 / span as f64,
                span as f64 / 1e9,
            )
        };
        let windows = self.windows(function);
        let (stable_concurrency, stable_rps, stable_seconds) = over(windows.stable);
        let (panic_concurrency, panic_rps, _) = over(windows.panic);
        FunctionLoad {
            in_flight,
            completed: now.completed,
            stable_concurrency,
            panic_concurrency,
            stable_requests_per_second: stable_rps,
            panic_requests_per_second: panic_rps,
            stable_window_seconds: stable_seconds.min(windows.stable.as_secs_f64() + 2.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn watch() -> (tempfile::TempDir, LoadWatch) {
        let dir = tempfile::tempdir().unwrap();
        let board = LoadBoard::create(&dir.path().join("b.load"), 1, 0o600).unwrap();
        (dir, LoadWatch::new(board, BTreeMap::new()))
    }

    fn ep(f: u16, i: u16) -> Endpoint {
        Endpoint::new(FnId(f), InstanceId(i))
    }

    #[test]
    fn windows_average_concurrency_and_rate_exactly() {
        let (_d, mut w) = watch();
        let live = BTreeMap::from([(1u16, vec![InstanceId(0), InstanceId(1)])]);
        w.joined(ep(1, 0), 0);
        w.joined(ep(1, 1), 0);
        // For 100 s: instance 0 always has 2 requests in flight, instance 1 one request half
        // of each second; 3 requests finish every second.
        w.board.started(ep(1, 0), 0);
        w.board.started(ep(1, 0), 0);
        for sec in 0..100u64 {
            w.sample(&live, sec * S);
            w.board.started(ep(1, 1), sec * S);
            w.board.finished(ep(1, 1), sec * S + S / 2);
            w.board.finished(ep(1, 0), sec * S + S / 4);
            w.board.started(ep(1, 0), sec * S + S / 4);
            w.board.finished(ep(1, 0), sec * S + 3 * S / 4);
            w.board.started(ep(1, 0), sec * S + 3 * S / 4);
        }
        let f = w.figures(1, &live[&1], 100 * S);
        assert_eq!(f.in_flight, 2);
        assert_eq!(f.completed, 300);
        for c in [f.stable_concurrency, f.panic_concurrency] {
            assert!((c - 2.5).abs() < 1e-9, "concurrency {c}");
        }
        for r in [f.stable_requests_per_second, f.panic_requests_per_second] {
            assert!((r - 3.0).abs() < 1e-9, "rate {r}");
        }
    }

    #[test]
    fn the_panic_window_sees_a_burst_the_stable_window_smooths() {
        let (_d, mut w) = watch();
        let live = BTreeMap::from([(2u16, vec![InstanceId(0)])]);
        w.joined(ep(2, 0), 0);
        for sec in 0..60u64 {
            w.sample(&live, sec * S);
        }
        // A burst: 6 requests in flight for the last 6 seconds.
        for _ in 0..6 {
            w.board.started(ep(2, 0), 54 * S);
        }
        let f = w.figures(2, &live[&2], 60 * S);
        assert!((f.panic_concurrency - 6.0).abs() < 1e-9, "{f:?}");
        // 6 * 6 s over the 60 s window.
        assert!((f.stable_concurrency - 36.0 / 60.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn an_instance_that_leaves_keeps_its_finished_work_and_drops_its_abandoned_requests() {
        let (_d, mut w) = watch();
        w.joined(ep(3, 0), 0);
        w.sample(&BTreeMap::from([(3u16, vec![InstanceId(0)])]), 0);
        w.board.started(ep(3, 0), 0);
        w.board.finished(ep(3, 0), S);
        w.board.started(ep(3, 0), S);
        w.left(ep(3, 0), 2 * S);
        let none = BTreeMap::from([(3u16, vec![])]);
        let f = w.figures(3, &none[&3], 4 * S);
        assert_eq!((f.in_flight, f.completed), (0, 1));
        // 2 s of one request over 4 s; nothing counted after it left.
        assert!((f.stable_concurrency - 0.5).abs() < 1e-9, "{f:?}");
        // The id comes back for a new instance: it starts from nothing, the total goes on.
        w.joined(ep(3, 0), 4 * S);
        w.board.started(ep(3, 0), 4 * S);
        w.board.finished(ep(3, 0), 5 * S);
        let one = BTreeMap::from([(3u16, vec![InstanceId(0)])]);
        let f = w.figures(3, &one[&3], 6 * S);
        assert_eq!(f.completed, 2);
        assert!((f.stable_concurrency - 3.0 / 6.0).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn a_function_may_have_windows_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let board = LoadBoard::create(&dir.path().join("b.load"), 1, 0o600).unwrap();
        let short = Windows {
            stable: Duration::from_secs(10),
            panic: Duration::from_secs(1),
        };
        let mut w = LoadWatch::new(board, BTreeMap::from([(4u16, short)]));
        let live = BTreeMap::from([(4u16, vec![InstanceId(0)]), (5, vec![InstanceId(0)])]);
        w.joined(ep(4, 0), 0);
        w.joined(ep(5, 0), 0);
        for sec in 0..=28u64 {
            w.sample(&live, sec * S);
        }
        // One request in flight at both for the last 2 s.
        w.board.started(ep(4, 0), 28 * S);
        w.board.started(ep(5, 0), 28 * S);
        w.sample(&live, 29 * S);
        let f = w.figures(4, &live[&4], 30 * S);
        assert!((f.panic_concurrency - 1.0).abs() < 1e-9, "{f:?}");
        assert!((f.stable_concurrency - 0.2).abs() < 1e-9, "{f:?}");
        let g = w.figures(5, &live[&5], 30 * S);
        // The defaults: 6 s and 60 s (the chain's 30 s, as it is younger).
        assert!((g.panic_concurrency - 2.0 / 6.0).abs() < 1e-9, "{g:?}");
        assert!((g.stable_concurrency - 2.0 / 30.0).abs() < 1e-9, "{g:?}");
        assert!(w.functions[&4].samples.len() <= 13);
    }

    #[test]
    fn a_slot_that_cannot_be_read_keeps_its_last_figures() {
        let (_d, mut w) = watch();
        let live = BTreeMap::from([(1u16, vec![InstanceId(0)])]);
        w.joined(ep(1, 0), 0);
        w.board.started(ep(1, 0), 0);
        for sec in 0..10u64 {
            w.sample(&live, sec * S);
        }
        // Locked for good from 10 s (a writer died mid-update, or someone holds it).
        w.board
            .slot_seq_for_tests(ep(1, 0))
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for sec in 10..20u64 {
            w.sample(&live, sec * S);
        }
        let f = w.figures(1, &live[&1], 20 * S);
        // The last good figure (9 s of one request) stays: no drop to nothing, and no spike
        // when a window starts at a sample taken meanwhile.
        assert!(f.panic_concurrency.abs() < 1e-9, "{f:?}");
        assert!((f.stable_concurrency - 9.0 / 20.0).abs() < 1e-9, "{f:?}");
        assert_eq!(f.in_flight, 1);
    }

    #[test]
    fn the_stable_window_says_how_much_it_has_seen() {
        let (_d, mut w) = watch();
        let live = BTreeMap::from([(1u16, vec![InstanceId(0)])]);
        w.joined(ep(1, 0), 0);
        assert_eq!(w.figures(1, &live[&1], S).stable_window_seconds, 0.0);
        for sec in 0..5u64 {
            w.sample(&live, sec * S);
        }
        assert!((w.figures(1, &live[&1], 5 * S).stable_window_seconds - 5.0).abs() < 1e-9);
        for sec in 5..100u64 {
            w.sample(&live, sec * S);
        }
        assert!((w.figures(1, &live[&1], 100 * S).stable_window_seconds - 60.0).abs() < 1e-9);
    }

    #[test]
    fn a_sample_says_whether_anything_happened_since_the_last() {
        let (_d, mut w) = watch();
        let live = BTreeMap::from([(1u16, vec![InstanceId(0)])]);
        w.joined(ep(1, 0), 0);
        assert!(w.sample(&live, 0), "the first sample");
        assert!(!w.sample(&live, S), "nothing happened");
        w.board.started(ep(1, 0), S);
        assert!(w.sample(&live, 2 * S), "a request in flight");
        w.board.finished(ep(1, 0), 2 * S);
        assert!(w.sample(&live, 3 * S), "one finished");
        assert!(!w.sample(&live, 4 * S));
    }

    #[test]
    fn old_samples_are_dropped() {
        let (_d, mut w) = watch();
        let live = BTreeMap::from([(1u16, vec![InstanceId(0)])]);
        w.joined(ep(1, 0), 0);
        for sec in 0..1000u64 {
            w.sample(&live, sec * S);
        }
        assert!(w.functions[&1].samples.len() <= 63);
    }
}
