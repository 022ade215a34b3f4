//! Reading the characters inside a located plate: segmentation by column
//! projection, then template matching against the plate font.
//!
//! Characters can be as small as 2 pixels per glyph cell and sit at
//! fractional positions, so a cell grid placed to the nearest pixel would
//! be off by a quarter cell, enough to confuse similar glyphs. The reader
//! therefore works on "ink coverage" (0 = plate face, 1 = full ink) and
//! locates character edges to a fraction of a pixel from the partially
//! covered pixels along them. Each character is then sampled on the cell
//! grid of every glyph of its width and scored by normalised
//! cross-correlation.

use super::detect::DetectError;
use super::font::{Glyph, GLYPHS, GLYPH_HEIGHT};
use super::image::{GrayImage, Rect};
use super::threshold::{histogram, otsu};

/// Ink and face must differ by this many grey levels to be text at all.
const MIN_CONTRAST: f32 = 40.0;
/// Column runs with fewer ink pixels are specks, not characters.
const MIN_CHAR_PIXELS: usize = 4;
/// Smallest text line, in pixels, with at least one pixel per glyph row.
const MIN_TEXT_HEIGHT: usize = GLYPH_HEIGHT;
/// Coverage at which a pixel counts as ink when segmenting. Well below
/// one half: a column straddling two glyph cells that are inked in
/// different rows (the diagonal of N) is only half covered in each, and
/// must not read as the gap between two characters.
const INK_LEVEL: f32 = 0.3;
/// A sample locates an edge only where the pixel on the edge holds this
/// much ink and it or its inner neighbour is (nearly) fully inked.
const EDGE_MIN_ON: f32 = 0.2;
const EDGE_MIN_FULL: f32 = 0.6;
/// Where in the dark class the ink level is read (see [`Coverage::measure`]).
const INK_QUANTILE: f64 = 0.2;
/// Lowest per-character match score accepted as a reading. Scores are
/// normalised cross-correlations (-1..=1); a correct reading of a clean
/// frame scores about 0.99, the runner-up glyph rarely above 0.87.
pub const MIN_CHAR_SCORE: f32 = 0.6;
/// How far (in glyph cells) a character's measured width may be from a
/// template's before the template is not considered.
const WIDTH_TOLERANCE: f32 = 0.8;
/// Fraction of each grid cell ignored at every side when sampling, so the
/// anti-aliased edges between cells do not blur the comparison.
const CELL_INSET: f32 = 0.15;

/// Characters read from a plate region.
pub struct Reading {
    pub text: String,
    /// Mean of the characters' match scores (see [`MIN_CHAR_SCORE`]).
    pub confidence: f32,
    /// Each character's box in image coordinates.
    pub chars: Vec<Rect>,
}

/// Reads exactly `expected` dark characters on the bright plate face in
/// `region` of `img`.
pub fn read_text(img: &GrayImage, region: Rect, expected: usize) -> Result<Reading, DetectError> {
    let no_text = || DetectError::WrongCharCount { found: 0, expected };
    // The detector only passes regions it found in `img`; clip anyway so
    // that no caller can make this index outside the image.
    let right = region.x.saturating_add(region.width).min(img.width);
    let bottom = region.y.saturating_add(region.height).min(img.height);
    if !img.is_valid() || region.x >= right || region.y >= bottom {
        return Err(no_text());
    }
    let region = Rect {
        x: region.x,
        y: region.y,
        width: right - region.x,
        height: bottom - region.y,
    };
    let cov = Coverage::measure(img, region).ok_or_else(no_text)?;
    let (w, h) = (cov.width, cov.height);

    // Column projection of the ink mask; characters are the runs of
    // columns holding ink, separated by blank columns.
    let column_ink: Vec<usize> = (0..w)
        .map(|x| (0..h).filter(|&y| cov.get(x, y) >= INK_LEVEL).count())
        .collect();
    let mut spans: Vec<(usize, usize)> = Vec::new(); // inclusive column ranges
    let mut x = 0;
    while x < w {
        if column_ink[x] == 0 {
            x += 1;
            continue;
        }
        let start = x;
        while x < w && column_ink[x] > 0 {
            x += 1;
        }
        let touches_side = start == 0 || x == w;
        let pixels: usize = column_ink[start..x].iter().sum();
        // Ink touching the sides belongs to a cut-off character or to the
        // plate frame, not to a character inside the plate.
        if !touches_side && pixels >= MIN_CHAR_PIXELS {
            spans.push((start, x - 1));
        }
    }
    if spans.len() != expected {
        return Err(DetectError::WrongCharCount {
            found: spans.len(),
            expected,
        });
    }

    // Every glyph spans the full line height, so the line's rows are where
    // any character column holds ink.
    let inked_row = |y: usize| {
        spans
            .iter()
            .any(|&(a, b)| (a..=b).any(|x| cov.get(x, y) >= INK_LEVEL))
    };
    let (Some(r0), Some(r1)) = (
        (0..h).find(|&y| inked_row(y)),
        (0..h).rev().find(|&y| inked_row(y)),
    ) else {
        return Err(no_text());
    };
    if r0 == 0 || r1 == h - 1 {
        return Err(DetectError::TextClipped);
    }
    if r1 + 1 - r0 < MIN_TEXT_HEIGHT {
        return Err(DetectError::TextTooSmall {
            height: r1 + 1 - r0,
        });
    }

    let columns = || spans.iter().flat_map(|&(a, b)| a..=b);
    let by_row = |along: isize, across: isize| cov.get_signed(along, across);
    let by_column = |along: isize, across: isize| cov.get_signed(across, along);
    let top = cov.edge(r0, 1, columns(), by_row);
    let bottom = cov.edge(r1, -1, columns(), by_row);
    let cell = (bottom - top) / GLYPH_HEIGHT as f32;
    if cell < 1.0 {
        return Err(DetectError::TextTooSmall {
            height: r1 + 1 - r0,
        });
    }

    let mut text = String::with_capacity(expected);
    let mut total = 0.0;
    let mut chars = Vec::with_capacity(expected);
    for (index, &(c0, c1)) in spans.iter().enumerate() {
        let left = cov.edge(c0, 1, r0..=r1, by_column);
        let right = cov.edge(c1, -1, r0..=r1, by_column);
        let (glyph, score) = best_match(&cov, left, right, top, bottom, cell);
        match glyph {
            Some(g) if score >= MIN_CHAR_SCORE => text.push(g.ch),
            _ => return Err(DetectError::UnrecognisedCharacter { index, score }),
        }
        total += score;
        chars.push(Rect {
            x: region.x + c0,
            y: region.y + r0,
            width: c1 + 1 - c0,
            height: r1 + 1 - r0,
        });
    }
    Ok(Reading {
        text,
        confidence: total / expected as f32,
        chars,
    })
}

/// Compares the character between `left..right` and `top..bottom` (sub-pixel
/// coordinates inside the region) with every glyph of a similar width.
/// The character is sampled on each candidate glyph's cell grid, so the
/// comparison is independent of how large the plate is.
fn best_match(
    cov: &Coverage,
    left: f32,
    right: f32,
    top: f32,
    bottom: f32,
    cell: f32,
) -> (Option<&'static Glyph>, f32) {
    let width_cells = (right - left) / cell;
    let mut best: (Option<&'static Glyph>, f32) = (None, -1.0);
    let mut sampled: Vec<(usize, Vec<f32>)> = Vec::new(); // per glyph width
    for glyph in &GLYPHS {
        let (first, last) = glyph.ink_columns();
        let cols = last + 1 - first;
        if (width_cells - cols as f32).abs() > WIDTH_TOLERANCE {
            continue;
        }
        let grid = match sampled.iter().position(|(c, _)| *c == cols) {
            Some(i) => &sampled[i].1,
            None => {
                let grid = sample_grid(cov, left, right, top, bottom, cols);
                sampled.push((cols, grid));
                &sampled.last().expect("just pushed").1
            }
        };
        let score = correlation(grid, glyph, first, cols);
        if best.0.is_none() || score > best.1 {
            best = (Some(glyph), score);
        }
    }
    best
}

/// Normalised cross-correlation between sampled cell means and a glyph's
/// cells (columns `first..first + cols`), in -1..=1. Being invariant to
/// scale and offset, it does not care how well the ink level was estimated.
fn correlation(grid: &[f32], glyph: &Glyph, first: usize, cols: usize) -> f32 {
    let n = grid.len() as f32;
    let bits = |i: usize| {
        if glyph.ink(first + i % cols, i / cols) {
            1.0
        } else {
            0.0
        }
    };
    let mean_g = grid.iter().sum::<f32>() / n;
    let mean_t = (0..grid.len()).map(bits).sum::<f32>() / n;
    let (mut cross, mut var_g, mut var_t) = (0.0, 0.0, 0.0);
    for (i, &g) in grid.iter().enumerate() {
        let (dg, dt) = (g - mean_g, bits(i) - mean_t);
        cross += dg * dt;
        var_g += dg * dg;
        var_t += dt * dt;
    }
    let norm = (var_g * var_t).sqrt();
    if norm > 0.0 {
        cross / norm
    } else {
        0.0
    }
}

/// Mean coverage in each cell of a `cols` x 7 grid laid over the box.
fn sample_grid(
    cov: &Coverage,
    left: f32,
    right: f32,
    top: f32,
    bottom: f32,
    cols: usize,
) -> Vec<f32> {
    let cw = (right - left) / cols as f32;
    let ch = (bottom - top) / GLYPH_HEIGHT as f32;
    let mut grid = Vec::with_capacity(cols * GLYPH_HEIGHT);
    for gy in 0..GLYPH_HEIGHT {
        let y0 = top + (gy as f32 + CELL_INSET) * ch;
        let y1 = top + (gy as f32 + 1.0 - CELL_INSET) * ch;
        for gx in 0..cols {
            let x0 = left + (gx as f32 + CELL_INSET) * cw;
            let x1 = left + (gx as f32 + 1.0 - CELL_INSET) * cw;
            grid.push(cov.box_mean(x0, x1, y0, y1));
        }
    }
    grid
}

/// Per-pixel ink coverage of a region: 0 at the plate face's grey level,
/// 1 at the ink's, linear in between. Not clamped, so noise averages out
/// instead of piling up at the ends.
struct Coverage {
    width: usize,
    height: usize,
    values: Vec<f32>,
}

impl Coverage {
    /// `None` when the region does not hold two clearly different levels.
    fn measure(img: &GrayImage, region: Rect) -> Option<Self> {
        let pixels: Vec<u8> = (region.y..region.bottom())
            .flat_map(|y| img.row(y)[region.x..region.right()].iter().copied())
            .collect();
        let hist = histogram(&pixels);
        let t = otsu(&hist)?;
        // Quantiles, not means, which anti-aliased edge pixels would pull
        // toward the middle. Thin strokes have few fully inked pixels, so
        // the ink level is taken from the darker part of the dark class.
        let ink = quantile(&hist[..=t as usize], 0, INK_QUANTILE)?;
        let face = quantile(&hist[t as usize + 1..], t as usize + 1, 0.5)?;
        let contrast = face - ink;
        if contrast < MIN_CONTRAST {
            return None;
        }
        let values = pixels
            .iter()
            .map(|&p| (face - f32::from(p)) / contrast)
            .collect();
        Some(Self {
            width: region.width,
            height: region.height,
            values,
        })
    }

    fn get(&self, x: usize, y: usize) -> f32 {
        self.values[y * self.width + x]
    }

    /// Coverage at signed coordinates; outside the region counts as face.
    fn get_signed(&self, x: isize, y: isize) -> f32 {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            0.0
        } else {
            self.get(x as usize, y as usize)
        }
    }

    /// Sub-pixel position of the edge where ink begins at line `at` (the
    /// first line holding ink) and continues in direction `dir` (+1: ink
    /// lies at higher coordinates, -1: lower). `get(along, across)` reads
    /// coverage, with `across` the coordinate the edge is measured on and
    /// `along` running over the samples. Returns the coordinate of the
    /// boundary between face and ink.
    ///
    /// The edge lies either in line `at` itself, whose next line inward is
    /// then fully inked, or in the line outward of it, with `at` fully
    /// inked. Dividing by the fully inked pixel's coverage makes the result
    /// independent of how well the ink level was estimated; that estimate
    /// is poor when strokes are only two pixels wide, since few pixels are
    /// then fully covered. Averaging over samples cancels most noise.
    fn edge(
        &self,
        at: usize,
        dir: isize,
        along: impl Iterator<Item = usize>,
        get: impl Fn(isize, isize) -> f32,
    ) -> f32 {
        let a = at as isize;
        let (mut sum, mut n) = (0.0, 0);
        for s in along {
            let s = s as isize;
            let (outside, on, inside) = (get(s, a - dir), get(s, a), get(s, a + dir));
            let full = on.max(inside);
            // Only where the outermost cell column is inked does this
            // sample see the edge at all.
            if on >= EDGE_MIN_ON && full >= EDGE_MIN_FULL {
                // Depth of the face/ink boundary into line `at`, from its
                // outer side: inked share of `at` short of full, minus the
                // overhang into the outward line.
                sum += (1.0 - on / full) - (outside / full).min(1.0);
                n += 1;
            }
        }
        let depth = if n > 0 { sum / n as f32 } else { 0.0 };
        // Line `at` spans [at, at + 1); its outer side is `at` for a
        // rising edge and `at + 1` for a falling one.
        if dir > 0 {
            at as f32 + depth
        } else {
            at as f32 + 1.0 - depth
        }
    }

    /// Mean coverage over the rectangle [x0, x1) x [y0, y1), weighting
    /// partly covered pixels by the overlapping area.
    fn box_mean(&self, x0: f32, x1: f32, y0: f32, y1: f32) -> f32 {
        let area = (x1 - x0) * (y1 - y0);
        if area <= 0.0 {
            return 0.0;
        }
        let mut sum = 0.0;
        for py in y0.floor() as isize..y1.ceil() as isize {
            let wy = (y1.min(py as f32 + 1.0) - y0.max(py as f32)).max(0.0);
            for px in x0.floor() as isize..x1.ceil() as isize {
                let wx = (x1.min(px as f32 + 1.0) - x0.max(px as f32)).max(0.0);
                sum += wx * wy * self.get_signed(px, py);
            }
        }
        sum / area
    }
}

/// The grey level below which fraction `q` of a histogram slice lies (its
/// first bin is level `offset`); `None` for an empty slice.
fn quantile(bins: &[u32], offset: usize, q: f64) -> Option<f32> {
    let total: u64 = bins.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for (i, &c) in bins.iter().enumerate() {
        seen += u64::from(c);
        if seen as f64 >= q * total as f64 {
            return Some((offset + i) as f32);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_histogram_slices() {
        assert_eq!(quantile(&[0, 3, 1, 1], 10, 0.5), Some(11.0));
        assert_eq!(quantile(&[0, 3, 1, 1], 10, 0.9), Some(13.0));
        assert_eq!(quantile(&[0, 0], 0, 0.5), None);
    }

    #[test]
    fn edges_are_found_to_a_fraction_of_a_pixel() {
        // A 6-pixel-wide dark bar from x = 3.3 to 8.7 (exact coverage).
        let mut img = GrayImage::new(12, 4, 200);
        for y in 0..4 {
            for (x, c) in [(3, 0.7), (4, 1.0), (5, 1.0), (6, 1.0), (7, 1.0), (8, 0.7)] {
                img.set(x, y, (200.0 - 180.0 * c) as u8);
            }
        }
        // The face level is 200 and the ink level 20.
        let cov = Coverage::measure(
            &img,
            Rect {
                x: 0,
                y: 0,
                width: 12,
                height: 4,
            },
        )
        .unwrap();
        let get = |along: isize, across: isize| cov.get_signed(across, along);
        let left = cov.edge(3, 1, 0..4, get);
        let right = cov.edge(8, -1, 0..4, get);
        assert!((left - 3.3).abs() < 0.02, "{left}");
        assert!((right - 8.7).abs() < 0.02, "{right}");
        // [4, 8) lies wholly on the bar, [0, 3) wholly off it.
        assert!((cov.box_mean(4.0, 8.0, 0.0, 4.0) - 1.0).abs() < 1e-6);
        assert!(cov.box_mean(0.0, 3.0, 0.0, 4.0) < 1e-6);
    }

    #[test]
    fn flat_region_is_no_text() {
        let img = GrayImage::new(50, 20, 180);
        let region = Rect {
            x: 0,
            y: 0,
            width: 50,
            height: 20,
        };
        assert_eq!(
            read_text(&img, region, 7).err(),
            Some(DetectError::WrongCharCount {
                found: 0,
                expected: 7
            })
        );
    }
}
