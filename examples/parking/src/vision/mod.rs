//! The plate-detection stage of the parking workload, in plain Rust: a
//! camera frame goes in, the licence plate's characters come out.
//!
//! - [`image`]: the grayscale image type; [`pgm`]: its wire format.
//! - [`font`]: the 5x7 plate font; [`synth`]: generated test frames.
//! - [`detect`]: locating and reading the plate, built on [`filter`]
//!   (blur, Sobel), [`threshold`] (Otsu), [`components`] (region labelling)
//!   and [`ocr`] (segmentation and template matching).

pub mod components;
pub mod detect;
pub mod filter;
pub mod font;
pub mod image;
pub mod ocr;
pub mod pgm;
mod rng;
pub mod synth;
pub mod threshold;

pub use detect::{read_plate, DetectError, Detection, PLATE_LEN};
pub use image::{GrayImage, Rect};
pub use pgm::PgmError;
