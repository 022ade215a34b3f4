//! Neighbourhood filters: Gaussian smoothing and Sobel gradients.

use super::image::GrayImage;

/// 5x5 Gaussian blur (binomial 1-4-6-4-1 kernel, sigma about 1), applied as
/// two 1-D passes. Edges are handled by repeating the border pixels, so the
/// output has the input's size and a flat image stays flat.
///
/// Smoothing first keeps sensor noise from splitting bright regions into
/// speckled fragments when they are thresholded.
pub fn gaussian_blur5(img: &GrayImage) -> GrayImage {
    let (w, h) = (img.width, img.height);
    if w == 0 || h == 0 {
        return img.clone();
    }
    // Horizontal pass into 16x-scaled sums (at most 16 * 255), so there
    // is a single rounding at the end. Each row is padded by repeating its
    // end pixels, which keeps the inner loop free of edge cases.
    let mut tmp = vec![0u16; w * h];
    let mut padded = vec![0u16; w + 4];
    for y in 0..h {
        let row = img.row(y);
        for (p, &v) in padded[2..w + 2].iter_mut().zip(row) {
            *p = u16::from(v);
        }
        let (first, last) = (u16::from(row[0]), u16::from(row[w - 1]));
        padded[..2].fill(first);
        padded[w + 2..].fill(last);
        let out = &mut tmp[y * w..(y + 1) * w];
        for (x, o) in out.iter_mut().enumerate() {
            let p = &padded[x..x + 5];
            *o = p[0] + 4 * (p[1] + p[3]) + 6 * p[2] + p[4];
        }
    }
    // Vertical pass over five source rows, clamped at the top and bottom.
    let mut pixels = vec![0u8; w * h];
    for y in 0..h {
        let at = |dy: isize| {
            let r = (y as isize + dy).clamp(0, h as isize - 1) as usize;
            &tmp[r * w..(r + 1) * w]
        };
        let (r0, r1, r2, r3, r4) = (at(-2), at(-1), at(0), at(1), at(2));
        for (x, o) in pixels[y * w..(y + 1) * w].iter_mut().enumerate() {
            let acc = u32::from(r0[x])
                + 4 * (u32::from(r1[x]) + u32::from(r3[x]))
                + 6 * u32::from(r2[x])
                + u32::from(r4[x]);
            *o = ((acc + 128) / 256) as u8;
        }
    }
    GrayImage {
        width: w,
        height: h,
        pixels,
    }
}

/// Sobel derivatives: `gx` responds to vertical edges (left-right change),
/// `gy` to horizontal ones. Border pixels, lacking a full neighbourhood, are 0.
pub struct Gradients {
    pub width: usize,
    pub height: usize,
    pub gx: Vec<i16>,
    pub gy: Vec<i16>,
}

pub fn sobel(img: &GrayImage) -> Gradients {
    let (w, h) = (img.width, img.height);
    let mut gx = vec![0i16; w * h];
    let mut gy = vec![0i16; w * h];
    for y in 1..h.saturating_sub(1) {
        let (up, mid, down) = (img.row(y - 1), img.row(y), img.row(y + 1));
        let (ox, oy) = (&mut gx[y * w..(y + 1) * w], &mut gy[y * w..(y + 1) * w]);
        for x in 1..w - 1 {
            let (ul, u, ur) = (up[x - 1] as i16, up[x] as i16, up[x + 1] as i16);
            let (l, r) = (mid[x - 1] as i16, mid[x + 1] as i16);
            let (dl, d, dr) = (down[x - 1] as i16, down[x] as i16, down[x + 1] as i16);
            ox[x] = (ur + 2 * r + dr) - (ul + 2 * l + dl);
            oy[x] = (dl + 2 * d + dr) - (ul + 2 * u + ur);
        }
    }
    Gradients {
        width: w,
        height: h,
        gx,
        gy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blur_keeps_flat_images_flat_and_spreads_a_dot() {
        let flat = GrayImage::new(7, 5, 90);
        assert_eq!(gaussian_blur5(&flat), flat);

        let mut dot = GrayImage::new(9, 9, 0);
        dot.set(4, 4, 255);
        let b = gaussian_blur5(&dot);
        // Centre weight is 36/256 of the dot; the kernel is symmetric.
        assert_eq!(b.get(4, 4), 36);
        assert_eq!(b.get(3, 4), b.get(5, 4));
        assert_eq!(b.get(4, 3), b.get(3, 4));
        assert_eq!(b.get(0, 0), 0);
    }

    #[test]
    fn blur_handles_tiny_images() {
        for (w, h) in [(0, 0), (1, 1), (1, 7), (3, 1)] {
            let img = GrayImage::new(w, h, 200);
            assert_eq!(gaussian_blur5(&img), img);
        }
    }

    #[test]
    fn sobel_sees_a_vertical_edge() {
        let mut img = GrayImage::new(6, 4, 10);
        for y in 0..4 {
            for x in 3..6 {
                img.set(x, y, 110);
            }
        }
        let g = sobel(&img);
        assert_eq!(g.gx[6 + 2], 400);
        assert_eq!(g.gx[6 + 3], 400);
        assert_eq!(g.gx[6 + 1], 0);
        assert!(g.gy.iter().all(|&v| v == 0));
        // Tiny images have no interior and must not panic.
        let _ = sobel(&GrayImage::new(1, 1, 0));
        let _ = sobel(&GrayImage::new(0, 0, 0));
    }
}
