//! Where things are in a pool file. See `docs/abi.md`.
//!
//! ```text
//! 0                 PoolHeader (one page)
//! PAGE              BufferHeader[buffer_count], 64 bytes each, padded to a page
//! data_start        buffer data, buffer_count * buffer_size bytes
//! ```
//! A descriptor's `offset` is `data_start + index * buffer_size`.

use std::sync::atomic::{AtomicU32, AtomicU64};

pub const POOL_MAGIC: [u8; 8] = *b"SPRIGHT\0";
pub const PAGE: u64 = 4096;
pub const BUFFER_HEADER_SIZE: u64 = 64;
pub const CHAIN_NAME_MAX: usize = 64;

/// Smallest and largest buffer sizes a pool accepts.
pub const MIN_BUFFER_SIZE: u32 = 256;
pub const MAX_BUFFER_SIZE: u32 = 64 << 20;
/// Largest pool file (buffers * size) a chain may ask for.
pub const MAX_POOL_BYTES: u64 = 16 << 30;

/// The first page of the pool file.
#[repr(C)]
pub struct PoolHeader {
    pub magic: [u8; 8],
    pub abi_version: u32,
    pub header_size: u32,
    /// Random at creation; its low 32 bits are every descriptor's `pool_tag`.
    pub pool_id: u64,
    pub buffer_count: u32,
    pub buffer_size: u32,
    pub buffer_header_size: u32,
    pub _reserved0: u32,
    pub headers_start: u64,
    pub data_start: u64,
    pub total_size: u64,
    pub chain_name: [u8; CHAIN_NAME_MAX],
    /// Where the next allocation starts probing (a hint; any value is safe).
    pub alloc_cursor: AtomicU32,
    pub _reserved1: u32,
}

/// Per-buffer header: who holds the buffer and for which request.
#[repr(C)]
pub struct BufferHeader {
    /// [`BufferState`] packed into 64 bits; every transition is one compare-and-swap, so a
    /// process that dies at any instruction leaves a state some sweep can recognise.
    pub state: AtomicU64,
    /// The request the buffer was allocated for (valid while not free).
    pub owner_request: AtomicU64,
    /// Who sent it last: `generation << 32 | sender's endpoint key`, stored just before the
    /// send's compare-and-swap. Lets the pool-manager recognise a send whose sender died before
    /// the descriptor reached the router.
    pub sent_by: AtomicU64,
    pub _reserved: [u64; 5],
}

const _: () = assert!(size_of::<BufferHeader>() == BUFFER_HEADER_SIZE as usize);
// The offsets docs/abi.md promises.
const _: () = {
    use std::mem::offset_of;
    assert!(offset_of!(PoolHeader, abi_version) == 8);
    assert!(offset_of!(PoolHeader, pool_id) == 16);
    assert!(offset_of!(PoolHeader, buffer_count) == 24);
    assert!(offset_of!(PoolHeader, buffer_size) == 28);
    assert!(offset_of!(PoolHeader, headers_start) == 40);
    assert!(offset_of!(PoolHeader, data_start) == 48);
    assert!(offset_of!(PoolHeader, total_size) == 56);
    assert!(offset_of!(PoolHeader, chain_name) == 64);
    assert!(offset_of!(PoolHeader, alloc_cursor) == 128);
    assert!(offset_of!(BufferHeader, owner_request) == 8);
};
const _: () = assert!(size_of::<PoolHeader>() <= PAGE as usize);

/// The geometry of a pool, derived from its count and buffer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLayout {
    pub buffer_count: u32,
    pub buffer_size: u32,
    pub headers_start: u64,
    pub data_start: u64,
    pub total_size: u64,
}

impl PoolLayout {
    pub fn new(buffer_count: u32, buffer_size: u32) -> PoolLayout {
        let headers_start = PAGE;
        let headers_len = round_up(buffer_count as u64 * BUFFER_HEADER_SIZE, PAGE);
        let data_start = headers_start + headers_len;
        let total_size = data_start + buffer_count as u64 * buffer_size as u64;
        PoolLayout {
            buffer_count,
            buffer_size,
            headers_start,
            data_start,
            total_size,
        }
    }

    /// The data offset of buffer `index`.
    pub fn offset_of(&self, index: u32) -> u64 {
        self.data_start + index as u64 * self.buffer_size as u64
    }

    /// The buffer index an offset names, if it names the start of one.
    pub fn index_of(&self, offset: u64) -> Option<u32> {
        let rel = offset.checked_sub(self.data_start)?;
        if !rel.is_multiple_of(self.buffer_size as u64) {
            return None;
        }
        let index = rel / self.buffer_size as u64;
        (index < self.buffer_count as u64).then_some(index as u32)
    }
}

pub fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Who holds a buffer, packed as `generation:32 | function:16 | instance:16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferState {
    pub generation: u32,
    pub holder: Holder,
}

/// The holder part of a [`BufferState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// On no one's hands: allocatable.
    Free,
    /// Sent to a function, not yet claimed by one of its instances.
    InTransit { function: u16 },
    /// Held by one instance, which alone may read, write, send or free it.
    Held { function: u16, instance: u16 },
}

const FREE_BITS: u32 = 0xFFFF_FFFF;
const ANY: u16 = 0xFFFF;

impl BufferState {
    pub fn pack(self) -> u64 {
        let low: u32 = match self.holder {
            Holder::Free => FREE_BITS,
            Holder::InTransit { function } => ((function as u32) << 16) | ANY as u32,
            Holder::Held { function, instance } => ((function as u32) << 16) | instance as u32,
        };
        ((self.generation as u64) << 32) | low as u64
    }

    pub fn unpack(word: u64) -> BufferState {
        let generation = (word >> 32) as u32;
        let low = word as u32;
        let function = (low >> 16) as u16;
        let instance = low as u16;
        let holder = if low == FREE_BITS {
            Holder::Free
        } else if instance == ANY {
            Holder::InTransit { function }
        } else {
            Holder::Held { function, instance }
        };
        BufferState { generation, holder }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_offsets_and_indices_agree() {
        let l = PoolLayout::new(100, 8192);
        assert_eq!(l.headers_start, PAGE);
        assert_eq!(l.data_start % PAGE, 0);
        assert!(l.data_start >= PAGE + 100 * BUFFER_HEADER_SIZE);
        for i in [0, 1, 50, 99] {
            assert_eq!(l.index_of(l.offset_of(i)), Some(i));
        }
        assert_eq!(l.index_of(l.offset_of(100)), None, "one past the end");
        assert_eq!(l.index_of(l.offset_of(3) + 1), None, "not a buffer start");
        assert_eq!(l.index_of(0), None, "inside the header");
        assert_eq!(l.total_size, l.data_start + 100 * 8192);
    }

    #[test]
    fn state_packing_round_trips() {
        for holder in [
            Holder::Free,
            Holder::InTransit { function: 3 },
            Holder::Held {
                function: 0,
                instance: 2,
            },
            Holder::Held {
                function: 1023,
                instance: 63,
            },
        ] {
            let s = BufferState {
                generation: 0xDEAD_BEEF,
                holder,
            };
            assert_eq!(BufferState::unpack(s.pack()), s);
        }
    }
}
