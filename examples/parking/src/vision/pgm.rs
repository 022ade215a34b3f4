//! Binary PGM (P5) encoding and decoding, so images can travel through the
//! function chain as plain bytes without an image library.
//!
//! The decoder treats its input as untrusted: it bounds the dimensions before
//! allocating and reports every malformation as a [`PgmError`].

use super::image::GrayImage;

/// Largest width or height the decoder accepts; bounds the allocation an
/// untrusted header can ask for.
pub const MAX_DIMENSION: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgmError {
    #[error("not a binary PGM: the data must start with \"P5\"")]
    BadMagic,
    #[error("bad PGM header: {0}")]
    BadHeader(&'static str),
    #[error("PGM dimensions {width}x{height} exceed the {max}x{max} limit")]
    DimensionsTooLarge { width: u64, height: u64, max: usize },
    #[error("PGM maxval {0} needs 16-bit samples, which are not supported")]
    UnsupportedMaxval(u64),
    #[error("PGM pixel data truncated: expected {expected} bytes, found {actual}")]
    Truncated { expected: usize, actual: usize },
}

/// Encodes an image as binary PGM with maxval 255.
pub fn encode(image: &GrayImage) -> Vec<u8> {
    let header = format!("P5\n{} {}\n255\n", image.width, image.height);
    let mut out = Vec::with_capacity(header.len() + image.pixels.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&image.pixels);
    out
}

/// Decodes a binary PGM. Bytes after the pixel data are ignored (the format
/// allows several images back to back); samples are rescaled to 0..=255 when
/// maxval is smaller.
pub fn decode(data: &[u8]) -> Result<GrayImage, PgmError> {
    if !data.starts_with(b"P5") {
        return Err(PgmError::BadMagic);
    }
    let mut header = HeaderReader { data, pos: 2 };
    let width = header.number("width")?;
    let height = header.number("height")?;
    let maxval = header.number("maxval")?;
    if width == 0 || height == 0 {
        return Err(PgmError::BadHeader("width and height must be non-zero"));
    }
    if width > MAX_DIMENSION as u64 || height > MAX_DIMENSION as u64 {
        return Err(PgmError::DimensionsTooLarge {
            width,
            height,
            max: MAX_DIMENSION,
        });
    }
    if maxval == 0 {
        return Err(PgmError::BadHeader("maxval must be at least 1"));
    }
    if maxval > 255 {
        return Err(PgmError::UnsupportedMaxval(maxval));
    }
    // Exactly one whitespace byte separates the header from the samples;
    // the samples themselves may be whitespace bytes, so skip no more.
    match data.get(header.pos) {
        Some(b) if b.is_ascii_whitespace() => header.pos += 1,
        Some(_) => return Err(PgmError::BadHeader("no whitespace after maxval")),
        None => {}
    }

    // Both dimensions are at most MAX_DIMENSION, so this cannot overflow.
    let (width, height) = (width as usize, height as usize);
    let expected = width * height;
    let body = &data[header.pos..];
    if body.len() < expected {
        return Err(PgmError::Truncated {
            expected,
            actual: body.len(),
        });
    }
    let mut pixels = body[..expected].to_vec();
    if maxval < 255 {
        let max = maxval as u32;
        for p in &mut pixels {
            *p = ((u32::from(*p).min(max) * 255 + max / 2) / max) as u8;
        }
    }
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

/// Reads the whitespace- and comment-separated decimal fields of a header.
struct HeaderReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl HeaderReader<'_> {
    fn number(&mut self, field: &'static str) -> Result<u64, PgmError> {
        self.skip_separators();
        let start = self.pos;
        let mut value: u64 = 0;
        while let Some(&b) = self.data.get(self.pos) {
            if !b.is_ascii_digit() {
                break;
            }
            // Saturate rather than overflow: any huge value is rejected later.
            value = value.saturating_mul(10).saturating_add(u64::from(b - b'0'));
            self.pos += 1;
        }
        if self.pos == start {
            return Err(PgmError::BadHeader(
                match (field, self.data.get(self.pos)) {
                    ("width", None) => "missing width",
                    ("height", None) => "missing height",
                    (_, None) => "missing maxval",
                    ("width", Some(_)) => "width is not a decimal number",
                    ("height", Some(_)) => "height is not a decimal number",
                    _ => "maxval is not a decimal number",
                },
            ));
        }
        Ok(value)
    }

    fn skip_separators(&mut self) {
        while let Some(&b) = self.data.get(self.pos) {
            if b == b'#' {
                while let Some(&c) = self.data.get(self.pos) {
                    if c == b'\n' || c == b'\r' {
                        break;
                    }
                    self.pos += 1;
                }
            } else if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GrayImage {
        let pixels = (0..37u32 * 23).map(|i| (i * 7 % 256) as u8).collect();
        GrayImage::from_pixels(37, 23, pixels).unwrap()
    }

    #[test]
    fn round_trip() {
        let img = sample();
        let bytes = encode(&img);
        assert!(bytes.starts_with(b"P5\n37 23\n255\n"));
        assert_eq!(decode(&bytes).unwrap(), img);
    }

    #[test]
    fn round_trip_keeps_whitespace_valued_samples() {
        // A first sample equal to '\n' must not be eaten as header whitespace.
        let img = GrayImage::from_pixels(3, 1, vec![b'\n', b' ', 9]).unwrap();
        assert_eq!(decode(&encode(&img)).unwrap(), img);
    }

    #[test]
    fn header_comments_and_small_maxval() {
        let mut bytes = b"P5 # made by hand\n2 # width\n 1\n# max\n15\n".to_vec();
        bytes.extend_from_slice(&[0, 15]);
        let img = decode(&bytes).unwrap();
        assert_eq!((img.width, img.height), (2, 1));
        assert_eq!(img.pixels, vec![0, 255]);
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!(decode(b"P6\n1 1\n255\n\0"), Err(PgmError::BadMagic));
        assert_eq!(decode(b""), Err(PgmError::BadMagic));
        assert_eq!(decode(b"P5\n"), Err(PgmError::BadHeader("missing width")));
        assert_eq!(
            decode(b"P5 4 x 255\n"),
            Err(PgmError::BadHeader("height is not a decimal number"))
        );
        assert_eq!(
            decode(b"P5 0 4 255\n"),
            Err(PgmError::BadHeader("width and height must be non-zero"))
        );
        assert_eq!(
            decode(b"P5 4096 4 255\n"),
            Err(PgmError::DimensionsTooLarge {
                width: 4096,
                height: 4,
                max: MAX_DIMENSION
            })
        );
        assert!(matches!(
            decode(b"P5 99999999999999999999999999 1 255\n"),
            Err(PgmError::DimensionsTooLarge { .. })
        ));
        assert_eq!(
            decode(b"P5 1 1 65535\n\0\0"),
            Err(PgmError::UnsupportedMaxval(65535))
        );
        assert_eq!(
            decode(b"P5 4 4 255\n\x01\x02"),
            Err(PgmError::Truncated {
                expected: 16,
                actual: 2
            })
        );
        assert_eq!(
            decode(b"P5 1 1 255"),
            Err(PgmError::Truncated {
                expected: 1,
                actual: 0
            })
        );
    }

    #[test]
    fn never_panics_on_garbage() {
        // Deterministic xorshift so failures reproduce.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = encode(&sample());
        for round in 0..3000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = match round % 3 {
                // Pure garbage, sometimes with a valid magic.
                0 => (0..len).map(|_| next() as u8).collect(),
                // Every truncation of a valid file.
                1 => valid[..round / 3 % valid.len()].to_vec(),
                // A valid file with a few bytes corrupted.
                _ => {
                    let mut v = valid.clone();
                    for _ in 0..1 + next() % 4 {
                        let i = (next() % 16) as usize;
                        v[i] = next() as u8;
                    }
                    v
                }
            };
            if round % 5 == 0 && bytes.len() >= 2 {
                bytes[..2].copy_from_slice(b"P5");
            }
            let _ = decode(&bytes);
        }
    }
}
