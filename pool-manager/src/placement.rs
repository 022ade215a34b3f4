//! Where the chain's processes run.
//!
//! Every hop wakes the process it goes to. Across CPUs a wake-up is an inter-processor
//! interrupt, a remote run queue and a cold cache (20-40 µs on a small VM); on the CPU the
//! sender runs on it is a context switch of a few µs. So while the chain's processes (the
//! gateway and every function instance) use little CPU between them they are gathered on one
//! CPU, and when they need more they get back every CPU they may use, as they had it: the
//! affinity each thread had when first seen is what spreading restores, and a CPU a thread was
//! not allowed is never given to it. Poll mode is left alone: its processes spin, and each
//! needs a CPU of its own.
//!
//! The decision ([`Governor`]) is a pure function of the load, for tests. The load is read from
//! `/proc` (members in another pid namespace cannot be measured, and keep the chain spread);
//! the members move their own threads when told (`Event::Placement`), as moving another
//! process's threads would need CAP_SYS_NICE, and the pool-manager keeps no capability.

use spright_core::affinity::{own_threads, CpuSet};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How often the load is looked at while the chain works...
pub const TICK: Duration = Duration::from_millis(500);
/// ...and while it is (next to) idle, so that looking costs an idle chain next to nothing. A
/// burst that comes meanwhile runs on the one CPU until the look after it (about 2.5 s at
/// most) before spreading.
pub const QUIET_TICK: Duration = Duration::from_secs(2);
/// Below this many cores the chain counts as idle for [`QUIET_TICK`].
const IDLE_BELOW: f64 = 0.05;
/// Gather when the chain uses less than this many cores...
const GATHER_BELOW: f64 = 0.4;
/// ...for this many ticks in a row (a pause between bursts does not gather).
const GATHER_AFTER: u32 = 4;
/// Spread at once when the gathered chain uses more than this much of its one CPU.
const SPREAD_ABOVE: f64 = 0.7;

/// Where the chain runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every thread on the CPUs it was allowed.
    Spread,
    /// Every thread on this one CPU.
    Gathered(usize),
}

/// What to do after a look at the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    Stay,
    Gather(usize),
    Spread,
}

/// Decides from the chain's load where it runs.
#[derive(Debug)]
pub struct Governor {
    layout: Layout,
    quiet_ticks: u32,
}

impl Default for Governor {
    fn default() -> Self {
        Governor {
            layout: Layout::Spread,
            quiet_ticks: 0,
        }
    }
}

impl Governor {
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `cores`: CPU time the chain used over the last tick, per second of it. `cpu`: the one
    /// CPU every thread of the chain may run on, if there is one.
    pub fn observe(&mut self, cores: f64, cpu: Option<usize>) -> Move {
        match self.layout {
            Layout::Spread => {
                self.quiet_ticks = if cores < GATHER_BELOW {
                    self.quiet_ticks + 1
                } else {
                    0
                };
                match cpu {
                    Some(cpu) if self.quiet_ticks >= GATHER_AFTER => {
                        self.layout = Layout::Gathered(cpu);
                        self.quiet_ticks = 0;
                        Move::Gather(cpu)
                    }
                    _ => Move::Stay,
                }
            }
            Layout::Gathered(_) if cores > SPREAD_ABOVE || cpu.is_none() => {
                self.layout = Layout::Spread;
                Move::Spread
            }
            Layout::Gathered(_) => Move::Stay,
        }
    }
}

/// utime + stime of a whole process (all its threads), in clock ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`/proc`'s unit).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// What a look at the load asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Orders {
    /// Members (by pid) to tell where to run: `Some(cpu)` to gather there, `None` to spread.
    pub tell: Vec<(u32, Option<u32>)>,
}

/// The chain's load and where its members were told to run.
#[derive(Default)]
pub struct Placer {
    governor: Governor,
    /// The CPU ticks each process had at the last look.
    last_ticks: BTreeMap<u32, u64>,
    /// Members told to gather.
    told: BTreeSet<u32>,
    /// The load at the last look, in cores.
    cores: f64,
    cpu_busy: CpuBusy,
}

/// How busy each CPU was between two looks, from `/proc/stat`.
#[derive(Default)]
struct CpuBusy {
    last: BTreeMap<usize, (u64, u64)>,
}

impl CpuBusy {
    /// Each CPU's busy fraction since the last look (none on the first).
    fn look(&mut self) -> BTreeMap<usize, f64> {
        let now = read_cpu_times();
        let busy = now
            .iter()
            .filter_map(|(cpu, &(busy, total))| {
                let (b0, t0) = self.last.get(cpu)?;
                let dt = total.checked_sub(*t0).filter(|&d| d > 0)?;
                Some((*cpu, busy.saturating_sub(*b0) as f64 / dt as f64))
            })
            .collect();
        self.last = now;
        busy
    }
}

/// (busy, total) clock ticks of each CPU since boot.
fn read_cpu_times() -> BTreeMap<usize, (u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cpu")?;
            let (id, fields) = rest.split_once(' ')?;
            let cpu: usize = id.parse().ok()?;
            let v: Vec<u64> = fields
                .split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = v.iter().take(8).sum();
            // idle and iowait are the 4th and 5th fields.
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            Some((cpu, (total.saturating_sub(idle), total)))
        })
        .collect()
}

impl Placer {
    /// One look, `elapsed` after the last: measures the load of `members` (and of this process,
    /// with `with_self`), decides, and says whom to tell what. A member this process cannot see
    /// (pid 0: it is in another pid namespace) keeps the chain spread, as its load is unknown;
    /// one that has just exited is left out of this look.
    pub fn tick(&mut self, members: &[u32], with_self: bool, elapsed: Duration) -> (Move, Orders) {
        let me = std::process::id();
        let mut members = members.to_vec();
        members.sort_unstable();
        members.dedup();
        let members = &members[..];
        let mut used = 0u64;
        let visible = !members.is_empty() && members.iter().all(|&p| p > 1);
        let mut now = BTreeMap::new();
        for &pid in members.iter().chain(with_self.then_some(&me)) {
            let Some(t) = process_ticks(pid).filter(|_| pid > 1) else {
                continue;
            };
            if let Some(before) = self.last_ticks.get(&pid) {
                used += t.saturating_sub(*before);
            }
            now.insert(pid, t);
        }
        self.last_ticks = now;
        let cores = used as f64 / ticks_per_second() / elapsed.as_secs_f64().max(1e-3);
        self.cores = cores;
        let busy = self.cpu_busy.look();
        let common = if visible {
            least_busy_common_cpu(
                members.iter().chain(with_self.then_some(&me)).copied(),
                &busy,
            )
        } else {
            None
        };
        // Gathered, the chain also spreads when its CPU is busy with other work (another
        // chain gathered there, say): its own time is then capped by the competition.
        let pressure = match self.governor.layout() {
            Layout::Gathered(cpu) => cores.max(busy.get(&cpu).copied().unwrap_or(0.0)),
            Layout::Spread => cores,
        };

        let step = self.governor.observe(pressure, common);
        self.told.retain(|p| members.contains(p));
        let mut orders = Orders::default();
        match (step, self.governor.layout()) {
            (Move::Spread, _) => {
                orders.tell = std::mem::take(&mut self.told)
                    .into_iter()
                    .map(|p| (p, None))
                    .collect();
                own_threads().lock().unwrap().spread();
            }
            // Gathering, or keeping newcomers with the rest.
            (_, Layout::Gathered(cpu)) => {
                for &pid in members {
                    if self.told.insert(pid) {
                        orders.tell.push((pid, Some(cpu as u32)));
                    }
                }
                if with_self && step == Move::Gather(cpu) {
                    own_threads().lock().unwrap().gather(cpu);
                }
            }
            (Move::Stay | Move::Gather(_), Layout::Spread) => {}
        }
        (step, orders)
    }

    /// When to look again.
    pub fn next_look(&self) -> Duration {
        if self.cores < IDLE_BELOW {
            QUIET_TICK
        } else {
            TICK
        }
    }

    /// The chain is stopping: every member told to gather is to be told to spread.
    pub fn release(&mut self) -> Orders {
        own_threads().lock().unwrap().spread();
        Orders {
            tell: std::mem::take(&mut self.told)
                .into_iter()
                .map(|p| (p, None))
                .collect(),
        }
    }
}

/// Of the CPUs every one of `pids` may run on (as their main threads' affinity says), the
/// least busy; between equals the highest (CPU 0 takes most interrupts).
fn least_busy_common_cpu(
    pids: impl Iterator<Item = u32>,
    busy: &BTreeMap<usize, f64>,
) -> Option<usize> {
    let sets: Vec<CpuSet> = pids.map(CpuSet::of).collect::<Option<_>>()?;
    let first = sets.first()?;
    let mut best: Option<(usize, f64)> = None;
    for cpu in first.cpus().filter(|&c| sets.iter().all(|s| s.contains(c))) {
        let b = busy.get(&cpu).copied().unwrap_or(0.0);
        if best.is_none_or(|(_, least)| b <= least) {
            best = Some((cpu, b));
        }
    }
    best.map(|(cpu, _)| cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_chain_gathers_only_after_staying_quiet() {
        let mut g = Governor::default();
        for _ in 1..GATHER_AFTER {
            assert_eq!(g.observe(0.1, Some(1)), Move::Stay);
        }
        // A busy tick starts the count again.
        assert_eq!(g.observe(0.9, Some(1)), Move::Stay);
        for _ in 1..GATHER_AFTER {
            assert_eq!(g.observe(0.1, Some(1)), Move::Stay);
        }
        assert_eq!(g.observe(0.1, Some(1)), Move::Gather(1));
        assert_eq!(g.layout(), Layout::Gathered(1));
        assert_eq!(g.observe(0.1, Some(1)), Move::Stay);
    }

    #[test]
    fn a_gathered_chain_spreads_as_soon_as_it_needs_more() {
        let mut g = Governor::default();
        for _ in 0..GATHER_AFTER {
            g.observe(0.0, Some(0));
        }
        assert_eq!(g.layout(), Layout::Gathered(0));
        // Between the thresholds it stays where it is, whichever way it came.
        assert_eq!(g.observe(0.6, Some(0)), Move::Stay);
        assert_eq!(g.observe(0.8, Some(0)), Move::Spread);
        assert_eq!(g.layout(), Layout::Spread);
        assert_eq!(g.observe(0.6, Some(0)), Move::Stay);
        assert_eq!(g.layout(), Layout::Spread);
    }

    #[test]
    fn no_cpu_common_to_every_thread_means_no_gathering() {
        let mut g = Governor::default();
        for _ in 0..2 * GATHER_AFTER {
            assert_eq!(g.observe(0.0, None), Move::Stay);
        }
        // Gathered, then a newcomer allowed none of the chain's CPU: spread.
        for _ in 0..GATHER_AFTER {
            g.observe(0.0, Some(1));
        }
        assert_eq!(g.observe(0.0, None), Move::Spread);
    }

    #[test]
    fn members_are_told_to_gather_once_newcomers_too_and_all_to_spread() {
        // Two processes that use no CPU stand for members.
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (spawn(), spawn());
        let mut placer = Placer::default();
        let mut told = Vec::new();
        for _ in 0..=GATHER_AFTER {
            told.extend(placer.tick(&[a.id(), a.id()], false, TICK).1.tell);
        }
        // Told once, though listed twice (two members of one process).
        assert_eq!(told.len(), 1, "{told:?}");
        let (pid, cpu) = told[0];
        assert_eq!(pid, a.id());
        let cpu = cpu.expect("told to gather");
        assert!(CpuSet::of(a.id()).unwrap().contains(cpu as usize));
        // An idle chain is looked at less often.
        assert_eq!(placer.next_look(), QUIET_TICK);
        // A newcomer is told on the next look; the others are not told again.
        let (_, orders) = placer.tick(&[a.id(), b.id()], false, TICK);
        assert_eq!(orders.tell, vec![(b.id(), Some(cpu))]);
        assert_eq!(
            placer.tick(&[a.id(), b.id()], false, TICK).1,
            Orders::default()
        );
        // A member gone is forgotten; stopping tells the rest to spread.
        let _ = placer.tick(&[b.id()], false, TICK);
        assert_eq!(placer.release().tell, vec![(b.id(), None)]);
        // A member this process cannot see (pid 0: another pid namespace) keeps the chain
        // spread.
        let _ = a.kill();
        let _ = a.wait();
        let mut placer = Placer::default();
        for _ in 0..2 * GATHER_AFTER {
            let (step, orders) = placer.tick(&[0, b.id()], false, TICK);
            assert_eq!((step, orders), (Move::Stay, Orders::default()));
        }
        let _ = b.kill();
        let _ = b.wait();
    }
}
