//! Synthetic parking-camera frames: a licence plate somewhere in a cluttered
//! scene, reproducible from a seed. They stand in for camera input so the
//! pipeline does real image work without shipping a data set.
//!
//! The scene is composed in floating point: textured background, distractors
//! (blobs, lines, a blank bright sign, short text labels), the plate with
//! anti-aliased characters, then a brightness gradient and sensor noise.

use super::font::{self, GLYPHS, GLYPH_HEIGHT, GLYPH_WIDTH};
use super::image::{GrayImage, Rect};
use super::rng::SplitMix64;

pub const WIDTH: usize = 320;
pub const HEIGHT: usize = 240;
/// Characters in a plate made by [`random_plate`].
pub const PLATE_LEN: usize = 7;

/// Plate layout in glyph cells: characters are 5 wide with 2-cell gaps,
/// framed by 4 cells of margin at the sides and 3 above and below.
const GAP_CELLS: f64 = 2.0;
const SIDE_CELLS: f64 = 4.0;
const TOP_CELLS: f64 = 3.0;
const MIN_SCALE: f64 = 2.0;
const MAX_SCALE: f64 = 4.0;
/// Distractors keep this far (pixels) from the plate so they never touch it.
const KEEPOUT: usize = 6;

/// A generated frame and what was drawn in it.
#[derive(Debug, Clone)]
pub struct Scene {
    pub image: GrayImage,
    pub plate: String,
    /// The plate's outer edge, frame included.
    pub plate_bbox: Rect,
    /// Pixels per glyph cell.
    pub glyph_scale: f64,
}

/// A plate number of [`PLATE_LEN`] characters from [`font::CHARSET`].
pub fn random_plate(seed: u64) -> String {
    // Mix the seed so plate text and scene layout use unrelated streams.
    let mut rng = SplitMix64::new(seed ^ 0x5EED_0FC0_FFEE);
    let charset = font::CHARSET.as_bytes();
    (0..PLATE_LEN)
        .map(|_| charset[rng.below(0, charset.len())] as char)
        .collect()
}

/// A [`WIDTH`]x[`HEIGHT`] frame showing `plate`; see [`scene`].
pub fn plate_image(plate: &str, seed: u64) -> GrayImage {
    scene(plate, seed).image
}

/// Renders a frame showing `plate` at a seed-dependent position and size.
/// Characters outside [`font::CHARSET`] are left blank.
pub fn scene(plate: &str, seed: u64) -> Scene {
    let mut rng = SplitMix64::new(seed);
    let mut canvas = Canvas::textured(&mut rng);

    let n = plate.chars().count() as f64;
    let units_w = n * GLYPH_WIDTH as f64 + (n - 1.0).max(0.0) * GAP_CELLS + 2.0 * SIDE_CELLS;
    let units_h = GLYPH_HEIGHT as f64 + 2.0 * TOP_CELLS;
    let fit = ((WIDTH - 16) as f64 / units_w).min((HEIGHT - 16) as f64 / units_h);
    let scale = rng.range(MIN_SCALE, MAX_SCALE).min(fit);
    let (pw, ph) = (
        (units_w * scale).ceil() as usize,
        (units_h * scale).ceil() as usize,
    );
    let plate_bbox = Rect {
        x: rng.below(8, WIDTH.saturating_sub(8 + pw)),
        y: rng.below(8, HEIGHT.saturating_sub(8 + ph)),
        width: pw,
        height: ph,
    };
    let keepout = Rect {
        x: plate_bbox.x.saturating_sub(KEEPOUT),
        y: plate_bbox.y.saturating_sub(KEEPOUT),
        width: pw + 2 * KEEPOUT,
        height: ph + 2 * KEEPOUT,
    };

    // Half the plates sit on a darker car body, which changes what the
    // plate's surroundings look like to a thresholding detector.
    if rng.unit() < 0.5 {
        let mx = rng.range(10.0, 60.0);
        let my = rng.range(8.0, 40.0);
        let (x, y) = (plate_bbox.x as f64, plate_bbox.y as f64);
        let v = rng.range(30.0, 110.0) as f32;
        canvas.fill_rect(x - mx, y - my, x + pw as f64 + mx, y + ph as f64 + my, v);
    }
    add_distractors(&mut canvas, &mut rng, keepout);

    // The plate: dark frame, bright face, dark characters.
    let frame = max_f(2.0, (0.6 * scale).round());
    let (x0, y0) = (plate_bbox.x as f64, plate_bbox.y as f64);
    let (x1, y1) = (x0 + pw as f64, y0 + ph as f64);
    canvas.fill_rect(x0, y0, x1, y1, rng.range(30.0, 80.0) as f32);
    let face = rng.range(185.0, 235.0) as f32;
    canvas.fill_rect(x0 + frame, y0 + frame, x1 - frame, y1 - frame, face);
    let ink = rng.range(15.0, 60.0) as f32;
    let text_x = x0 + (pw as f64 - (units_w - 2.0 * SIDE_CELLS) * scale) / 2.0;
    let text_y = y0 + (ph as f64 - GLYPH_HEIGHT as f64 * scale) / 2.0;
    canvas.draw_text(plate, text_x, text_y, scale, ink);

    canvas.apply_gradient(&mut rng);
    canvas.add_noise(&mut rng);
    Scene {
        image: canvas.quantize(),
        plate: plate.to_string(),
        plate_bbox,
        glyph_scale: scale,
    }
}

fn max_f(a: f64, b: f64) -> f64 {
    if a > b {
        a
    } else {
        b
    }
}

/// Clutter a detector must ignore. Nothing is placed inside `keepout`.
fn add_distractors(canvas: &mut Canvas, rng: &mut SplitMix64, keepout: Rect) {
    let clear = |x: f64, y: f64, w: f64, h: f64| {
        let r = Rect {
            x: x.max(0.0) as usize,
            y: y.max(0.0) as usize,
            width: (w + x.min(0.0)).max(0.0) as usize + 1,
            height: (h + y.min(0.0)).max(0.0) as usize + 1,
        };
        r.iou(&keepout) == 0.0
    };
    // Placement is retried a few times; a distractor that finds no free
    // spot is simply left out.
    let place = |rng: &mut SplitMix64, w: f64, h: f64| {
        (0..20).find_map(|_| {
            let x = rng.range(-w / 3.0, WIDTH as f64 - 2.0 * w / 3.0);
            let y = rng.range(-h / 3.0, HEIGHT as f64 - 2.0 * h / 3.0);
            clear(x, y, w, h).then_some((x, y))
        })
    };

    for _ in 0..rng.below(3, 7) {
        let (w, h) = (rng.range(10.0, 80.0), rng.range(10.0, 80.0));
        let v = rng.range(20.0, 175.0) as f32;
        let round = rng.unit() < 0.5;
        if let Some((x, y)) = place(rng, w, h) {
            if round {
                canvas.fill_ellipse(x + w / 2.0, y + h / 2.0, w / 2.0, h / 2.0, v);
            } else {
                canvas.fill_rect(x, y, x + w, y + h, v);
            }
        }
    }
    // A bright blank sign shaped like a plate: only the text tells them apart.
    if rng.unit() < 0.5 {
        let w = rng.range(60.0, 160.0);
        let h = w / rng.range(3.0, 5.0);
        let v = rng.range(180.0, 230.0) as f32;
        if let Some((x, y)) = place(rng, w, h) {
            canvas.fill_rect(x, y, x + w, y + h, v);
        }
    }
    // Short text labels: characters in the plate font, but too few of them.
    for _ in 0..rng.below(1, 3) {
        let len = rng.below(2, 5);
        let text: String = (0..len)
            .map(|_| GLYPHS[rng.below(0, GLYPHS.len())].ch)
            .collect();
        let s = rng.range(1.5, 3.0);
        let tw = (len as f64 * 7.0 - 2.0) * s;
        let (w, h) = (tw + 4.0 * s, 11.0 * s);
        let bg = rng.range(140.0, 230.0) as f32;
        let ink = rng.range(20.0, 70.0) as f32;
        if let Some((x, y)) = place(rng, w, h) {
            canvas.fill_rect(x, y, x + w, y + h, bg);
            canvas.draw_text(&text, x + 2.0 * s, y + 2.0 * s, s, ink);
        }
    }
    for _ in 0..rng.below(2, 5) {
        let (ax, ay) = (rng.range(0.0, WIDTH as f64), rng.range(0.0, HEIGHT as f64));
        let (bx, by) = (rng.range(0.0, WIDTH as f64), rng.range(0.0, HEIGHT as f64));
        let half = rng.range(0.5, 1.5);
        let v = rng.range(20.0, 180.0) as f32;
        canvas.draw_line(ax, ay, bx, by, half, v, keepout);
    }
}

/// A floating-point drawing surface; values are quantised only at the end
/// so anti-aliasing and noise are not rounded twice.
struct Canvas {
    px: Vec<f32>,
}

impl Canvas {
    /// Smooth value noise in two octaves: a lumpy backdrop whose brightness
    /// varies across the frame, as tarmac and car paint do.
    fn textured(rng: &mut SplitMix64) -> Self {
        let coarse = value_noise(rng, 64);
        let fine = value_noise(rng, 16);
        let base = rng.range(55.0, 75.0) as f32;
        let px = coarse
            .iter()
            .zip(&fine)
            .map(|(c, f)| base + 60.0 * c + 25.0 * f)
            .collect();
        Self { px }
    }

    /// Fills pixels whose centres lie inside [x0, x1) x [y0, y1).
    fn fill_rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, v: f32) {
        let cols = pixel_span(x0, x1, WIDTH);
        for y in pixel_span(y0, y1, HEIGHT) {
            self.px[y * WIDTH + cols.start..y * WIDTH + cols.end].fill(v);
        }
    }

    fn fill_ellipse(&mut self, cx: f64, cy: f64, rx: f64, ry: f64, v: f32) {
        for y in pixel_span(cy - ry, cy + ry, HEIGHT) {
            for x in pixel_span(cx - rx, cx + rx, WIDTH) {
                let (dx, dy) = ((x as f64 + 0.5 - cx) / rx, (y as f64 + 0.5 - cy) / ry);
                if dx * dx + dy * dy <= 1.0 {
                    self.px[y * WIDTH + x] = v;
                }
            }
        }
    }

    /// A segment `half` pixels either side of its axis, skipping `keepout`.
    #[allow(clippy::too_many_arguments)]
    fn draw_line(&mut self, ax: f64, ay: f64, bx: f64, by: f64, half: f64, v: f32, keepout: Rect) {
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = (dx * dx + dy * dy).max(1e-9);
        let ys = pixel_span(ay.min(by) - half, ay.max(by) + half, HEIGHT);
        let xs = pixel_span(ax.min(bx) - half, ax.max(bx) + half, WIDTH);
        for y in ys {
            for x in xs.clone() {
                if (keepout.x..keepout.right()).contains(&x)
                    && (keepout.y..keepout.bottom()).contains(&y)
                {
                    continue;
                }
                let (px, py) = (x as f64 + 0.5 - ax, y as f64 + 0.5 - ay);
                let t = ((px * dx + py * dy) / len2).clamp(0.0, 1.0);
                let (ex, ey) = (px - t * dx, py - t * dy);
                if ex * ex + ey * ey <= half * half {
                    self.px[y * WIDTH + x] = v;
                }
            }
        }
    }

    /// Draws `text` in the plate font with its top-left at (x, y), each glyph
    /// cell `scale` pixels square. Each pixel is blended by the exact area
    /// the inked cells cover, so edges at fractional positions come out
    /// anti-aliased the way a camera would see them.
    fn draw_text(&mut self, text: &str, x: f64, y: f64, scale: f64, ink: f32) {
        let pitch = (GLYPH_WIDTH as f64 + GAP_CELLS) * scale;
        for (i, ch) in text.chars().enumerate() {
            let Some(glyph) = font::glyph(ch) else {
                continue;
            };
            let gx = x + i as f64 * pitch;
            let cols = pixel_cover(gx, gx + GLYPH_WIDTH as f64 * scale, WIDTH);
            let rows = pixel_cover(y, y + GLYPH_HEIGHT as f64 * scale, HEIGHT);
            // Accumulate each inked cell's overlap with the pixels it
            // touches, then blend once per pixel.
            let mut cover = vec![0.0f64; cols.len() * rows.len()];
            for cy in 0..GLYPH_HEIGHT {
                let top = y + cy as f64 * scale;
                for cx in (0..GLYPH_WIDTH).filter(|&cx| glyph.ink(cx, cy)) {
                    let left = gx + cx as f64 * scale;
                    for py in pixel_cover(top, top + scale, HEIGHT) {
                        let oy = overlap(py as f64, top, scale);
                        for px in pixel_cover(left, left + scale, WIDTH) {
                            let k = (py - rows.start) * cols.len() + (px - cols.start);
                            cover[k] += oy * overlap(px as f64, left, scale);
                        }
                    }
                }
            }
            for (k, c) in cover.iter().enumerate() {
                let (py, px) = (rows.start + k / cols.len(), cols.start + k % cols.len());
                let c = c.min(1.0) as f32;
                let p = &mut self.px[py * WIDTH + px];
                *p = *p * (1.0 - c) + ink * c;
            }
        }
    }

    /// Uneven lighting: brightness scales linearly across the frame in a
    /// random direction, by up to ±15 % at the edges.
    fn apply_gradient(&mut self, rng: &mut SplitMix64) {
        let angle = rng.range(0.0, std::f64::consts::TAU);
        let strength = rng.range(0.05, 0.15);
        let (c, s) = (angle.cos(), angle.sin());
        let (cx, cy) = (WIDTH as f64 / 2.0, HEIGHT as f64 / 2.0);
        for (i, p) in self.px.iter_mut().enumerate() {
            let (x, y) = ((i % WIDTH) as f64 - cx, (i / WIDTH) as f64 - cy);
            *p *= (1.0 + strength * (x * c + y * s) / cx) as f32;
        }
    }

    fn add_noise(&mut self, rng: &mut SplitMix64) {
        let sigma = rng.range(3.0, 8.0);
        for p in &mut self.px {
            *p += (sigma * rng.normal()) as f32;
        }
    }

    fn quantize(self) -> GrayImage {
        let pixels = self
            .px
            .iter()
            .map(|&v| v.round().clamp(0.0, 255.0) as u8)
            .collect();
        GrayImage::from_pixels(WIDTH, HEIGHT, pixels).expect("canvas is WIDTH x HEIGHT")
    }
}

/// Smooth noise in [0, 1]: random values on a grid `step` pixels apart,
/// blended with a smoothstep so no grid lines show.
fn value_noise(rng: &mut SplitMix64, step: usize) -> Vec<f32> {
    let gw = WIDTH / step + 2;
    let gh = HEIGHT / step + 2;
    let grid: Vec<f32> = (0..gw * gh).map(|_| rng.unit() as f32).collect();
    let smooth = |t: f32| t * t * (3.0 - 2.0 * t);
    // Horizontal weights are the same for every row.
    let xs: Vec<(usize, f32)> = (0..WIDTH)
        .map(|x| (x / step, smooth((x % step) as f32 / step as f32)))
        .collect();
    let mut out = Vec::with_capacity(WIDTH * HEIGHT);
    let mut column = vec![0.0f32; gw];
    for y in 0..HEIGHT {
        // Interpolate down each grid column first, then along the row.
        let (gy, ty) = (y / step, smooth((y % step) as f32 / step as f32));
        for (i, c) in column.iter_mut().enumerate() {
            let (a, b) = (grid[gy * gw + i], grid[(gy + 1) * gw + i]);
            *c = a + (b - a) * ty;
        }
        out.extend(
            xs.iter()
                .map(|&(gx, tx)| column[gx] + (column[gx + 1] - column[gx]) * tx),
        );
    }
    out
}

/// Pixels (clamped to 0..limit) whose centres lie in [a, b).
fn pixel_span(a: f64, b: f64, limit: usize) -> std::ops::Range<usize> {
    let lo = (a - 0.5).ceil().clamp(0.0, limit as f64) as usize;
    let hi = (b - 0.5).ceil().clamp(0.0, limit as f64) as usize;
    lo..hi.max(lo)
}

/// Pixels (clamped to 0..limit) that [a, b) touches at all.
fn pixel_cover(a: f64, b: f64, limit: usize) -> std::ops::Range<usize> {
    let lo = a.floor().clamp(0.0, limit as f64) as usize;
    let hi = b.ceil().clamp(0.0, limit as f64) as usize;
    lo..hi.max(lo)
}

/// Length of the overlap between pixel [p, p + 1) and [start, start + len).
fn overlap(p: f64, start: f64, len: f64) -> f64 {
    ((p + 1.0).min(start + len) - p.max(start)).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_plates_use_the_charset() {
        for seed in 0..100 {
            let p = random_plate(seed);
            assert_eq!(p.len(), PLATE_LEN);
            assert!(p.chars().all(|c| font::CHARSET.contains(c)), "{p}");
        }
        assert_ne!(random_plate(1), random_plate(2));
    }

    #[test]
    fn scenes_are_reproducible_and_vary() {
        let a = scene("AB12CDE", 9);
        assert_eq!(a.image, plate_image("AB12CDE", 9));
        assert_eq!((a.image.width, a.image.height), (WIDTH, HEIGHT));
        let b = scene("AB12CDE", 10);
        assert_ne!(a.plate_bbox, b.plate_bbox);
        assert!((MIN_SCALE..=MAX_SCALE).contains(&a.glyph_scale));
    }

    #[test]
    fn plate_is_inside_the_frame_and_bright() {
        for seed in 0..20 {
            let s = scene(&random_plate(seed), seed);
            let r = s.plate_bbox;
            assert!(r.x >= 8 && r.right() <= WIDTH - 8, "{r:?}");
            assert!(r.y >= 8 && r.bottom() <= HEIGHT - 8, "{r:?}");
            // Between frame and text, two glyph cells in from the left.
            let margin = (2.0 * s.glyph_scale) as usize + 1;
            let v = s.image.get(r.x + margin, r.y + r.height / 2);
            assert!(v > 140, "plate face {v} at seed {seed}");
        }
    }

    #[test]
    fn odd_plate_text_does_not_panic() {
        for text in [
            "",
            "A",
            "a?!",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCDEFGH",
        ] {
            let s = scene(text, 3);
            assert_eq!(s.image.pixels.len(), WIDTH * HEIGHT);
        }
    }

    #[test]
    fn anti_aliasing_covers_exact_area() {
        assert_eq!(overlap(3.0, 3.25, 2.0), 0.75);
        assert_eq!(overlap(4.0, 3.25, 2.0), 1.0);
        assert_eq!(overlap(5.0, 3.25, 2.0), 0.25);
        assert_eq!(overlap(6.0, 3.25, 2.0), 0.0);
    }
}
