//! Connected components of the pixels at or above a threshold.
//!
//! Works on horizontal runs instead of single pixels: a row of a plate is a
//! handful of runs, so labelling a whole frame costs little more than one
//! pass of comparisons, and the detector can afford to do it at many
//! thresholds.

use super::image::{GrayImage, Rect};

/// A 4-connected region of pixels `>= threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub bbox: Rect,
    /// Pixels in the region (at most `bbox.area()`).
    pub area: usize,
}

/// Regions of pixels `>= threshold` holding at least `min_area` pixels.
pub fn bright_components(img: &GrayImage, threshold: u8, min_area: usize) -> Vec<Component> {
    struct Run {
        y: usize,
        start: usize,
        end: usize,
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut parent: Vec<usize> = Vec::new();
    let mut prev_row = 0..0; // indices into `runs` of the previous row

    for y in 0..img.height {
        let row = img.row(y);
        let first = runs.len();
        let mut x = 0;
        while x < row.len() {
            if row[x] < threshold {
                x += 1;
                continue;
            }
            let start = x;
            while x < row.len() && row[x] >= threshold {
                x += 1;
            }
            runs.push(Run { y, start, end: x });
            parent.push(runs.len() - 1);
        }
        // Both rows' runs are sorted by x, so one merge-like sweep finds
        // every pair of runs sharing a column.
        let (mut i, mut j) = (prev_row.start, first);
        while i < prev_row.end && j < runs.len() {
            if runs[i].start < runs[j].end && runs[j].start < runs[i].end {
                union(&mut parent, i, j);
            }
            if runs[i].end < runs[j].end {
                i += 1;
            } else {
                j += 1;
            }
        }
        prev_row = first..runs.len();
    }

    // Accumulate each root's extent (columns x0..x1, rows y0..y1) and area.
    #[derive(Clone, Copy)]
    struct Extent {
        x0: usize,
        y0: usize,
        x1: usize,
        y1: usize,
        area: usize,
    }
    let mut extents: Vec<Option<Extent>> = vec![None; runs.len()];
    for (k, run) in runs.iter().enumerate() {
        let root = find(&mut parent, k);
        let e = extents[root].get_or_insert(Extent {
            x0: run.start,
            y0: run.y,
            x1: run.end,
            y1: run.y + 1,
            area: 0,
        });
        e.x0 = e.x0.min(run.start);
        e.y0 = e.y0.min(run.y);
        e.x1 = e.x1.max(run.end);
        e.y1 = e.y1.max(run.y + 1);
        e.area += run.end - run.start;
    }
    extents
        .into_iter()
        .flatten()
        .filter(|e| e.area >= min_area)
        .map(|e| Component {
            bbox: Rect {
                x: e.x0,
                y: e.y0,
                width: e.x1 - e.x0,
                height: e.y1 - e.y0,
            },
            area: e.area,
        })
        .collect()
}

fn find(parent: &mut [usize], mut k: usize) -> usize {
    while parent[k] != k {
        // Path halving keeps the trees shallow without recursion.
        parent[k] = parent[parent[k]];
        k = parent[k];
    }
    k
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        // Attach to the smaller index so roots stay in scan order.
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi] = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(rows: &[&str]) -> GrayImage {
        let pixels = rows
            .iter()
            .flat_map(|r| r.bytes().map(|b| if b == b'#' { 255 } else { 0 }))
            .collect();
        GrayImage::from_pixels(rows[0].len(), rows.len(), pixels).unwrap()
    }

    fn sorted(mut c: Vec<Component>) -> Vec<(usize, usize, usize, usize, usize)> {
        c.sort_by_key(|c| (c.bbox.y, c.bbox.x));
        c.iter()
            .map(|c| (c.bbox.x, c.bbox.y, c.bbox.width, c.bbox.height, c.area))
            .collect()
    }

    #[test]
    fn finds_separate_regions() {
        let img = image(&[
            "##..#", //
            "##..#", ".....", "###.#",
        ]);
        assert_eq!(
            sorted(bright_components(&img, 128, 1)),
            vec![
                (0, 0, 2, 2, 4),
                (4, 0, 1, 2, 2),
                (0, 3, 3, 1, 3),
                (4, 3, 1, 1, 1)
            ]
        );
        assert_eq!(bright_components(&img, 128, 3).len(), 2);
    }

    #[test]
    fn u_shape_merges_and_diagonals_do_not() {
        // The two arms are only joined through the bottom row, after both
        // have been given separate labels.
        let img = image(&[
            "#.#.#", //
            "#.#..", "###.#",
        ]);
        assert_eq!(
            sorted(bright_components(&img, 1, 1)),
            vec![(0, 0, 3, 3, 7), (4, 0, 1, 1, 1), (4, 2, 1, 1, 1)]
        );
        let diag = image(&["#.", ".#"]);
        assert_eq!(bright_components(&diag, 1, 1).len(), 2);
    }

    #[test]
    fn blank_and_empty_images() {
        assert!(bright_components(&GrayImage::new(4, 4, 0), 1, 1).is_empty());
        assert!(bright_components(&GrayImage::new(0, 0, 0), 1, 1).is_empty());
        let full = bright_components(&GrayImage::new(4, 3, 9), 0, 1);
        assert_eq!(sorted(full), vec![(0, 0, 4, 3, 12)]);
    }
}
