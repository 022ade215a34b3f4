//! The per-chain shared-memory pool: a file of fixed-size buffers that every process of the
//! chain maps, with a header per buffer saying who holds it.
//!
//! Ownership is single-holder and moves with descriptors: the allocator holds a new buffer;
//! sending marks it in transit to the destination function; the receiving instance claims it;
//! the holder frees it. Each step is one compare-and-swap on the buffer's state word, which also
//! carries a generation that every free bumps, so a stale or forged descriptor can never claim a
//! buffer that has moved on.

mod layout;

pub use layout::{
    BufferHeader, BufferState, Holder, PoolHeader, PoolLayout, BUFFER_HEADER_SIZE, MAX_BUFFER_SIZE,
    MAX_POOL_BYTES, MIN_BUFFER_SIZE, PAGE, POOL_MAGIC,
};

use crate::descriptor::{Descriptor, ABI_VERSION, NO_BUFFER};
use crate::ids::{Endpoint, FnId};
use memmap2::MmapRaw;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Errors opening or creating a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("pool file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("pool file {path} already exists (another pool-manager for this chain, or a stale file to remove)")]
    Exists { path: PathBuf },
    #[error("pool file {path} is not a spright pool (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("pool file {path} has ABI version {found}, this build speaks {expected}")]
    VersionMismatch {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("pool file {path} is {actual} bytes but its header describes {expected}")]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("invalid pool geometry: {0}")]
    Geometry(String),
}

/// Why a received descriptor was rejected before its buffer was touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    #[error("descriptor ABI version {0}, expected {ABI_VERSION}")]
    BadVersion(u8),
    #[error("descriptor belongs to another pool (tag {found:#x}, this pool {expected:#x})")]
    WrongPool { found: u32, expected: u32 },
    #[error("offset {0} does not name a buffer of this pool")]
    OutOfBounds(u64),
    #[error("length {len} exceeds the buffer size {capacity}")]
    TooLong { len: u32, capacity: u32 },
    #[error(
        "stale descriptor: buffer {index} is at generation {current}, descriptor says {found}"
    )]
    Stale {
        index: u32,
        found: u32,
        current: u32,
    },
    #[error("buffer {index} is not in transit to function {to} (state {state:?})")]
    NotForUs {
        index: u32,
        to: u16,
        state: BufferState,
    },
    #[error("buffer {index} belongs to request {owner}, descriptor says {found}")]
    WrongRequest { index: u32, owner: u64, found: u64 },
}

/// A buffer named by index and generation (what a holder keeps between operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferRef {
    pub index: u32,
    pub generation: u32,
}

/// Counts of buffers by state, from one scan of the headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub total: u32,
    pub free: u32,
    pub in_transit: u32,
    pub held: u32,
}

impl PoolStats {
    pub fn in_use(&self) -> u32 {
        self.total - self.free
    }
}

/// A mapped pool.
pub struct Pool {
    map: MmapRaw,
    layout: PoolLayout,
    pool_id: u64,
    path: PathBuf,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("path", &self.path)
            .field("pool_id", &format_args!("{:#x}", self.pool_id))
            .field("layout", &self.layout)
            .finish()
    }
}

// SAFETY: all shared mutable state is accessed through atomics in the headers, and buffer data
// is only touched by the instance that holds the buffer (the ownership protocol above).
unsafe impl Send for Pool {}
// SAFETY: as for Send.
unsafe impl Sync for Pool {}

/// The sizes a pool is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub buffer_count: u32,
    pub buffer_size: u32,
}

impl PoolSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.buffer_count == 0 {
            return Err("buffers must be at least 1".into());
        }
        if self.buffer_count >= 1 << 24 {
            return Err(format!(
                "buffers {} is over the limit of 16777215",
                self.buffer_count
            ));
        }
        if self.buffer_size < MIN_BUFFER_SIZE || self.buffer_size > MAX_BUFFER_SIZE {
            return Err(format!(
                "buffer_size {} is outside {}..={} bytes",
                self.buffer_size, MIN_BUFFER_SIZE, MAX_BUFFER_SIZE
            ));
        }
        if !self.buffer_size.is_multiple_of(64) {
            return Err(format!(
                "buffer_size {} is not a multiple of 64",
                self.buffer_size
            ));
        }
        let bytes = self.buffer_count as u64 * self.buffer_size as u64;
        if bytes > MAX_POOL_BYTES {
            return Err(format!(
                "buffers * buffer_size = {bytes} bytes is over the pool limit of {MAX_POOL_BYTES}"
            ));
        }
        Ok(())
    }
}

impl Pool {
    /// Creates a new pool file (it must not exist) with the given mode, and initialises it.
    pub fn create(path: &Path, spec: PoolSpec, chain: &str, mode: u32) -> Result<Pool, PoolError> {
        spec.validate().map_err(PoolError::Geometry)?;
        let layout = PoolLayout::new(spec.buffer_count, spec.buffer_size);
        let io_err = |source| PoolError::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::shm_file::create_new(path, mode).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                PoolError::Exists {
                    path: path.to_owned(),
                }
            } else {
                io_err(e)
            }
        })?;
        let init = || -> Result<Pool, PoolError> {
            file.set_len(layout.total_size).map_err(io_err)?;
            let map = MmapRaw::map_raw(&file).map_err(io_err)?;
            let pool_id: u64 = loop {
                let id = rand::random::<u64>();
                if id as u32 != 0 {
                    break id;
                }
            };
            // SAFETY: the map is at least one page and freshly zeroed by ftruncate.
            let header = unsafe { &mut *(map.as_mut_ptr() as *mut PoolHeader) };
            header.abi_version = ABI_VERSION as u32;
            header.header_size = PAGE as u32;
            header.pool_id = pool_id;
            header.buffer_count = layout.buffer_count;
            header.buffer_size = layout.buffer_size;
            header.buffer_header_size = BUFFER_HEADER_SIZE as u32;
            header.headers_start = layout.headers_start;
            header.data_start = layout.data_start;
            header.total_size = layout.total_size;
            let name = chain.as_bytes();
            let n = name.len().min(layout::CHAIN_NAME_MAX - 1);
            header.chain_name[..n].copy_from_slice(&name[..n]);
            let pool = Pool {
                map,
                layout,
                pool_id,
                path: path.to_owned(),
            };
            let free = BufferState {
                generation: 1,
                holder: Holder::Free,
            }
            .pack();
            for i in 0..layout.buffer_count {
                pool.header(i).state.store(free, Ordering::Relaxed);
            }
            // Magic last: a reader that sees it sees a complete header.
            std::sync::atomic::fence(Ordering::Release);
            // SAFETY: as above.
            unsafe { (*(pool.map.as_mut_ptr() as *mut PoolHeader)).magic = POOL_MAGIC };
            Ok(pool)
        };
        init().inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
    }

    /// Maps an existing pool and checks its header.
    pub fn open(path: &Path) -> Result<Pool, PoolError> {
        let io_err = |source| PoolError::Io {
            path: path.to_owned(),
            source,
        };
        let file = crate::shm_file::open(path).map_err(io_err)?;
        Self::from_file(&file, path)
    }

    /// Maps a pool from an open file (for example one received over a unix socket).
    pub fn from_file(file: &File, path: &Path) -> Result<Pool, PoolError> {
        let io_err = |source| PoolError::Io {
            path: path.to_owned(),
            source,
        };
        let actual = file.metadata().map_err(io_err)?.len();
        if actual < PAGE {
            return Err(PoolError::BadMagic {
                path: path.to_owned(),
            });
        }
        let map = MmapRaw::map_raw(file).map_err(io_err)?;
        // SAFETY: at least one page is mapped; fields are read, not trusted, below.
        let header = unsafe { &*(map.as_ptr() as *const PoolHeader) };
        if header.magic != POOL_MAGIC {
            return Err(PoolError::BadMagic {
                path: path.to_owned(),
            });
        }
        if header.abi_version != ABI_VERSION as u32 {
            return Err(PoolError::VersionMismatch {
                path: path.to_owned(),
                found: header.abi_version,
                expected: ABI_VERSION as u32,
            });
        }
        let spec = PoolSpec {
            buffer_count: header.buffer_count,
            buffer_size: header.buffer_size,
        };
        spec.validate().map_err(PoolError::Geometry)?;
        let layout = PoolLayout::new(spec.buffer_count, spec.buffer_size);
        if layout.data_start != header.data_start || layout.total_size != header.total_size {
            return Err(PoolError::Geometry(format!(
                "header says data at {} and {} bytes, geometry gives {} and {}",
                header.data_start, header.total_size, layout.data_start, layout.total_size
            )));
        }
        if actual != layout.total_size {
            return Err(PoolError::SizeMismatch {
                path: path.to_owned(),
                actual,
                expected: layout.total_size,
            });
        }
        Ok(Pool {
            pool_id: header.pool_id,
            map,
            layout,
            path: path.to_owned(),
        })
    }

    pub fn layout(&self) -> &PoolLayout {
        &self.layout
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn pool_id(&self) -> u64 {
        self.pool_id
    }

    /// The tag every descriptor of this pool carries.
    pub fn tag(&self) -> u32 {
        self.pool_id as u32
    }

    pub fn buffer_size(&self) -> u32 {
        self.layout.buffer_size
    }

    fn pool_header(&self) -> &PoolHeader {
        // SAFETY: the header page is mapped for the pool's lifetime.
        unsafe { &*(self.map.as_ptr() as *const PoolHeader) }
    }

    fn header(&self, index: u32) -> &BufferHeader {
        assert!(index < self.layout.buffer_count);
        // SAFETY: index is in bounds; the header table lies within the map.
        unsafe {
            &*(self
                .map
                .as_ptr()
                .add((self.layout.headers_start + index as u64 * BUFFER_HEADER_SIZE) as usize)
                as *const BufferHeader)
        }
    }

    /// The state of buffer `index` now.
    pub fn state(&self, index: u32) -> BufferState {
        BufferState::unpack(self.header(index).state.load(Ordering::Acquire))
    }

    /// The request buffer `index` was allocated for.
    pub fn owner_request(&self, index: u32) -> u64 {
        self.header(index).owner_request.load(Ordering::Acquire)
    }

    /// Takes a free buffer for `holder` and request `request_id`; `None` when every buffer is
    /// in use.
    pub fn alloc(&self, holder: Endpoint, request_id: u64) -> Option<BufferRef> {
        let count = self.layout.buffer_count;
        let start = self
            .pool_header()
            .alloc_cursor
            .fetch_add(1, Ordering::Relaxed);
        for probe in 0..count {
            let index = start.wrapping_add(probe) % count;
            let header = self.header(index);
            let word = header.state.load(Ordering::Relaxed);
            let state = BufferState::unpack(word);
            if state.holder != Holder::Free {
                continue;
            }
            let held = BufferState {
                generation: state.generation,
                holder: Holder::Held {
                    function: holder.function.0,
                    instance: holder.instance.0,
                },
            };
            if header
                .state
                .compare_exchange(word, held.pack(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                header.owner_request.store(request_id, Ordering::Release);
                if probe > 0 {
                    // Start the next search past the run of busy buffers just skipped.
                    self.pool_header()
                        .alloc_cursor
                        .fetch_add(probe, Ordering::Relaxed);
                }
                return Some(BufferRef {
                    index,
                    generation: state.generation,
                });
            }
        }
        None
    }

    /// Marks a held buffer as in transit to `to`, just before its descriptor is sent.
    pub fn mark_in_transit(&self, buf: BufferRef, from: Endpoint, to: FnId) -> bool {
        if buf.index < self.layout.buffer_count {
            let header = self.header(buf.index);
            header.sent_by.store(
                ((buf.generation as u64) << 32) | from.router_key() as u64,
                Ordering::Release,
            );
        }
        self.transition(
            buf,
            Holder::Held {
                function: from.function.0,
                instance: from.instance.0,
            },
            buf.generation,
            Holder::InTransit { function: to.0 },
        )
    }

    /// Who last sent buffer `index`: (generation, sender's endpoint key), as the sender
    /// recorded it (a sender that is not the SDK may not have).
    pub fn sent_by(&self, index: u32) -> Option<(u32, u32)> {
        if index >= self.layout.buffer_count {
            return None;
        }
        let v = self.header(index).sent_by.load(Ordering::Acquire);
        Some(((v >> 32) as u32, v as u32))
    }

    /// Takes back a buffer this holder sent that came back refused.
    pub fn take_back(&self, buf: BufferRef, sent_to: FnId, me: Endpoint) -> bool {
        self.transition(
            buf,
            Holder::InTransit {
                function: sent_to.0,
            },
            buf.generation,
            Holder::Held {
                function: me.function.0,
                instance: me.instance.0,
            },
        )
    }

    /// Frees a buffer held by `holder`, bumping its generation.
    pub fn free(&self, buf: BufferRef, holder: Endpoint) -> bool {
        self.transition(
            buf,
            Holder::Held {
                function: holder.function.0,
                instance: holder.instance.0,
            },
            buf.generation.wrapping_add(1),
            Holder::Free,
        )
    }

    /// Frees a buffer whose holder is gone (or that is in transit to a function that is gone):
    /// succeeds only if the state is still exactly `expected`.
    pub fn reclaim(&self, index: u32, expected: BufferState) -> bool {
        if expected.holder == Holder::Free {
            return false;
        }
        self.transition(
            BufferRef {
                index,
                generation: expected.generation,
            },
            expected.holder,
            expected.generation.wrapping_add(1),
            Holder::Free,
        )
    }

    fn transition(&self, buf: BufferRef, from: Holder, generation: u32, to: Holder) -> bool {
        if buf.index >= self.layout.buffer_count {
            return false;
        }
        let old = BufferState {
            generation: buf.generation,
            holder: from,
        }
        .pack();
        let new = BufferState {
            generation,
            holder: to,
        }
        .pack();
        self.header(buf.index)
            .state
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Checks a received descriptor against the pool without claiming anything: version, pool
    /// tag, bounds and length. Returns the buffer it names (`None` for a bufferless descriptor).
    pub fn check(&self, d: &Descriptor) -> Result<Option<BufferRef>, DescriptorError> {
        if d.version != ABI_VERSION {
            return Err(DescriptorError::BadVersion(d.version));
        }
        if d.pool_tag != self.tag() {
            return Err(DescriptorError::WrongPool {
                found: d.pool_tag,
                expected: self.tag(),
            });
        }
        if d.offset == NO_BUFFER {
            return Ok(None);
        }
        let index = self
            .layout
            .index_of(d.offset)
            .ok_or(DescriptorError::OutOfBounds(d.offset))?;
        if d.len > self.layout.buffer_size {
            return Err(DescriptorError::TooLong {
                len: d.len,
                capacity: self.layout.buffer_size,
            });
        }
        Ok(Some(BufferRef {
            index,
            generation: d.generation,
        }))
    }

    /// Validates a received descriptor and claims its buffer for `me`. Nothing in the buffer's
    /// data is touched before this succeeds.
    pub fn claim(
        &self,
        d: &Descriptor,
        me: Endpoint,
    ) -> Result<Option<BufferRef>, DescriptorError> {
        let Some(buf) = self.check(d)? else {
            return Ok(None);
        };
        let current = self.state(buf.index);
        if current.generation != buf.generation {
            return Err(DescriptorError::Stale {
                index: buf.index,
                found: buf.generation,
                current: current.generation,
            });
        }
        // The owner is fixed while the generation is: checked before claiming, so a descriptor
        // with the wrong request never takes the buffer, even for a moment.
        let owner = self.owner_request(buf.index);
        if owner != d.request_id {
            return Err(DescriptorError::WrongRequest {
                index: buf.index,
                owner,
                found: d.request_id,
            });
        }
        let mine = Holder::Held {
            function: me.function.0,
            instance: me.instance.0,
        };
        let to_me = Holder::InTransit {
            function: me.function.0,
        };
        if !self.transition(buf, to_me, buf.generation, mine) {
            let now = self.state(buf.index);
            return Err(if now.generation != buf.generation {
                DescriptorError::Stale {
                    index: buf.index,
                    found: buf.generation,
                    current: now.generation,
                }
            } else {
                DescriptorError::NotForUs {
                    index: buf.index,
                    to: me.function.0,
                    state: now,
                }
            });
        }
        Ok(Some(buf))
    }

    /// The descriptor fields that name `buf`.
    pub fn describe(&self, buf: BufferRef, d: &mut Descriptor) {
        d.pool_tag = self.tag();
        d.offset = self.layout.offset_of(buf.index);
        d.generation = buf.generation;
    }

    /// The data of a buffer this process holds.
    ///
    /// # Safety
    /// The caller must hold `buf` (by the ownership protocol) for as long as the slice lives, and
    /// must not create overlapping mutable access.
    pub unsafe fn data(&self, buf: BufferRef) -> &[u8] {
        assert!(buf.index < self.layout.buffer_count);
        let off = self.layout.offset_of(buf.index) as usize;
        // SAFETY: the index is in bounds, so the whole buffer lies inside the mapping (the
        // layout was checked against the file on open). That no one writes it meanwhile, here
        // or in another process, is the ownership protocol the caller vouches for.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr().add(off), self.layout.buffer_size as usize)
        }
    }

    /// Mutable data of a buffer this process holds.
    ///
    /// # Safety
    /// As for [`Pool::data`], and no other reference to the same buffer may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn data_mut(&self, buf: BufferRef) -> &mut [u8] {
        assert!(buf.index < self.layout.buffer_count);
        let off = self.layout.offset_of(buf.index) as usize;
        // SAFETY: in bounds as in `data`; that this is the only reference to the buffer's
        // bytes while it lives is the caller's promise (it holds the buffer).
        unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_mut_ptr().add(off),
                self.layout.buffer_size as usize,
            )
        }
    }

    /// Counts buffers by state (one pass over the headers).
    pub fn stats(&self) -> PoolStats {
        let mut s = PoolStats {
            total: self.layout.buffer_count,
            ..PoolStats::default()
        };
        for i in 0..self.layout.buffer_count {
            match self.state(i).holder {
                Holder::Free => s.free += 1,
                Holder::InTransit { .. } => s.in_transit += 1,
                Holder::Held { .. } => s.held += 1,
            }
        }
        s
    }

    /// Calls `f` with every non-free buffer's index, state and owner request.
    pub fn for_each_used(&self, mut f: impl FnMut(u32, BufferState, u64)) {
        for i in 0..self.layout.buffer_count {
            let state = self.state(i);
            if state.holder != Holder::Free {
                f(i, state, self.owner_request(i));
            }
        }
    }
}

#[cfg(test)]
mod tests;
