//! The envelope: how a message is laid out inside a pool buffer.
//!
//! ```text
//! 0   EnvelopeHeader (16 bytes): magic "SE", status, meta_len, body_len
//! 16  meta: UTF-8 lines. The first is always the request line "METHOD target" of the request
//!     being served (responses repeat it); "name: value" headers follow. A response's status
//!     is in the envelope header; a request's status is 0.
//! ..  body
//! ```
//! The descriptor's `len` is `16 + meta_len + body_len`. Readers take `meta` and `body` as slices
//! of the mapped buffer: nothing is copied or deserialised.

pub const ENVELOPE_MAGIC: u16 = u16::from_le_bytes(*b"SE");
pub const ENVELOPE_HEADER_SIZE: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("message of {0} bytes is shorter than the envelope header")]
    Short(usize),
    #[error("bad envelope magic {0:#06x}")]
    BadMagic(u16),
    #[error("envelope says {meta} + {body} bytes but the message has {available}")]
    Truncated {
        meta: u32,
        body: u32,
        available: usize,
    },
    #[error("message of {needed} bytes does not fit a {capacity}-byte buffer")]
    TooLarge { needed: usize, capacity: usize },
}

/// A parsed envelope borrowing the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub status: u16,
    pub meta: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Envelope<'a> {
    /// Parses the first `len` bytes of a buffer.
    pub fn parse(message: &'a [u8]) -> Result<Envelope<'a>, EnvelopeError> {
        if message.len() < ENVELOPE_HEADER_SIZE {
            return Err(EnvelopeError::Short(message.len()));
        }
        let u16_at = |o: usize| u16::from_le_bytes([message[o], message[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(message[o..o + 4].try_into().unwrap());
        let magic = u16_at(0);
        if magic != ENVELOPE_MAGIC {
            return Err(EnvelopeError::BadMagic(magic));
        }
        let status = u16_at(2);
        let meta_len = u32_at(4);
        let body_len = u32_at(8);
        let available = message.len() - ENVELOPE_HEADER_SIZE;
        let end = meta_len as u64 + body_len as u64;
        if end > available as u64 {
            return Err(EnvelopeError::Truncated {
                meta: meta_len,
                body: body_len,
                available,
            });
        }
        let meta_end = ENVELOPE_HEADER_SIZE + meta_len as usize;
        Ok(Envelope {
            status,
            meta: &message[ENVELOPE_HEADER_SIZE..meta_end],
            body: &message[meta_end..meta_end + body_len as usize],
        })
    }

    /// The request line of a request's meta: `(method, target)`.
    pub fn request_line(&self) -> Option<(&'a str, &'a str)> {
        let first = self.meta_lines().next()?;
        let (method, target) = first.split_once(' ')?;
        Some((method, target))
    }

    /// The meta as lines; a line that is not UTF-8 reads as empty (and a header line that is
    /// not UTF-8 is skipped), so one bad header cannot hide the request line.
    pub fn meta_lines(&self) -> impl Iterator<Item = &'a str> {
        let mut lines = self.meta.split(|&b| b == b'\n');
        if self.meta.last() == Some(&b'\n') {
            // A trailing newline ends the last line; it does not start another.
            let _ = lines.next_back();
        }
        lines.map(|l| std::str::from_utf8(l).unwrap_or(""))
    }

    /// The value of header `name` (case-insensitive) in the meta.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers()
            .find_map(|(k, v)| k.eq_ignore_ascii_case(name).then_some(v))
    }

    /// The headers: every meta line after the request line, as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.meta_lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim(), v.trim()))
            })
    }
}

/// Writes an envelope into `buf`; returns the message length.
pub fn write(
    buf: &mut [u8],
    status: u16,
    meta: &[u8],
    body: &[u8],
) -> Result<usize, EnvelopeError> {
    write_with(buf, status, meta, body.len(), |dst| {
        dst.copy_from_slice(body)
    })
}

/// Writes an envelope whose body (`body_len` bytes) is filled in place by `fill`.
pub fn write_with(
    buf: &mut [u8],
    status: u16,
    meta: &[u8],
    body_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize, EnvelopeError> {
    let needed = ENVELOPE_HEADER_SIZE + meta.len() + body_len;
    if needed > buf.len() {
        return Err(EnvelopeError::TooLarge {
            needed,
            capacity: buf.len(),
        });
    }
    write_header(buf, status, meta.len(), body_len);
    let meta_end = ENVELOPE_HEADER_SIZE + meta.len();
    buf[ENVELOPE_HEADER_SIZE..meta_end].copy_from_slice(meta);
    fill(&mut buf[meta_end..meta_end + body_len]);
    Ok(needed)
}

/// Writes just the header (for writers that put meta and body in place themselves).
pub fn write_header(buf: &mut [u8], status: u16, meta_len: usize, body_len: usize) {
    buf[0..2].copy_from_slice(&ENVELOPE_MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&status.to_le_bytes());
    buf[4..8].copy_from_slice(&(meta_len as u32).to_le_bytes());
    buf[8..12].copy_from_slice(&(body_len as u32).to_le_bytes());
    buf[12..16].fill(0);
}

/// Room left for a body after the header and `meta_len` bytes of meta, in a buffer of `capacity`.
pub fn body_capacity(capacity: usize, meta_len: usize) -> usize {
    capacity.saturating_sub(ENVELOPE_HEADER_SIZE + meta_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_parse() {
        let mut buf = [0u8; 128];
        let n = write(
            &mut buf,
            201,
            b"POST /a?t=1:2\ncontent-type: text/plain\n",
            b"hello",
        )
        .unwrap();
        let e = Envelope::parse(&buf[..n]).unwrap();
        assert_eq!(e.status, 201);
        assert_eq!(e.body, b"hello");
        assert_eq!(e.request_line(), Some(("POST", "/a?t=1:2")));
        assert_eq!(e.headers().count(), 1, "the request line is not a header");
        assert_eq!(e.header("Content-Type"), Some("text/plain"));
        assert_eq!(e.header("missing"), None);
    }

    #[test]
    fn a_header_that_is_not_utf8_hides_nothing_else() {
        let mut buf = [0u8; 128];
        let n = write(&mut buf, 0, b"GET /x\nx-bad: \xff\xfe\naccept: */*\n", b"").unwrap();
        let e = Envelope::parse(&buf[..n]).unwrap();
        assert_eq!(e.request_line(), Some(("GET", "/x")));
        assert_eq!(e.header("accept"), Some("*/*"));
        assert_eq!(e.header("x-bad"), None);
    }

    #[test]
    fn rejects_lies_about_lengths() {
        let mut buf = [0u8; 64];
        let n = write(&mut buf, 200, b"x", b"abc").unwrap();
        assert!(matches!(
            Envelope::parse(&buf[..n - 1]),
            Err(EnvelopeError::Truncated { .. })
        ));
        buf[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Envelope::parse(&buf[..n]),
            Err(EnvelopeError::Truncated { .. })
        ));
        assert!(matches!(
            Envelope::parse(&buf[..3]),
            Err(EnvelopeError::Short(3))
        ));
        assert!(matches!(
            Envelope::parse(&[0u8; 16]),
            Err(EnvelopeError::BadMagic(0))
        ));
    }

    #[test]
    fn too_large_is_an_error_not_a_panic() {
        let mut buf = [0u8; 20];
        assert!(matches!(
            write(&mut buf, 200, b"", b"12345"),
            Err(EnvelopeError::TooLarge { needed: 21, .. })
        ));
    }
}
