//! Messages as handlers see them: read in place from the pool, never copied or deserialised.

use crate::lease::Lease;
use spright_core::envelope::{Envelope, EnvelopeError, ENVELOPE_HEADER_SIZE};
use std::ops::Range;

/// A message in a held buffer: a request to handle, or the reply to a call.
#[derive(Debug)]
pub struct Message {
    lease: Lease,
    status: u16,
    meta: Range<usize>,
    body: Range<usize>,
}

/// What a handler receives.
pub type Request = Message;
/// What a call returns.
pub type Reply = Message;

impl Message {
    /// Wraps a claimed buffer, checking its envelope.
    pub fn parse(lease: Lease) -> Result<Message, (Lease, EnvelopeError)> {
        let (status, meta_len, body_len) = match lease.envelope() {
            Ok(e) => (e.status, e.meta.len(), e.body.len()),
            Err(e) => return Err((lease, e)),
        };
        let meta = ENVELOPE_HEADER_SIZE..ENVELOPE_HEADER_SIZE + meta_len;
        let body = meta.end..meta.end + body_len;
        Ok(Message {
            lease,
            status,
            meta,
            body,
        })
    }

    fn envelope(&self) -> Envelope<'_> {
        let bytes = self.lease.bytes();
        Envelope {
            status: self.status,
            meta: &bytes[self.meta.clone()],
            body: &bytes[self.body.clone()],
        }
    }

    /// The status (0 for a request from the gateway; the previous step's status in a sequence;
    /// the callee's status for a reply).
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The request method ("GET", ...).
    pub fn method(&self) -> &str {
        self.envelope().request_line().map(|(m, _)| m).unwrap_or("")
    }

    /// The request target: path and query.
    pub fn target(&self) -> &str {
        self.envelope().request_line().map(|(_, t)| t).unwrap_or("")
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map(|(p, _)| p).unwrap_or(t)
    }

    /// The query string, without '?'.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// The value of query parameter `name` (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }

    /// A header value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.envelope().header(name)
    }

    /// The headers, as (name, value) in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.envelope().headers()
    }

    /// The body, in place in shared memory.
    pub fn body(&self) -> &[u8] {
        &self.lease.bytes()[self.body.clone()]
    }

    /// The body as UTF-8 text, if it is.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(self.body()).ok()
    }

    /// The request line (first meta line), to repeat in responses.
    pub(crate) fn request_line(&self) -> &[u8] {
        let meta = &self.lease.bytes()[self.meta.clone()];
        meta.split(|&b| b == b'\n').next().unwrap_or(b"")
    }

    /// Gives the buffer up (it is freed when the lease drops).
    pub fn into_lease(self) -> Lease {
        self.lease
    }
}

/// What a handler returns: a message written into a pool buffer, ready to go on.
pub struct Response {
    pub(crate) lease: Lease,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.lease.envelope().map(|e| e.status).unwrap_or(0)
    }

    pub fn body(&self) -> &[u8] {
        self.lease.envelope().map(|e| e.body).unwrap_or(&[])
    }
}
