//! CPU affinity of a process's threads: what `cpu_placement: adaptive` moves.
//!
//! The pool-manager decides where the chain runs (it sees the load); each member moves its own
//! threads when told ([`crate::protocol::Event::Placement`]), because a process may always set
//! its own affinity, while moving another process needs CAP_SYS_NICE whenever that process
//! holds capabilities its mover lacks (the pool-manager holds none).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// This process's threads, shared by every member of the chain it runs (so that a second
/// member's gathering does not take the first one's gathered masks for the threads' own).
pub fn own_threads() -> &'static Mutex<OwnThreads> {
    static OWN: OnceLock<Mutex<OwnThreads>> = OnceLock::new();
    OWN.get_or_init(Default::default)
}

/// A CPU mask, as `sched_{get,set}affinity` take it.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The CPUs thread (or process) `tid` may run on; `None` if it is gone or not visible.
    pub fn of(tid: u32) -> Option<CpuSet> {
        // SAFETY: a zeroed cpu_set_t is an empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; the call only fills it.
        let rc = unsafe {
            libc::sched_getaffinity(tid as libc::pid_t, size_of::<libc::cpu_set_t>(), &mut set)
        };
        (rc == 0).then_some(CpuSet(set))
    }

    /// Just `cpu`.
    pub fn only(cpu: usize) -> CpuSet {
        // SAFETY: a zeroed cpu_set_t is an empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        if cpu < libc::CPU_SETSIZE as usize {
            // SAFETY: CPU_SET writes the bit of a CPU within the set's size (checked above).
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        CpuSet(set)
    }

    pub fn contains(&self, cpu: usize) -> bool {
        // SAFETY: CPU_ISSET reads the bit of a CPU within the set's size (checked first).
        cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, &self.0) }
    }

    pub fn cpus(&self) -> impl Iterator<Item = usize> + '_ {
        (0..libc::CPU_SETSIZE as usize).filter(|&c| self.contains(c))
    }

    /// Sets thread `tid`'s affinity to this set.
    pub fn apply(&self, tid: u32) -> std::io::Result<()> {
        // SAFETY: `self.0` is a valid cpu_set_t of the size passed.
        let rc = unsafe {
            libc::sched_setaffinity(tid as libc::pid_t, size_of::<libc::cpu_set_t>(), &self.0)
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// This process's threads (`/proc/self/task`, right whichever pid namespace `/proc` shows).
fn own_thread_ids() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// This process's threads, gathered on one CPU and given their own affinity back.
#[derive(Default)]
pub struct OwnThreads {
    /// Each thread's affinity before it was gathered.
    own: HashMap<u32, CpuSet>,
    /// The process's (its main thread's) before the gathering: for threads born gathered.
    process: Option<CpuSet>,
    gathered: Option<usize>,
}

impl OwnThreads {
    /// Where this process's threads are gathered, if they are.
    pub fn gathered(&self) -> Option<usize> {
        self.gathered
    }

    /// Puts every thread of this process on `cpu` (a thread not allowed `cpu` stays where it
    /// is); threads born since the last call are moved too. Returns how many threads are on
    /// `cpu` now.
    pub fn gather(&mut self, cpu: usize) -> usize {
        let me = std::process::id();
        if self.process.is_none() {
            self.process = CpuSet::of(me);
        }
        let mut on_cpu = 0;
        for tid in own_thread_ids() {
            let own = match self.own.get(&tid) {
                Some(own) => *own,
                None => {
                    // A thread born while gathered inherited the gathered mask, not its own.
                    let own = match self.gathered {
                        Some(_) => self.process,
                        None => CpuSet::of(tid),
                    };
                    let Some(own) = own else { continue };
                    self.own.insert(tid, own);
                    own
                }
            };
            if own.contains(cpu) && CpuSet::only(cpu).apply(tid).is_ok() {
                on_cpu += 1;
            }
        }
        self.gathered = Some(cpu);
        on_cpu
    }

    /// Gives every thread the affinity it had before it was gathered (threads born since get
    /// the process's).
    pub fn spread(&mut self) {
        if self.gathered.take().is_none() {
            return;
        }
        let process = self.process.take();
        for tid in own_thread_ids() {
            if let Some(own) = self.own.get(&tid).copied().or(process) {
                let _ = own.apply(tid);
            }
        }
        self.own.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPUs thread `tid` of this process may use, as the kernel reports them.
    fn allowed(tid: u32) -> Vec<usize> {
        CpuSet::of(tid).unwrap().cpus().collect()
    }

    fn gettid() -> u32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() as u32 }
    }

    #[test]
    fn own_threads_gather_and_get_their_own_affinity_back() {
        // This test's thread, and one born while gathered, are watched; other test threads of
        // the harness move too and get their affinity back the same way.
        let me = gettid();
        let own = allowed(me);
        let cpu = *own.last().unwrap();
        let mut threads = OwnThreads::default();
        assert!(threads.gather(cpu) >= 1);
        assert_eq!(threads.gathered(), Some(cpu));
        assert_eq!(allowed(me), vec![cpu]);
        // Born gathered: it inherits the gathered mask, and spreading gives it the process's.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let born = std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            rx.recv().unwrap();
        });
        let born_tid = tid_rx.recv().unwrap();
        assert_eq!(allowed(born_tid), vec![cpu]);
        threads.gather(cpu);
        threads.spread();
        assert_eq!(threads.gathered(), None);
        assert_eq!(allowed(me), own);
        assert_eq!(allowed(born_tid), own);
        tx.send(()).unwrap();
        born.join().unwrap();
    }
}
