//! The chain's load board: a shared-memory file beside the pool in which every instance keeps
//! how many requests it is handling, for how long it has been handling them (the integral of
//! that count over time) and how many it has finished. The pool-manager reads it to give
//! autoscalers a concurrency and a request rate per function, averaged over any window, with
//! no message, syscall or wake-up per request and nothing at all while the chain is idle.
//!
//! ```text
//! 0      LoadHeader (one page)
//! PAGE   Slot[MAX_FUNCTIONS][MAX_INSTANCES], 64 bytes each (one cache line: no false sharing)
//! ```
//! The file is sparse: only the pages of slots in use take memory. Times are `CLOCK_MONOTONIC`
//! nanoseconds, one clock for every process on the host (a container in its own time namespace
//! would shift them; runc makes none).
//!
//! Each slot is a sequence lock whose counter is also the writers' lock (an instance's threads
//! may finish requests at once). Nothing here trusts the other side to be well behaved: the
//! count of requests in flight and of those finished change by atomic read-modify-writes,
//! exact whatever the lock says; a writer that cannot take the lock within a few spins leaves
//! the time integral to the next one (an error of microseconds, never a wait); a reader gives
//! up on a slot that keeps changing or stays locked; all arithmetic saturates or wraps.

use crate::ids::{Endpoint, MAX_FUNCTIONS, MAX_INSTANCES};
use memmap2::MmapRaw;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

pub const LOAD_MAGIC: [u8; 8] = *b"SPRTLOAD";
pub const LOAD_VERSION: u32 = 1;
const PAGE: u64 = 4096;
const SLOT_SIZE: u64 = 64;
const SLOTS: u64 = MAX_FUNCTIONS as u64 * MAX_INSTANCES as u64;
const TOTAL_SIZE: u64 = PAGE + SLOTS * SLOT_SIZE;
/// How often a writer tries a slot another writer holds before it updates without the lock.
const WRITE_SPINS: u32 = 64;
/// How often a reader retries a slot that changed under it.
const READ_TRIES: u32 = 100;

/// Where the load board of the pool at `pool_path` lives: beside it.
pub fn load_path(pool_path: &Path) -> PathBuf {
    let mut p = pool_path.as_os_str().to_owned();
    p.push(".load");
    PathBuf::from(p)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("load board {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("load board {path} already exists (another pool-manager for this chain, or a stale file to remove)")]
    Exists { path: PathBuf },
    #[error("load board {path} is not a spright load board (bad magic or size)")]
    NotABoard { path: PathBuf },
    #[error("load board {path} has version {found}, this build speaks {expected}")]
    VersionMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("load board {path} has slots of another geometry ({problem}) than this build's")]
    Geometry { path: PathBuf, problem: String },
    #[error("load board {path} belongs to pool {found:#x}, not to pool {expected:#x}")]
    WrongPool {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
}

#[repr(C)]
struct LoadHeader {
    magic: [u8; 8],
    version: u32,
    slot_size: u32,
    function_slots: u32,
    instance_slots: u32,
    pool_id: u64,
}

#[repr(C, align(64))]
struct Slot {
    /// Odd while a writer updates the slot; doubles as the writers' lock.
    seq: AtomicU32,
    in_flight: AtomicU32,
    /// When `in_flight` last changed.
    since_ns: AtomicU64,
    /// Integral of `in_flight` over time, up to `since_ns`.
    busy_ns: AtomicU64,
    /// Requests finished.
    completed: AtomicU64,
}

const _: () = assert!(size_of::<Slot>() == SLOT_SIZE as usize);
const _: () = assert!(size_of::<LoadHeader>() <= PAGE as usize);

/// One instance's figures at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Requests being handled now.
    pub in_flight: u32,
    /// Integral of requests in flight over time, in request-nanoseconds, up to the reading.
    pub busy_ns: u64,
    /// Requests finished.
    pub completed: u64,
}

/// A mapped load board.
pub struct LoadBoard {
    map: MmapRaw,
    path: PathBuf,
}

// SAFETY: the map is shared memory reached only through atomics.
unsafe impl Send for LoadBoard {}
// SAFETY: as above.
unsafe impl Sync for LoadBoard {}

impl LoadBoard {
    /// Creates the board of pool `pool_id` at `path`, which must not exist yet.
    pub fn create(path: &Path, pool_id: u64, mode: u32) -> Result<LoadBoard, LoadError> {
        let io_err = |source| LoadError::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::shm_file::create_new(path, mode).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                LoadError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io_err(e)
            }
        })?;
        let init = || -> Result<LoadBoard, LoadError> {
            file.set_len(TOTAL_SIZE).map_err(io_err)?;
            let map = MmapRaw::map_raw(&file).map_err(io_err)?;
            // SAFETY: the map is TOTAL_SIZE bytes, freshly zeroed and not shared yet.
            let header = unsafe { &mut *(map.as_mut_ptr() as *mut LoadHeader) };
            header.version = LOAD_VERSION;
            header.slot_size = SLOT_SIZE as u32;
            header.function_slots = MAX_FUNCTIONS as u32;
            header.instance_slots = MAX_INSTANCES as u32;
            header.pool_id = pool_id;
            // Magic last: a reader that sees it sees a complete header.
            std::sync::atomic::fence(Ordering::Release);
            header.magic = LOAD_MAGIC;
            Ok(LoadBoard {
                map,
                path: path.to_owned(),
            })
        };
        init().inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
    }

    /// Maps the board at `path` and checks that it is pool `pool_id`'s.
    pub fn open(path: &Path, pool_id: u64) -> Result<LoadBoard, LoadError> {
        let io_err = |source| LoadError::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::shm_file::open(path).map_err(io_err)?;
        if file.metadata().map_err(io_err)?.len() != TOTAL_SIZE {
            return Err(LoadError::NotABoard {
                path: path.to_owned(),
            });
        }
        let map = MmapRaw::map_raw(&file).map_err(io_err)?;
        // SAFETY: the whole board is mapped; the header is checked, not trusted.
        let header = unsafe { &*(map.as_ptr() as *const LoadHeader) };
        if header.magic != LOAD_MAGIC {
            return Err(LoadError::NotABoard {
                path: path.to_owned(),
            });
        }
        if header.version != LOAD_VERSION {
            return Err(LoadError::VersionMismatch {
                path: path.to_owned(),
                found: header.version,
                expected: LOAD_VERSION,
            });
        }
        let geometry = (
            header.slot_size,
            header.function_slots,
            header.instance_slots,
        );
        if geometry != (SLOT_SIZE as u32, MAX_FUNCTIONS as u32, MAX_INSTANCES as u32) {
            return Err(LoadError::Geometry {
                path: path.to_owned(),
                problem: format!(
                    "{} bytes a slot, {} functions of {} instances",
                    geometry.0, geometry.1, geometry.2
                ),
            });
        }
        if header.pool_id != pool_id {
            return Err(LoadError::WrongPool {
                path: path.to_owned(),
                found: header.pool_id,
                expected: pool_id,
            });
        }
        Ok(LoadBoard {
            map,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn slot(&self, endpoint: Endpoint) -> Option<&Slot> {
        let (f, i) = (endpoint.function.0, endpoint.instance.0);
        if f >= MAX_FUNCTIONS || i >= MAX_INSTANCES {
            return None;
        }
        let index = f as u64 * MAX_INSTANCES as u64 + i as u64;
        // SAFETY: the index is within the slot table, which lies within the map; slots are
        // aligned (PAGE + index * 64) and only ever reached through atomics.
        Some(unsafe {
            &*(self.map.as_ptr().add((PAGE + index * SLOT_SIZE) as usize) as *const Slot)
        })
    }

    /// The sequence word of `endpoint`'s slot, for tests that lock a slot by hand.
    #[doc(hidden)]
    pub fn slot_seq_for_tests(&self, endpoint: Endpoint) -> &AtomicU32 {
        &self.slot(endpoint).expect("in range").seq
    }

    /// Clears `endpoint`'s slot for a new instance (the pool-manager does, before it answers the
    /// instance's registration).
    pub fn reset(&self, endpoint: Endpoint, now_ns: u64) {
        if let Some(slot) = self.slot(endpoint) {
            // A writer can only be a previous holder of the slot, which has left: take the slot
            // whatever its lock says.
            let seq = slot.seq.load(Ordering::Relaxed);
            slot.seq.store((seq | 1).wrapping_add(2), Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Release);
            slot.in_flight.store(0, Ordering::Relaxed);
            slot.since_ns.store(now_ns, Ordering::Relaxed);
            slot.busy_ns.store(0, Ordering::Relaxed);
            slot.completed.store(0, Ordering::Relaxed);
            slot.seq.store((seq | 1).wrapping_add(3), Ordering::Release);
        }
    }

    /// The figures of `endpoint`'s slot as of `now_ns`, or `None` when the slot kept changing
    /// or stayed locked (a writer died mid-update, or someone scribbled on it).
    pub fn read(&self, endpoint: Endpoint, now_ns: u64) -> Option<Reading> {
        let slot = self.slot(endpoint)?;
        for _ in 0..READ_TRIES {
            let before = slot.seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let in_flight = slot.in_flight.load(Ordering::Relaxed);
            let since = slot.since_ns.load(Ordering::Relaxed);
            let busy = slot.busy_ns.load(Ordering::Relaxed);
            let completed = slot.completed.load(Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == before {
                let running = (in_flight as u64).saturating_mul(now_ns.saturating_sub(since));
                return Some(Reading {
                    in_flight,
                    busy_ns: busy.saturating_add(running),
                    completed,
                });
            }
        }
        None
    }

    /// Records that `endpoint` started handling a request at `now_ns`.
    pub fn started(&self, endpoint: Endpoint, now_ns: u64) {
        self.update(endpoint, now_ns, true);
    }

    /// Records that `endpoint` finished handling a request at `now_ns`.
    pub fn finished(&self, endpoint: Endpoint, now_ns: u64) {
        self.update(endpoint, now_ns, false);
    }

    fn update(&self, endpoint: Endpoint, now_ns: u64, start: bool) {
        let Some(slot) = self.slot(endpoint) else {
            return;
        };
        // The count and the total are exact whatever happens to the lock: they change by
        // atomic read-modify-writes. The lock only keeps the integral's three fields together;
        // a writer that does not get it at once (another thread of the instance is updating,
        // or someone holds it for ever) changes the count without folding in the time since
        // the last change, and the next writer that gets the lock folds it in at the count of
        // then: an error of the few microseconds the writers overlapped, never a wait.
        let locked = self.try_lock(slot);
        if locked.is_some() {
            // Readers that see any of the stores below must also see the odd sequence.
            std::sync::atomic::fence(Ordering::Release);
            let in_flight = slot.in_flight.load(Ordering::Relaxed) as u64;
            let since = slot.since_ns.load(Ordering::Relaxed);
            let busy = slot.busy_ns.load(Ordering::Relaxed);
            let elapsed = now_ns.saturating_sub(since);
            slot.busy_ns.store(
                busy.saturating_add(in_flight.saturating_mul(elapsed)),
                Ordering::Relaxed,
            );
            slot.since_ns.store(since.max(now_ns), Ordering::Relaxed);
        }
        if start {
            let _ = slot
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
        } else {
            let _ = slot
                .in_flight
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            slot.completed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(seq) = locked {
            slot.seq.store(seq.wrapping_add(2), Ordering::Release);
        }
    }

    /// Takes the writers' lock of `slot` if it is free within a few spins, returning the even
    /// sequence it held.
    fn try_lock(&self, slot: &Slot) -> Option<u32> {
        for _ in 0..WRITE_SPINS {
            let seq = slot.seq.load(Ordering::Relaxed);
            if seq & 1 == 0
                && slot
                    .seq
                    .compare_exchange_weak(
                        seq,
                        seq.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                return Some(seq);
            }
            std::hint::spin_loop();
        }
        None
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the board's one clock.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests;
