//! Licence-plate detection: find the plate in a frame and read it.
//!
//! 1. Smooth the frame (5x5 Gaussian) so noise does not fragment regions.
//! 2. Take Sobel gradients; text is dense in left-right intensity changes.
//! 3. Threshold the smoothed frame at a ladder of levels and label the
//!    bright connected regions at each. A plate face shows up as a region
//!    of plate-like size and aspect ratio at some level, whatever the
//!    lighting; no single global threshold works for every frame.
//! 4. Keep regions that are mostly solid and rich in vertical edges, read
//!    each one (see [`super::ocr`]), and return the most confident reading.

use super::components::bright_components;
use super::filter::{gaussian_blur5, sobel, Gradients};
use super::image::{GrayImage, Rect};
use super::ocr::{read_text, Reading};

/// Characters on a plate.
pub const PLATE_LEN: usize = 7;

/// Threshold ladder for candidate regions: levels `FIRST, FIRST + STEP, ...`.
const LADDER_FIRST: u8 = 40;
const LADDER_STEP: u8 = 8;
/// Smallest plate face in pixels that could hold seven legible characters.
const MIN_PLATE_WIDTH: usize = 40;
const MIN_PLATE_HEIGHT: usize = 12;
/// Width/height of a plate face region.
const MIN_ASPECT: f64 = 2.5;
const MAX_ASPECT: f64 = 8.0;
/// Share of the bounding box the region must fill; the characters are the
/// holes, and they cover well under half the face.
const MIN_FILL: f64 = 0.5;
/// A pixel is an edge pixel when |Sobel x| reaches this, and a plate needs
/// at least this share of edge pixels: generated plates have 0.15 or more,
/// blank signs and smooth blobs well under 0.08. Skipping those saves
/// reading them.
const EDGE_LEVEL: i16 = 120;
const MIN_EDGE_SHARE: f64 = 0.08;

/// A plate found in a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// The characters, left to right.
    pub text: String,
    /// The plate's bright face (inside its frame), in image pixels.
    pub bbox: Rect,
    /// Mean template-match score of the characters, at most 1 (about 0.99
    /// for a clean frame); a character scoring below
    /// [`super::ocr::MIN_CHAR_SCORE`] fails the whole reading.
    pub confidence: f32,
    /// Each character's box, left to right.
    pub chars: Vec<Rect>,
}

/// Why no plate could be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectError {
    #[error("pixel buffer has {actual} bytes but {width}x{height} needs {expected}")]
    InvalidImage {
        width: usize,
        height: usize,
        expected: usize,
        actual: usize,
    },
    #[error("image {width}x{height} is smaller than a readable plate")]
    ImageTooSmall { width: usize, height: usize },
    #[error("no plate-shaped bright region with text found")]
    NoPlateFound,
    #[error("plate region holds {found} characters, expected {expected}")]
    WrongCharCount { found: usize, expected: usize },
    #[error("plate text touches the edge of the plate region")]
    TextClipped,
    #[error("plate text is {height} pixels high, too small to read")]
    TextTooSmall { height: usize },
    #[error("character {index} matches no glyph well (best score {score:.2})")]
    UnrecognisedCharacter { index: usize, score: f32 },
}

impl DetectError {
    /// How far reading got before failing; when every candidate region
    /// fails, the error from the one that got furthest is the most useful.
    fn progress(&self) -> u8 {
        match self {
            Self::InvalidImage { .. } | Self::ImageTooSmall { .. } | Self::NoPlateFound => 0,
            Self::WrongCharCount { found: 0, .. } => 1,
            Self::WrongCharCount { .. } => 2,
            Self::TextClipped | Self::TextTooSmall { .. } => 3,
            Self::UnrecognisedCharacter { .. } => 4,
        }
    }
}

/// Finds the licence plate in `img` and reads its [`PLATE_LEN`] characters.
pub fn read_plate(img: &GrayImage) -> Result<Detection, DetectError> {
    if !img.is_valid() {
        return Err(DetectError::InvalidImage {
            width: img.width,
            height: img.height,
            expected: img.width.saturating_mul(img.height),
            actual: img.pixels.len(),
        });
    }
    if img.width < MIN_PLATE_WIDTH || img.height < MIN_PLATE_HEIGHT {
        return Err(DetectError::ImageTooSmall {
            width: img.width,
            height: img.height,
        });
    }

    let smooth = gaussian_blur5(img);
    let grad = sobel(&smooth);
    let mut best: Option<Detection> = None;
    let mut failure = DetectError::NoPlateFound;
    let mut seen: Vec<Rect> = Vec::new();
    for level in (LADDER_FIRST..=u8::MAX).step_by(LADDER_STEP as usize) {
        let min_area = MIN_PLATE_WIDTH * MIN_PLATE_HEIGHT / 2;
        for region in bright_components(&smooth, level, min_area) {
            let bbox = region.bbox;
            // Neighbouring levels often yield the very same region.
            if seen.contains(&bbox) || !plate_shaped(bbox, region.area, img) {
                continue;
            }
            seen.push(bbox);
            if edge_share(&grad, bbox) < MIN_EDGE_SHARE {
                continue;
            }
            match read_text(img, bbox, PLATE_LEN) {
                Ok(Reading {
                    text,
                    confidence,
                    chars,
                }) => {
                    if best.as_ref().is_none_or(|b| confidence > b.confidence) {
                        best = Some(Detection {
                            text,
                            bbox,
                            confidence,
                            chars,
                        });
                    }
                }
                Err(e) if e.progress() > failure.progress() => failure = e,
                Err(_) => {}
            }
        }
    }
    best.ok_or(failure)
}

fn plate_shaped(bbox: Rect, area: usize, img: &GrayImage) -> bool {
    let aspect = bbox.width as f64 / bbox.height as f64;
    bbox.width >= MIN_PLATE_WIDTH
        && bbox.height >= MIN_PLATE_HEIGHT
        // A region spanning (nearly) the whole frame is background.
        && bbox.width < img.width * 9 / 10
        && bbox.height < img.height * 6 / 10
        && (MIN_ASPECT..=MAX_ASPECT).contains(&aspect)
        && area as f64 >= MIN_FILL * bbox.area() as f64
}

/// Share of the box's pixels on a strong vertical edge.
fn edge_share(grad: &Gradients, bbox: Rect) -> f64 {
    let mut edges = 0usize;
    for y in bbox.y..bbox.bottom() {
        let row = &grad.gx[y * grad.width + bbox.x..y * grad.width + bbox.right()];
        edges += row
            .iter()
            .filter(|g| g.unsigned_abs() >= EDGE_LEVEL as u16)
            .count();
    }
    edges as f64 / bbox.area() as f64
}

#[cfg(test)]
mod tests {
    use super::super::pgm;
    use super::super::synth::{plate_image, random_plate, scene};
    use super::*;

    #[test]
    fn reads_generated_plates() {
        // Debug builds are ~15x slower; 50 seeds still cover the range of
        // scales, lighting directions and distractor mixes.
        let seeds = if cfg!(debug_assertions) { 50 } else { 200 };
        for seed in 0..seeds {
            let plate = random_plate(seed);
            let s = scene(&plate, seed);
            let d = read_plate(&s.image).unwrap_or_else(|e| panic!("seed {seed} ({plate}): {e}"));
            assert_eq!(d.text, plate, "seed {seed}");
            assert!(
                d.confidence >= 0.9,
                "seed {seed}: confidence {}",
                d.confidence
            );
            assert!(
                d.bbox.iou(&s.plate_bbox) > 0.7,
                "seed {seed}: {:?} vs {:?}",
                d.bbox,
                s.plate_bbox
            );
            assert_eq!(d.chars.len(), PLATE_LEN);
            for c in &d.chars {
                assert!(
                    c.x > d.bbox.x && c.right() < d.bbox.right(),
                    "seed {seed}: {c:?}"
                );
                assert!(
                    c.y > d.bbox.y && c.bottom() < d.bbox.bottom(),
                    "seed {seed}: {c:?}"
                );
            }
            assert!(
                d.chars.windows(2).all(|w| w[0].right() < w[1].x),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn reads_plates_sent_as_pgm() {
        let plate = random_plate(77);
        let bytes = pgm::encode(&plate_image(&plate, 77));
        let d = read_plate(&pgm::decode(&bytes).unwrap()).unwrap();
        assert_eq!(d.text, plate);
    }

    #[test]
    fn reads_every_character() {
        // Six plates that between them hold all 36 characters.
        let all = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456";
        for (i, chunk) in all.as_bytes().chunks(PLATE_LEN).enumerate() {
            let plate = std::str::from_utf8(chunk).unwrap();
            if plate.len() != PLATE_LEN {
                continue;
            }
            let d = read_plate(&plate_image(plate, 1000 + i as u64)).unwrap();
            assert_eq!(d.text, plate);
        }
    }

    #[test]
    fn blank_images_have_no_plate() {
        for v in [0, 128, 255] {
            assert_eq!(
                read_plate(&GrayImage::new(320, 240, v)),
                Err(DetectError::NoPlateFound)
            );
        }
    }

    #[test]
    fn noise_has_no_plate() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let pixels = (0..320 * 240)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let img = GrayImage::from_pixels(320, 240, pixels).unwrap();
        assert!(read_plate(&img).is_err());
    }

    #[test]
    fn wrong_character_count_is_reported() {
        // A plate with too few characters is found but not accepted.
        let err = read_plate(&plate_image("AB12", 5)).unwrap_err();
        assert_eq!(
            err,
            DetectError::WrongCharCount {
                found: 4,
                expected: 7
            }
        );
    }

    #[test]
    fn malformed_and_tiny_images_fail_cleanly() {
        let bad = GrayImage {
            width: 10,
            height: 10,
            pixels: vec![0; 3],
        };
        assert!(matches!(
            read_plate(&bad),
            Err(DetectError::InvalidImage { .. })
        ));
        for (w, h) in [(0, 0), (1, 1), (39, 240), (320, 11)] {
            assert!(matches!(
                read_plate(&GrayImage::new(w, h, 200)),
                Err(DetectError::ImageTooSmall { .. })
            ));
        }
        // Just large enough, with a plate-sized bright box and no text.
        let mut img = GrayImage::new(60, 30, 20);
        for y in 5..25 {
            for x in 5..55 {
                img.set(x, y, 220);
            }
        }
        assert!(read_plate(&img).is_err());
    }

    /// Release-build timing; run with
    /// `cargo test --release -p spright-example-parking -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        let images: Vec<_> = (0..200).map(|s| plate_image(&random_plate(s), s)).collect();
        let start = std::time::Instant::now();
        let rounds = 5;
        for _ in 0..rounds {
            for img in &images {
                std::hint::black_box(read_plate(std::hint::black_box(img)).unwrap());
            }
        }
        let per = start.elapsed() / (rounds * images.len()) as u32;
        println!("read_plate: {per:?} per 320x240 image");
    }
}
