//! Global thresholding by Otsu's method.

/// Counts of each grey level.
pub fn histogram<'a>(pixels: impl IntoIterator<Item = &'a u8>) -> [u32; 256] {
    let mut hist = [0u32; 256];
    for &p in pixels {
        hist[p as usize] += 1;
    }
    hist
}

/// Otsu's threshold: the level `t` that best splits the histogram into a
/// dark class (`<= t`) and a bright class (`> t`), by maximising the
/// between-class variance. `None` when fewer than two levels occur.
pub fn otsu(hist: &[u32; 256]) -> Option<u8> {
    let total: u64 = hist.iter().map(|&c| u64::from(c)).sum();
    let sum_all: u64 = hist
        .iter()
        .enumerate()
        .map(|(v, &c)| v as u64 * u64::from(c))
        .sum();
    let (mut n_dark, mut sum_dark) = (0u64, 0u64);
    let mut best: Option<(f64, u8)> = None;
    // The last level cannot split: everything would be dark.
    for (t, &count) in hist.iter().enumerate().take(255) {
        n_dark += u64::from(count);
        sum_dark += t as u64 * u64::from(count);
        let n_bright = total - n_dark;
        if n_dark == 0 || n_bright == 0 {
            continue;
        }
        let mean_dark = sum_dark as f64 / n_dark as f64;
        let mean_bright = (sum_all - sum_dark) as f64 / n_bright as f64;
        let d = mean_bright - mean_dark;
        let between = n_dark as f64 * n_bright as f64 * d * d;
        // Strictly greater keeps the lowest of equally good levels, i.e.
        // the one right after the dark class ends.
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, t as u8));
        }
    }
    best.map(|(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_two_clusters() {
        let pixels: Vec<u8> = [20u8, 22, 25, 30, 200, 210, 220, 205, 215].to_vec();
        let t = otsu(&histogram(&pixels)).unwrap();
        assert!((30..200).contains(&t), "{t}");
    }

    #[test]
    fn uniform_images_have_no_threshold() {
        assert_eq!(otsu(&histogram(&[7u8; 10])), None);
        assert_eq!(otsu(&[0; 256]), None);
        assert_eq!(otsu(&histogram(&[0u8, 255])), Some(0));
    }
}
