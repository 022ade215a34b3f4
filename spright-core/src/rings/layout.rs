//! Where things are in a rings file. See `docs/abi.md` §6.
//!
//! ```text
//! 0                RingsHeader (one page)
//! functions_start  FunctionRecord[function_slots], 128 bytes each
//! allow_start      allow[function_slots * function_slots], one byte per (src, dst) slot pair
//! transit_start    u64[pool buffer_count], 64-byte aligned
//! rings_start      Ring[function_slots * instance_slots], page aligned
//! ```
//! A ring is a [`RingHeader`] followed by `ring_cells` cells of [`CELL_SIZE`] bytes.

use crate::descriptor::Descriptor;
use crate::ids::MAX_FUNCTIONS;
use crate::pool::PAGE;
use std::cell::UnsafeCell;
use std::sync::atomic::AtomicU64;

pub const RINGS_MAGIC: [u8; 8] = *b"SPRRINGS";
pub const RINGS_VERSION: u32 = 1;
/// Instances a function may have in poll mode (each has its own ring).
pub const POLL_INSTANCES: u16 = 8;
/// Cells per ring (a power of two).
pub const RING_CELLS: u32 = 1024;
pub const CELL_SIZE: u64 = 64;
pub const FUNCTION_RECORD_SIZE: u64 = 128;
pub const RING_HEADER_SIZE: u64 = 128;
/// `slot_of` entry of a function id the chain does not have.
pub const NO_SLOT: u16 = 0xFFFF;

/// The first page of the rings file.
#[repr(C)]
pub struct RingsHeader {
    pub magic: [u8; 8],
    pub version: u32,
    pub header_size: u32,
    /// The pool these rings carry descriptors of (its `pool_id`).
    pub pool_id: u64,
    pub function_slots: u32,
    pub instance_slots: u32,
    pub ring_cells: u32,
    pub cell_size: u32,
    pub functions_start: u64,
    pub allow_start: u64,
    pub transit_start: u64,
    pub rings_start: u64,
    pub ring_size: u64,
    pub total_size: u64,
    /// The pool's geometry, to find a descriptor's buffer index for the transit record.
    pub pool_data_start: u64,
    pub pool_buffer_size: u32,
    pub pool_buffer_count: u32,
    /// Messages written to data sockets, which poll mode does not read (counted by the
    /// pool-manager).
    pub malformed: AtomicU64,
    pub _reserved: [u64; 2],
    /// Function id -> slot (index of its record and first ring), [`NO_SLOT`] if absent.
    pub slot_of: [u16; MAX_FUNCTIONS as usize],
}

/// Per function: live instances, the round-robin cursor and the router counters.
#[repr(C)]
pub struct FunctionRecord {
    pub id: u16,
    pub _reserved0: u16,
    pub _reserved1: u32,
    /// Bit `i` set: instance `i` is registered. Rewritten whole by the pool-manager.
    pub live: AtomicU64,
    /// Round-robin cursor for `ANY_INSTANCE` destinations.
    pub next: AtomicU64,
    pub _reserved2: [u64; 5],
    // The counters are on their own cache line: every send updates them.
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub received: AtomicU64,
    pub refused: AtomicU64,
    pub _reserved3: [u64; 4],
}

/// A ring's positions, on separate cache lines (producers move `head`, the consumer `tail`).
#[repr(C)]
pub struct RingHeader {
    pub head: AtomicU64,
    pub _pad0: [u64; 7],
    pub tail: AtomicU64,
    pub _pad1: [u64; 7],
}

/// One slot of a ring: a sequence number saying whose turn it is, and a descriptor.
#[repr(C)]
pub struct Cell {
    pub seq: AtomicU64,
    pub descriptor: UnsafeCell<Descriptor>,
    pub _pad: u64,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<RingsHeader>() <= PAGE as usize);
    assert!(offset_of!(RingsHeader, pool_id) == 16);
    assert!(offset_of!(RingsHeader, function_slots) == 24);
    assert!(offset_of!(RingsHeader, functions_start) == 40);
    assert!(offset_of!(RingsHeader, rings_start) == 64);
    assert!(offset_of!(RingsHeader, total_size) == 80);
    assert!(offset_of!(RingsHeader, pool_data_start) == 88);
    assert!(offset_of!(RingsHeader, malformed) == 104);
    assert!(offset_of!(RingsHeader, slot_of) == 128);
    assert!(size_of::<FunctionRecord>() == FUNCTION_RECORD_SIZE as usize);
    assert!(offset_of!(FunctionRecord, live) == 8);
    assert!(offset_of!(FunctionRecord, sent) == 64);
    assert!(offset_of!(FunctionRecord, refused) == 88);
    assert!(size_of::<RingHeader>() == RING_HEADER_SIZE as usize);
    assert!(offset_of!(RingHeader, tail) == 64);
    assert!(size_of::<Cell>() == CELL_SIZE as usize);
    assert!(offset_of!(Cell, descriptor) == 8);
};

/// The geometry of a rings file, derived from its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingsLayout {
    pub function_slots: u32,
    pub instance_slots: u32,
    pub ring_cells: u32,
    pub buffer_count: u32,
    pub functions_start: u64,
    pub allow_start: u64,
    pub transit_start: u64,
    pub rings_start: u64,
    pub ring_size: u64,
    pub total_size: u64,
}

impl RingsLayout {
    pub fn new(
        function_slots: u32,
        instance_slots: u32,
        ring_cells: u32,
        buffer_count: u32,
    ) -> RingsLayout {
        let functions_start = PAGE;
        let allow_start = functions_start + function_slots as u64 * FUNCTION_RECORD_SIZE;
        let transit_start = round_up(
            allow_start + function_slots as u64 * function_slots as u64,
            64,
        );
        let rings_start = round_up(transit_start + buffer_count as u64 * 8, PAGE);
        let ring_size = RING_HEADER_SIZE + ring_cells as u64 * CELL_SIZE;
        let total_size = rings_start + function_slots as u64 * instance_slots as u64 * ring_size;
        RingsLayout {
            function_slots,
            instance_slots,
            ring_cells,
            buffer_count,
            functions_start,
            allow_start,
            transit_start,
            rings_start,
            ring_size,
            total_size,
        }
    }

    pub fn ring_count(&self) -> usize {
        self.function_slots as usize * self.instance_slots as usize
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}
