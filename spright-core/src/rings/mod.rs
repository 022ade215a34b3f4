//! D-SPRIGHT's descriptor rings, for `routing: poll`.
//!
//! Instead of sockets and a router, every endpoint (each instance of each function, the
//! gateway's included) owns a ring in a file next to the pool: a bounded multi-producer queue of
//! descriptors that its owner busy-polls. With no router in between, the *sender* does the
//! router's work ([`Rings::send`]): it stamps its own identity, checks the chain's allow list,
//! picks an instance, records where the buffer went and counts, and hands refusals back into
//! its own ring exactly as SPROXY would. So poll mode trusts the chain's members to send
//! through this code (as the paper's D-SPRIGHT does); the pool's claim checks still stop
//! forged, stale or foreign buffers. The pool-manager creates the file, rewrites the
//! live-instance table as instances come and go, and reads the counters and transit records.
//!
//! Each ring is Vyukov's bounded queue. A cell's sequence number says whose turn it is: `p`
//! means free for the producer of position `p`, `p + 1` means it holds that descriptor for the
//! consumer, and the consumer hands it to the next lap with `p + cells`. Producers reserve a
//! position with a compare-and-swap on `head`; the consumer takes one the same way on `tail`.
//! Publishing and releasing are compare-and-swaps too, so the pool-manager can finish the step
//! of a process killed in between ([`Rings::interrupted_pushes`], [`Rings::finish_pop`])
//! without ever moving a sequence number backwards.

mod layout;

pub use layout::{
    Cell, FunctionRecord, RingHeader, RingsHeader, RingsLayout, CELL_SIZE, NO_SLOT, POLL_INSTANCES,
    RINGS_MAGIC, RINGS_VERSION, RING_CELLS,
};

use crate::descriptor::Descriptor;
use crate::ids::{Endpoint, FnId, InstanceId, MAX_FUNCTIONS};
use crate::pool::{Pool, PoolLayout, PAGE};
pub use crate::route::Routed;
use crate::route::{self, Candidates, NotTaken, Plane};
use crate::transit;
use memmap2::MmapRaw;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Errors opening or creating a rings file.
#[derive(Debug, thiserror::Error)]
pub enum RingsError {
    #[error("rings file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("rings file {path} already exists (another pool-manager for this chain, or a stale file to remove)")]
    Exists { path: PathBuf },
    #[error("rings file {path} is not a spright rings file (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("rings file {path} has version {found}, this build speaks {expected}")]
    VersionMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("rings file {path} is {actual} bytes but its header describes {expected}")]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("rings file {path}: {problem}")]
    Geometry { path: PathBuf, problem: String },
    #[error("rings file {path} belongs to pool {found:#x}, not to pool {expected:#x}")]
    WrongPool {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{endpoint} has no ring: poll routing serves functions of this chain with instances 0..{POLL_INSTANCES}")]
    NoRing { endpoint: Endpoint },
}

/// Why [`Rings::send`] could not even hand a refusal back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("{0} has no ring in this chain")]
    NoRing(Endpoint),
    #[error("the ring of {0} is full: a refused descriptor could not be handed back")]
    OwnRingFull(Endpoint),
}

/// A ring, by index (slot * instance slots + instance); only made for rings that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RingId(usize);

/// One function's router counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounters {
    pub sent: u64,
    pub sent_bytes: u64,
    pub received: u64,
    pub refused: u64,
}

/// Where a ring's producer was interrupted: position `position` reserved, never published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interrupted {
    pub ring: RingId,
    pub position: u64,
}

/// The rings file of a pool, with `.rings` appended to the pool's file name.
pub fn rings_path(pool_path: &Path) -> PathBuf {
    let mut p = pool_path.as_os_str().to_owned();
    p.push(".rings");
    PathBuf::from(p)
}

/// A mapped rings file.
pub struct Rings {
    map: MmapRaw,
    layout: RingsLayout,
    pool: PoolLayout,
    pool_id: u64,
    path: PathBuf,
    /// Function id -> slot, copied from the header at open (it never changes).
    slots: Vec<u16>,
    /// Allowed (src slot, dst slot) pairs, copied likewise.
    allow: Vec<bool>,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .finish()
    }
}

// SAFETY: shared mutable state is reached only through atomics, and a cell's descriptor only by
// the producer or consumer whose turn its sequence number says it is.
unsafe impl Send for Rings {}
// SAFETY: as for Send.
unsafe impl Sync for Rings {}

/// Bounds the retries of a contended push or pop, so that a corrupted file cannot hang us.
const MAX_RETRIES: u32 = 1 << 16;

impl Rings {
    /// Creates the rings file of `pool` (it must not exist) for the endpoints of `functions`
    /// (the gateway included) and the chain's allow list of (source, destination) ids.
    pub fn create(
        path: &Path,
        pool: &Pool,
        functions: &[FnId],
        allow: impl IntoIterator<Item = (u16, u16)>,
        mode: u32,
    ) -> Result<Rings, RingsError> {
        let geometry = |problem: String| RingsError::Geometry {
            path: path.to_owned(),
            problem,
        };
        let mut ids: Vec<u16> = functions.iter().map(|f| f.0).collect();
        ids.sort_unstable();
        ids.dedup();
        if let Some(&bad) = ids.iter().find(|&&id| id >= MAX_FUNCTIONS) {
            return Err(geometry(format!(
                "function id {bad} is over the limit of {}",
                MAX_FUNCTIONS - 1
            )));
        }
        let layout = RingsLayout::new(
            ids.len() as u32,
            POLL_INSTANCES as u32,
            RING_CELLS,
            pool.layout().buffer_count,
        );
        let io_err = |source| RingsError::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::shm_file::create_new(path, mode).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                RingsError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io_err(e)
            }
        })?;
        let init = || -> Result<Rings, RingsError> {
            file.set_len(layout.total_size).map_err(io_err)?;
            let map = MmapRaw::map_raw(&file).map_err(io_err)?;
            // SAFETY: the map is at least one page, freshly zeroed, and not shared yet.
            let header = unsafe { &mut *(map.as_mut_ptr() as *mut RingsHeader) };
            let pl = pool.layout();
            header.version = RINGS_VERSION;
            header.header_size = PAGE as u32;
            header.pool_id = pool.pool_id();
            header.function_slots = layout.function_slots;
            header.instance_slots = layout.instance_slots;
            header.ring_cells = layout.ring_cells;
            header.cell_size = CELL_SIZE as u32;
            header.functions_start = layout.functions_start;
            header.allow_start = layout.allow_start;
            header.transit_start = layout.transit_start;
            header.rings_start = layout.rings_start;
            header.ring_size = layout.ring_size;
            header.total_size = layout.total_size;
            header.pool_data_start = pl.data_start;
            header.pool_buffer_size = pl.buffer_size;
            header.pool_buffer_count = pl.buffer_count;
            header.slot_of = [NO_SLOT; MAX_FUNCTIONS as usize];
            for (slot, &id) in ids.iter().enumerate() {
                header.slot_of[id as usize] = slot as u16;
            }
            let slots = header.slot_of.to_vec();
            let n = layout.function_slots as usize;
            let mut allowed = vec![false; n * n];
            for (src, dst) in allow {
                let (Some(&s), Some(&d)) = (slots.get(src as usize), slots.get(dst as usize))
                else {
                    continue;
                };
                if s != NO_SLOT && d != NO_SLOT {
                    allowed[s as usize * n + d as usize] = true;
                }
            }
            // SAFETY: the allow table lies within the map (layout), and nobody else maps it yet.
            let table = unsafe {
                std::slice::from_raw_parts_mut(
                    map.as_mut_ptr().add(layout.allow_start as usize),
                    n * n,
                )
            };
            for (byte, &ok) in table.iter_mut().zip(&allowed) {
                *byte = ok as u8;
            }
            let rings = Rings {
                map,
                layout,
                pool: *pl,
                pool_id: pool.pool_id(),
                path: path.to_owned(),
                slots,
                allow: allowed,
            };
            for (slot, &id) in ids.iter().enumerate() {
                // SAFETY: as above.
                unsafe { (*(rings.record_ptr(slot))).id = id };
            }
            for ring in 0..layout.ring_count() {
                for i in 0..layout.ring_cells as u64 {
                    rings.cell(RingId(ring), i).seq.store(i, Ordering::Relaxed);
                }
            }
            // Magic last: a reader that sees it sees a complete file.
            std::sync::atomic::fence(Ordering::Release);
            // SAFETY: as above.
            unsafe { (*(rings.map.as_mut_ptr() as *mut RingsHeader)).magic = RINGS_MAGIC };
            Ok(rings)
        };
        init().inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
    }

    /// Maps an existing rings file and checks its header.
    pub fn open(path: &Path) -> Result<Rings, RingsError> {
        let io_err = |source| RingsError::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::shm_file::open(path).map_err(io_err)?;
        Self::from_file(&file, path)
    }

    fn from_file(file: &File, path: &Path) -> Result<Rings, RingsError> {
        let io_err = |source| RingsError::Io {
            path: path.to_owned(),
            source,
        };
        let geometry = |problem: String| RingsError::Geometry {
            path: path.to_owned(),
            problem,
        };
        let actual = file.metadata().map_err(io_err)?.len();
        if actual < PAGE {
            return Err(RingsError::BadMagic {
                path: path.to_owned(),
            });
        }
        let map = MmapRaw::map_raw(file).map_err(io_err)?;
        // SAFETY: at least one page is mapped; fields are checked, not trusted, below.
        let header = unsafe { &*(map.as_ptr() as *const RingsHeader) };
        if header.magic != RINGS_MAGIC {
            return Err(RingsError::BadMagic {
                path: path.to_owned(),
            });
        }
        if header.version != RINGS_VERSION {
            return Err(RingsError::VersionMismatch {
                path: path.to_owned(),
                found: header.version,
                expected: RINGS_VERSION,
            });
        }
        let (slots_n, instances, cells) = (
            header.function_slots,
            header.instance_slots,
            header.ring_cells,
        );
        if slots_n == 0 || slots_n > MAX_FUNCTIONS as u32 {
            return Err(geometry(format!("{slots_n} function slots")));
        }
        if instances == 0 || instances > 63 {
            return Err(geometry(format!("{instances} instance slots")));
        }
        if !cells.is_power_of_two() || !(2..=1 << 20).contains(&cells) {
            return Err(geometry(format!(
                "{cells} cells per ring (not a power of two)"
            )));
        }
        if header.cell_size as u64 != CELL_SIZE {
            return Err(geometry(format!("cells of {} bytes", header.cell_size)));
        }
        let layout = RingsLayout::new(slots_n, instances, cells, header.pool_buffer_count);
        let described = (
            header.functions_start,
            header.allow_start,
            header.transit_start,
            header.rings_start,
            header.ring_size,
            header.total_size,
        );
        let derived = (
            layout.functions_start,
            layout.allow_start,
            layout.transit_start,
            layout.rings_start,
            layout.ring_size,
            layout.total_size,
        );
        if described != derived {
            return Err(geometry(format!(
                "header offsets {described:?} do not match its counts {derived:?}"
            )));
        }
        if actual != layout.total_size {
            return Err(RingsError::SizeMismatch {
                path: path.to_owned(),
                actual,
                expected: layout.total_size,
            });
        }
        let pool = PoolLayout::new(header.pool_buffer_count, header.pool_buffer_size);
        if pool.data_start != header.pool_data_start || header.pool_buffer_size == 0 {
            return Err(geometry(
                "the pool geometry it records is inconsistent".into(),
            ));
        }
        let slots = header.slot_of.to_vec();
        if let Some(bad) = slots.iter().find(|&&s| s != NO_SLOT && s as u32 >= slots_n) {
            return Err(geometry(format!("function slot {bad} out of range")));
        }
        let n = slots_n as usize;
        // SAFETY: the allow table lies within the checked layout.
        let table = unsafe {
            std::slice::from_raw_parts(map.as_ptr().add(layout.allow_start as usize), n * n)
        };
        let allow = table.iter().map(|&b| b != 0).collect();
        Ok(Rings {
            pool_id: header.pool_id,
            map,
            layout,
            pool,
            path: path.to_owned(),
            slots,
            allow,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn layout(&self) -> &RingsLayout {
        &self.layout
    }

    pub fn pool_id(&self) -> u64 {
        self.pool_id
    }

    /// Checks that these are the rings of `pool`.
    pub fn check_pool(&self, pool: &Pool) -> Result<(), RingsError> {
        if self.pool_id != pool.pool_id() || self.pool != *pool.layout() {
            return Err(RingsError::WrongPool {
                path: self.path.clone(),
                found: self.pool_id,
                expected: pool.pool_id(),
            });
        }
        Ok(())
    }

    fn header(&self) -> &RingsHeader {
        // SAFETY: the header page is mapped for our lifetime.
        unsafe { &*(self.map.as_ptr() as *const RingsHeader) }
    }

    fn slot(&self, f: FnId) -> Option<usize> {
        match self.slots.get(f.0 as usize) {
            Some(&s) if s != NO_SLOT => Some(s as usize),
            _ => None,
        }
    }

    fn record_ptr(&self, slot: usize) -> *mut FunctionRecord {
        assert!(slot < self.layout.function_slots as usize);
        // SAFETY: in bounds of the function records (layout).
        unsafe {
            self.map.as_mut_ptr().add(
                (self.layout.functions_start + slot as u64 * layout::FUNCTION_RECORD_SIZE) as usize,
            ) as *mut FunctionRecord
        }
    }

    fn record(&self, f: FnId) -> Option<&FunctionRecord> {
        // SAFETY: the record is mapped for our lifetime; shared fields are atomics.
        self.slot(f).map(|s| unsafe { &*self.record_ptr(s) })
    }

    /// Descriptors waiting in `endpoint`'s ring.
    pub fn queued(&self, endpoint: Endpoint) -> u64 {
        self.ring_of(endpoint).map_or(0, |r| self.len(r))
    }

    /// The ring of `endpoint`, if the chain has one for it.
    pub fn ring_of(&self, endpoint: Endpoint) -> Option<RingId> {
        let slot = self.slot(endpoint.function)?;
        let instance = endpoint.instance.0 as usize;
        (instance < self.layout.instance_slots as usize).then_some(RingId(
            slot * self.layout.instance_slots as usize + instance,
        ))
    }

    /// Every ring of the file.
    pub fn all_rings(&self) -> impl Iterator<Item = RingId> {
        (0..self.layout.ring_count()).map(RingId)
    }

    fn ring(&self, ring: RingId) -> &RingHeader {
        // SAFETY: RingIds are only made in bounds; the header is mapped for our lifetime.
        unsafe {
            &*(self
                .map
                .as_ptr()
                .add((self.layout.rings_start + ring.0 as u64 * self.layout.ring_size) as usize)
                as *const RingHeader)
        }
    }

    fn cell(&self, ring: RingId, position: u64) -> &Cell {
        let index = position & (self.layout.ring_cells as u64 - 1);
        let at = self.layout.rings_start
            + ring.0 as u64 * self.layout.ring_size
            + layout::RING_HEADER_SIZE
            + index * CELL_SIZE;
        // SAFETY: the index is masked to the ring's cells and the ring is in bounds.
        unsafe { &*(self.map.as_ptr().add(at as usize) as *const Cell) }
    }

    fn transit_slot(&self, index: u32) -> Option<&AtomicU64> {
        (index < self.pool.buffer_count).then(|| {
            // SAFETY: in bounds of the transit table.
            unsafe {
                &*(self
                    .map
                    .as_ptr()
                    .add((self.layout.transit_start + index as u64 * 8) as usize)
                    as *const AtomicU64)
            }
        })
    }

    /// Pushes `d` into `ring`. `false` when the ring is full (or the cell was given up on, see
    /// [`Rings::publish_blank`]).
    pub fn push(&self, ring: RingId, d: &Descriptor) -> bool {
        let r = self.ring(ring);
        let mut pos = r.head.load(Ordering::Relaxed);
        for _ in 0..MAX_RETRIES {
            let cell = self.cell(ring, pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos) as i64;
            if diff == 0 {
                match r.head.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: position `pos` is ours until we publish it.
                        unsafe { std::ptr::write_volatile(cell.descriptor.get(), *d) };
                        return cell
                            .seq
                            .compare_exchange(
                                pos,
                                pos.wrapping_add(1),
                                Ordering::Release,
                                Ordering::Relaxed,
                            )
                            .is_ok();
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return false;
            } else {
                pos = r.head.load(Ordering::Relaxed);
            }
        }
        false
    }

    /// Takes the next descriptor from `ring`, if one is there.
    pub fn pop(&self, ring: RingId) -> Option<Descriptor> {
        let r = self.ring(ring);
        let mut pos = r.tail.load(Ordering::Relaxed);
        for _ in 0..MAX_RETRIES {
            let cell = self.cell(ring, pos);
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq.wrapping_sub(pos.wrapping_add(1)) as i64;
            if diff == 0 {
                match r.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: position `pos` is ours until we release it.
                        let d = unsafe { std::ptr::read_volatile(cell.descriptor.get()) };
                        let _ = cell.seq.compare_exchange(
                            pos.wrapping_add(1),
                            pos.wrapping_add(self.layout.ring_cells as u64),
                            Ordering::Release,
                            Ordering::Relaxed,
                        );
                        return Some(d);
                    }
                    Err(now) => pos = now,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = r.tail.load(Ordering::Relaxed);
            }
        }
        None
    }

    /// Descriptors waiting in `ring` (a snapshot).
    pub fn len(&self, ring: RingId) -> u64 {
        let r = self.ring(ring);
        let tail = r.tail.load(Ordering::Acquire);
        r.head.load(Ordering::Acquire).saturating_sub(tail)
    }

    /// Whether `src` may send to `dst` (the chain's allow list).
    pub fn allowed(&self, src: FnId, dst: FnId) -> bool {
        let n = self.layout.function_slots as usize;
        match (self.slot(src), self.slot(dst)) {
            (Some(s), Some(d)) => self.allow[s * n + d],
            _ => false,
        }
    }

    fn live_mask(&self, f: FnId) -> u64 {
        let all = (1u64 << self.layout.instance_slots) - 1;
        self.record(f)
            .map(|r| r.live.load(Ordering::Acquire) & all)
            .unwrap_or(0)
    }

    /// Whether `endpoint` is registered.
    pub fn is_live(&self, endpoint: Endpoint) -> bool {
        endpoint.instance.0 < 64
            && self.live_mask(endpoint.function) & (1 << endpoint.instance.0) != 0
    }

    /// The registered instances of `f`.
    pub fn live(&self, f: FnId) -> Vec<InstanceId> {
        let mask = self.live_mask(f);
        (0..64u16)
            .filter(|i| mask & (1 << i) != 0)
            .map(InstanceId)
            .collect()
    }

    /// Replaces `f`'s live-instance table (one store, so a sender sees the old or the new one).
    pub fn set_live(&self, f: FnId, instances: &[InstanceId]) -> Result<(), RingsError> {
        let mut mask = 0u64;
        for &i in instances {
            let endpoint = Endpoint::new(f, i);
            if self.ring_of(endpoint).is_none() {
                return Err(RingsError::NoRing { endpoint });
            }
            mask |= 1 << i.0;
        }
        let record = self.record(f).ok_or(RingsError::NoRing {
            endpoint: Endpoint::new(f, InstanceId(0)),
        })?;
        record.live.store(mask, Ordering::Release);
        Ok(())
    }

    /// Where buffer `index`'s last descriptor was routed.
    pub fn transit(&self, index: u32) -> Option<transit::Transit> {
        transit::read(self.transit_slot(index)?)
    }

    /// Routes `d` from `from` as SPROXY would ([`crate::route`]): a refusal is handed back into
    /// `from`'s own ring.
    pub fn send(&self, from: Endpoint, d: Descriptor) -> Result<Routed, SendError> {
        if self.ring_of(from).is_none() {
            return Err(SendError::NoRing(from));
        }
        match route::route(self, from, d) {
            Routed::RefusalLost(_) => Err(SendError::OwnRingFull(from)),
            routed => Ok(routed),
        }
    }

    /// Function `f`'s counters.
    pub fn counters(&self, f: FnId) -> RingCounters {
        self.record(f)
            .map(|r| RingCounters {
                sent: r.sent.load(Ordering::Relaxed),
                sent_bytes: r.sent_bytes.load(Ordering::Relaxed),
                received: r.received.load(Ordering::Relaxed),
                refused: r.refused.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    /// Messages written to data sockets (poll mode does not read them).
    pub fn malformed(&self) -> u64 {
        self.header().malformed.load(Ordering::Relaxed)
    }

    pub fn note_malformed(&self) {
        self.header().malformed.fetch_add(1, Ordering::Relaxed);
    }

    /// Empties `ring` (at most one lap of it), returning what was in it.
    pub fn drain(&self, ring: RingId) -> Vec<Descriptor> {
        let mut out = Vec::new();
        for _ in 0..self.layout.ring_cells {
            match self.pop(ring) {
                Some(d) => out.push(d),
                None => break,
            }
        }
        out
    }

    /// Finishes a pop its consumer was killed in the middle of (position taken, cell not handed
    /// on), which would otherwise make the ring look full one lap later. Only for a ring whose
    /// consumer is gone.
    pub fn finish_pop(&self, ring: RingId) -> bool {
        let tail = self.ring(ring).tail.load(Ordering::Acquire);
        let last = tail.wrapping_sub(1);
        self.cell(ring, last)
            .seq
            .compare_exchange(
                tail,
                last.wrapping_add(self.layout.ring_cells as u64),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Rings whose next position was reserved by a producer but not published (yet): a
    /// producer in the middle of a push, or one killed there, which would block the ring. Seen
    /// twice, a good while apart, it is the latter: see [`Rings::publish_blank`].
    pub fn interrupted_pushes(&self) -> Vec<Interrupted> {
        self.all_rings()
            .filter_map(|ring| {
                let r = self.ring(ring);
                let tail = r.tail.load(Ordering::Acquire);
                let head = r.head.load(Ordering::Acquire);
                let reserved = head.wrapping_sub(tail) as i64 > 0;
                (reserved && self.cell(ring, tail).seq.load(Ordering::Acquire) == tail).then_some(
                    Interrupted {
                        ring,
                        position: tail,
                    },
                )
            })
            .collect()
    }

    /// Publishes an all-zero descriptor at a position whose producer never published it, so the
    /// ring moves on (consumers skip blank descriptors). Fails if the position was published
    /// meanwhile; a producer that publishes after this finds out and reports a full ring.
    pub fn publish_blank(&self, at: Interrupted) -> bool {
        let cell = self.cell(at.ring, at.position);
        if cell.seq.load(Ordering::Acquire) != at.position {
            return false;
        }
        // SAFETY: nobody published this position; a producer still writing it would write a
        // whole descriptor, and receivers validate everything they read.
        unsafe { std::ptr::write_volatile(cell.descriptor.get(), Descriptor::default()) };
        cell.seq
            .compare_exchange(
                at.position,
                at.position.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

/// A descriptor [`Rings::publish_blank`] put in place of one never published.
pub fn is_blank(d: &Descriptor) -> bool {
    *d == Descriptor::default()
}

/// The rings as a routing plane: what [`route::route`] needs of them.
impl Plane for Rings {
    fn is_function(&self, f: FnId) -> bool {
        self.slot(f).is_some()
    }

    fn allowed(&self, src: FnId, dst: FnId) -> bool {
        Rings::allowed(self, src, dst)
    }

    /// The live instances from the next one by the function's cursor on (round robin).
    fn candidates(&self, f: FnId) -> Candidates {
        let mask = self.live_mask(f);
        let count = mask.count_ones() as u64;
        let first = match (count, self.record(f)) {
            (0, _) | (_, None) => return Candidates::default(),
            (_, Some(record)) => record.next.fetch_add(1, Ordering::Relaxed) % count,
        };
        (0..count)
            .map(|k| InstanceId(nth_set_bit(mask, ((first + k) % count) as u32)))
            .collect()
    }

    fn offer(&self, to: Endpoint, d: &Descriptor) -> Result<(), NotTaken> {
        let ring = self
            .ring_of(to)
            .filter(|_| self.is_live(to))
            .ok_or(NotTaken::Gone)?;
        // A full ring: the instance is not keeping up.
        self.push(ring, d).then_some(()).ok_or(NotTaken::Full)
    }

    fn hand_back(&self, from: Endpoint, d: &Descriptor) -> bool {
        self.ring_of(from).is_some_and(|own| self.push(own, d))
    }

    fn pool(&self) -> &PoolLayout {
        &self.pool
    }

    fn transit_slot(&self, index: u32) -> Option<&AtomicU64> {
        Rings::transit_slot(self, index)
    }

    fn count_delivered(&self, src: FnId, dst: FnId, bytes: u64) {
        if let Some(src) = self.record(src) {
            src.sent.fetch_add(1, Ordering::Relaxed);
            src.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if let Some(dst) = self.record(dst) {
            dst.received.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_refused(&self, src: FnId) {
        if let Some(src) = self.record(src) {
            src.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;

/// The index of the `n`-th set bit of `mask` (`n` below its count of ones).
fn nth_set_bit(mask: u64, n: u32) -> u16 {
    let mut bits = mask;
    for _ in 0..n {
        bits &= bits - 1;
    }
    bits.trailing_zeros() as u16
}
