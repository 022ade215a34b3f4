//! The 8-bit grayscale image every vision stage works on.

/// An 8-bit grayscale image stored row-major, one byte per pixel.
///
/// Fields are public so stages can work on the pixel slice directly; code
/// that receives an image from outside should check [`GrayImage::is_valid`].
#[derive(Clone, PartialEq, Eq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl GrayImage {
    /// An image filled with one value.
    pub fn new(width: usize, height: usize, fill: u8) -> Self {
        Self {
            width,
            height,
            pixels: vec![fill; width * height],
        }
    }

    /// Wraps a pixel buffer, or returns `None` if its length is not `width * height`.
    pub fn from_pixels(width: usize, height: usize, pixels: Vec<u8>) -> Option<Self> {
        (width.checked_mul(height) == Some(pixels.len())).then_some(Self {
            width,
            height,
            pixels,
        })
    }

    /// Whether the buffer length matches the dimensions.
    pub fn is_valid(&self) -> bool {
        self.width.checked_mul(self.height) == Some(self.pixels.len())
    }

    /// The pixel at (x, y). Panics when out of bounds, like slice indexing.
    #[inline]
    pub fn get(&self, x: usize, y: usize) -> u8 {
        debug_assert!(x < self.width && y < self.height);
        self.pixels[y * self.width + x]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, value: u8) {
        debug_assert!(x < self.width && y < self.height);
        self.pixels[y * self.width + x] = value;
    }

    /// One row of pixels.
    #[inline]
    pub fn row(&self, y: usize) -> &[u8] {
        &self.pixels[y * self.width..(y + 1) * self.width]
    }
}

// A derived Debug would dump every pixel into test failure messages.
impl std::fmt::Debug for GrayImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrayImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("pixels", &format_args!("[{} bytes]", self.pixels.len()))
            .finish()
    }
}

/// An axis-aligned pixel rectangle: columns `x..x + width`, rows `y..y + height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Rect {
    pub fn right(&self) -> usize {
        self.x + self.width
    }

    pub fn bottom(&self) -> usize {
        self.y + self.height
    }

    pub fn area(&self) -> usize {
        self.width * self.height
    }

    /// Intersection over union, 0.0 for disjoint or empty rectangles.
    pub fn iou(&self, other: &Rect) -> f64 {
        let w = self
            .right()
            .min(other.right())
            .saturating_sub(self.x.max(other.x));
        let h = self
            .bottom()
            .min(other.bottom())
            .saturating_sub(self.y.max(other.y));
        let inter = (w * h) as f64;
        let union = (self.area() + other.area()) as f64 - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pixels_checks_length() {
        assert!(GrayImage::from_pixels(3, 2, vec![0; 6]).is_some());
        assert!(GrayImage::from_pixels(3, 2, vec![0; 5]).is_none());
        assert!(GrayImage::from_pixels(usize::MAX, 2, vec![]).is_none());
    }

    #[test]
    fn iou_of_overlapping_rects() {
        let a = Rect {
            x: 0,
            y: 0,
            width: 10,
            height: 10,
        };
        let b = Rect {
            x: 5,
            y: 0,
            width: 10,
            height: 10,
        };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-9);
        assert_eq!(a.iou(&a), 1.0);
        let far = Rect {
            x: 50,
            y: 50,
            width: 1,
            height: 1,
        };
        assert_eq!(a.iou(&far), 0.0);
    }
}
