//! A pool buffer this instance holds. Dropping it frees the buffer.

use crate::error::SdkError;
use spright_core::envelope::{self, Envelope, EnvelopeError};
use spright_core::ids::Endpoint;
use spright_core::pool::{BufferRef, Pool};
use std::sync::Arc;

pub struct Lease {
    pool: Arc<Pool>,
    buf: BufferRef,
    me: Endpoint,
    len: u32,
}

impl Lease {
    /// Allocates a buffer for request `request_id`.
    pub fn alloc(pool: &Arc<Pool>, me: Endpoint, request_id: u64) -> Result<Lease, SdkError> {
        let buf = pool
            .alloc(me, request_id)
            .ok_or(SdkError::PoolExhausted(pool.layout().buffer_count))?;
        Ok(Lease {
            pool: pool.clone(),
            buf,
            me,
            len: 0,
        })
    }

    /// Wraps a buffer this instance just claimed from a descriptor of `len` bytes.
    pub fn claimed(pool: &Arc<Pool>, buf: BufferRef, me: Endpoint, len: u32) -> Lease {
        Lease {
            pool: pool.clone(),
            buf,
            me,
            len,
        }
    }

    pub fn buffer(&self) -> BufferRef {
        self.buf
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes in use, read in place from shared memory.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: this instance holds the buffer for the lease's lifetime (it was allocated or
        // claimed by compare-and-swap and is freed only on drop); len <= buffer size was
        // checked when the descriptor was claimed or set below.
        unsafe { &self.pool.data(self.buf)[..self.len as usize] }
    }

    /// The whole buffer, to write a message into.
    pub fn space(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, and `&mut self` makes this the only live reference.
        unsafe { self.pool.data_mut(self.buf) }
    }

    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.pool.buffer_size() as usize);
        self.len = len as u32;
    }

    /// The envelope in the buffer.
    pub fn envelope(&self) -> Result<Envelope<'_>, EnvelopeError> {
        Envelope::parse(self.bytes())
    }

    /// Writes an envelope into the buffer.
    pub fn write_envelope(
        &mut self,
        status: u16,
        meta: &[u8],
        body: &[u8],
    ) -> Result<(), EnvelopeError> {
        let n = envelope::write(self.space(), status, meta, body)?;
        self.set_len(n);
        Ok(())
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("buffer", &self.buf)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.free(self.buf, self.me);
    }
}
