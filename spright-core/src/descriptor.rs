//! The descriptor: the only thing that travels between function sockets.
//!
//! A descriptor names a buffer of the chain's pool by byte offset (never by pointer), says who it
//! is for and what it is. It is 48 bytes, `#[repr(C)]`, native byte order (all parties share one
//! host). `docs/abi.md` is the normative description; the layout is also what SPROXY
//! (`ebpf/src/bpf/sproxy.bpf.c`) reads and rewrites, so the two must change together.
//!
//! Exactly one descriptor goes in each `send`: sk_msg redirects a whole send to the destination
//! of its first descriptor. Receivers read a byte stream and split it every [`DESCRIPTOR_SIZE`]
//! bytes.

use crate::ids::{FnId, InstanceId, ANY_INSTANCE};

/// Version of the descriptor and pool ABI. Bumped on any incompatible layout change.
pub const ABI_VERSION: u8 = 1;

/// Size of one descriptor on the wire.
pub const DESCRIPTOR_SIZE: usize = 48;

/// `offset` value of a descriptor that carries no buffer (a bare status reply).
pub const NO_BUFFER: u64 = 0;

/// What a descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A request for `dst_fn` (from the gateway, the previous function of a sequence, or a caller
    /// when `call_id != 0`).
    Request = 1,
    /// A reply: to the gateway when `call_id == 0`, otherwise to the caller instance.
    Reply = 2,
    /// Set by the router (SPROXY or the user-space relay) on a descriptor it would not deliver;
    /// the descriptor is handed back to its sender with the reason in `status`.
    Refused = 3,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::Request),
            2 => Some(Kind::Reply),
            3 => Some(Kind::Refused),
            _ => None,
        }
    }
}

/// Why the router refused a descriptor (`status` of a [`Kind::Refused`] descriptor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RefuseReason {
    /// The chain's allow list has no (sender, destination) pair.
    Forbidden = 1,
    /// No instance of the destination is registered (or the chosen one just left).
    NoDestination = 2,
    /// The router could not parse the descriptor (bad version).
    BadDescriptor = 3,
    /// The destination instance has as many descriptors queued unread as the chain allows
    /// (`pool.queue_limit`): back-pressure, worth retrying later.
    Busy = 4,
}

impl RefuseReason {
    pub fn from_u8(v: u8) -> Option<RefuseReason> {
        match v {
            1 => Some(RefuseReason::Forbidden),
            2 => Some(RefuseReason::NoDestination),
            3 => Some(RefuseReason::BadDescriptor),
            4 => Some(RefuseReason::Busy),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Forbidden => "forbidden by the chain's allow list",
            RefuseReason::NoDestination => "no instance registered",
            RefuseReason::BadDescriptor => "malformed descriptor",
            RefuseReason::Busy => "destination busy (its queue is full)",
        }
    }
}

/// Error codes of a bufferless [`Kind::Reply`] (`status != 0`, `offset == NO_BUFFER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ReplyError {
    /// The handler failed and no buffer was free to carry its message.
    HandlerFailed = 1,
    /// A function found the pool exhausted.
    PoolExhausted = 2,
    /// A function downstream is not registered or went away.
    DownstreamUnavailable = 3,
    /// A call downstream did not answer in time.
    DownstreamTimeout = 4,
    /// A function downstream was busy (its queue full): back-pressure, worth retrying later.
    DownstreamBusy = 5,
}

impl ReplyError {
    pub fn from_u8(v: u8) -> Option<ReplyError> {
        match v {
            1 => Some(ReplyError::HandlerFailed),
            2 => Some(ReplyError::PoolExhausted),
            3 => Some(ReplyError::DownstreamUnavailable),
            4 => Some(ReplyError::DownstreamTimeout),
            5 => Some(ReplyError::DownstreamBusy),
            _ => None,
        }
    }
}

/// One descriptor. Field order and sizes are the ABI; see `docs/abi.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Descriptor {
    /// [`ABI_VERSION`].
    pub version: u8,
    /// [`Kind`] as a byte (kept raw so any received byte pattern is a valid `Descriptor`).
    pub kind: u8,
    /// For refused descriptors: the [`RefuseReason`] in the low nibble and the original kind in
    /// the high nibble. For bufferless replies: a [`ReplyError`]. Otherwise 0.
    pub status: u8,
    /// Function-to-function transfers so far within the request; the position in a sequence.
    pub hops: u8,
    /// Destination function id (0 is the gateway).
    pub dst_fn: u16,
    /// Destination instance, or [`ANY_INSTANCE`] to let the router pick one.
    pub dst_instance: u16,
    /// Sender function id. Written by the router from the sending socket; what the sender puts
    /// here is ignored.
    pub src_fn: u16,
    /// Sender instance, written by the router like `src_fn`.
    pub src_instance: u16,
    /// Index of the chain route the request came in on.
    pub route: u16,
    /// The gateway instance that owns the request (where the final reply goes).
    pub origin_instance: u16,
    /// Low 32 bits of the pool id: a descriptor of another chain's pool is refused.
    pub pool_tag: u32,
    /// Generation of the buffer at `offset` when the descriptor was made.
    pub generation: u32,
    /// Request this descriptor belongs to (assigned by the gateway).
    pub request_id: u64,
    /// Byte offset of the buffer in the pool file, or [`NO_BUFFER`].
    pub offset: u64,
    /// Bytes of the buffer in use (an envelope, see [`crate::envelope`]).
    pub len: u32,
    /// Correlates a call's reply with the caller's pending call; 0 outside calls.
    pub call_id: u32,
}

const _: () = assert!(size_of::<Descriptor>() == DESCRIPTOR_SIZE);
const _: () = assert!(align_of::<Descriptor>() == 8);

/// Byte offsets of the fields SPROXY touches, asserted here so a reordering cannot go unnoticed.
pub mod field_offsets {
    pub const VERSION: usize = 0;
    pub const KIND: usize = 1;
    pub const STATUS: usize = 2;
    pub const DST_FN: usize = 4;
    pub const DST_INSTANCE: usize = 6;
    pub const SRC_FN: usize = 8;
    pub const SRC_INSTANCE: usize = 10;
    pub const REQUEST_ID: usize = 24;
    pub const OFFSET: usize = 32;
    pub const LEN: usize = 40;
    pub const CALL_ID: usize = 44;
}

const _: () = {
    use field_offsets as f;
    assert!(std::mem::offset_of!(Descriptor, version) == f::VERSION);
    assert!(std::mem::offset_of!(Descriptor, kind) == f::KIND);
    assert!(std::mem::offset_of!(Descriptor, status) == f::STATUS);
    assert!(std::mem::offset_of!(Descriptor, dst_fn) == f::DST_FN);
    assert!(std::mem::offset_of!(Descriptor, dst_instance) == f::DST_INSTANCE);
    assert!(std::mem::offset_of!(Descriptor, src_fn) == f::SRC_FN);
    assert!(std::mem::offset_of!(Descriptor, src_instance) == f::SRC_INSTANCE);
    assert!(std::mem::offset_of!(Descriptor, request_id) == f::REQUEST_ID);
    assert!(std::mem::offset_of!(Descriptor, offset) == f::OFFSET);
    assert!(std::mem::offset_of!(Descriptor, len) == f::LEN);
    assert!(std::mem::offset_of!(Descriptor, call_id) == f::CALL_ID);
};

impl Descriptor {
    /// A request for `dst` that the router may give to any of its instances.
    pub fn request(dst: FnId, request_id: u64) -> Descriptor {
        Descriptor {
            version: ABI_VERSION,
            kind: Kind::Request as u8,
            dst_fn: dst.0,
            dst_instance: ANY_INSTANCE.0,
            request_id,
            ..Descriptor::default()
        }
    }

    pub fn kind(&self) -> Option<Kind> {
        Kind::from_u8(self.kind)
    }

    pub fn dst(&self) -> FnId {
        FnId(self.dst_fn)
    }

    pub fn src(&self) -> (FnId, InstanceId) {
        (FnId(self.src_fn), InstanceId(self.src_instance))
    }

    /// For a refused descriptor: why, and what it was before the router refused it.
    pub fn refusal(&self) -> Option<(Option<RefuseReason>, Option<Kind>)> {
        (self.kind() == Some(Kind::Refused)).then(|| {
            (
                RefuseReason::from_u8(self.status & 0x0F),
                Kind::from_u8(self.status >> 4),
            )
        })
    }

    /// Marks a descriptor refused, keeping its original kind in the high nibble of `status`.
    pub fn refuse(&mut self, reason: RefuseReason) {
        self.status = reason as u8 | (self.kind << 4);
        self.kind = Kind::Refused as u8;
    }

    pub fn has_buffer(&self) -> bool {
        self.offset != NO_BUFFER
    }

    pub fn as_bytes(&self) -> &[u8; DESCRIPTOR_SIZE] {
        // SAFETY: repr(C), 48 bytes, no padding (the fields tile the struct exactly, asserted by
        // the size check above), and every field is a plain integer.
        unsafe { &*(self as *const Descriptor as *const [u8; DESCRIPTOR_SIZE]) }
    }

    pub fn from_bytes(bytes: &[u8; DESCRIPTOR_SIZE]) -> Descriptor {
        // SAFETY: every bit pattern is a valid Descriptor (integers only); read_unaligned because
        // a byte slice of a stream carries no alignment.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Descriptor) }
    }
}

/// Splits a received byte stream into descriptors, keeping a partial tail between reads.
pub struct DescriptorFramer {
    partial: [u8; DESCRIPTOR_SIZE],
    partial_len: usize,
}

impl Default for DescriptorFramer {
    fn default() -> Self {
        DescriptorFramer {
            partial: [0; DESCRIPTOR_SIZE],
            partial_len: 0,
        }
    }
}

impl DescriptorFramer {
    /// Feeds received bytes, calling `each` for every whole descriptor.
    pub fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(Descriptor)) {
        if self.partial_len > 0 {
            let need = DESCRIPTOR_SIZE - self.partial_len;
            let take = need.min(bytes.len());
            self.partial[self.partial_len..self.partial_len + take].copy_from_slice(&bytes[..take]);
            self.partial_len += take;
            bytes = &bytes[take..];
            if self.partial_len < DESCRIPTOR_SIZE {
                return;
            }
            each(Descriptor::from_bytes(&self.partial));
            self.partial_len = 0;
        }
        let mut chunks = bytes.chunks_exact(DESCRIPTOR_SIZE);
        for chunk in &mut chunks {
            each(Descriptor::from_bytes(
                chunk.try_into().expect("exact chunk"),
            ));
        }
        let rest = chunks.remainder();
        self.partial[..rest.len()].copy_from_slice(rest);
        self.partial_len = rest.len();
    }

    /// Bytes of an incomplete descriptor waiting for the rest.
    pub fn pending(&self) -> usize {
        self.partial_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip() {
        let mut d = Descriptor::request(FnId(7), 0x1122_3344_5566_7788);
        d.offset = 4096;
        d.len = 99;
        d.call_id = 5;
        let back = Descriptor::from_bytes(d.as_bytes());
        assert_eq!(back, d);
        assert_eq!(d.as_bytes()[field_offsets::DST_FN], 7);
        assert_eq!(d.as_bytes()[field_offsets::KIND], Kind::Request as u8);
    }

    #[test]
    fn framer_splits_a_stream_at_any_boundary() {
        let descs: Vec<Descriptor> = (0..5u64)
            .map(|i| Descriptor::request(FnId(i as u16), i))
            .collect();
        let stream: Vec<u8> = descs.iter().flat_map(|d| d.as_bytes().to_vec()).collect();
        for cut in [1usize, 7, 47, 48, 49, 100, 239] {
            let mut framer = DescriptorFramer::default();
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                framer.feed(piece, |d| got.push(d));
            }
            assert_eq!(got, descs, "chunk size {cut}");
            assert_eq!(framer.pending(), 0);
        }
    }
}
