//! Kernel Inception Distance: the unbiased estimate of the squared maximum mean discrepancy
//! (MMD²) between two feature sets under the cubic polynomial kernel
//! `k(x, y) = (xᵀy / d + 1)³`, averaged over random subsets of equal size (Bińkowski et al.
//! 2018; the estimator of clean-fid and torch-fidelity):
//!
//! `MMD²_u = [Σ_{i≠j} k(xᵢ,xⱼ) + Σ_{i≠j} k(yᵢ,yⱼ)] / (m(m−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ) / m²`.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::index::sample;

use crate::{Error, Result};

/// KID over subsets: the mean of the per-subset MMD², their standard deviation, and the
/// standard error of the mean (`std / √subsets`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    pub mean: f64,
    pub std: f64,
    pub stderr: f64,
    pub subsets: usize,
    pub subset_size: usize,
}

fn kernel(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(&a, &b)| a as f64 * b as f64).sum();
    (dot / x.len() as f64 + 1.0).powi(3)
}

/// The unbiased MMD² of two equal-sized sets of rows (each `m × d`, row-major).
pub fn mmd2_unbiased(x: &[&[f32]], y: &[&[f32]]) -> f64 {
    let m = x.len() as f64;
    // Σ_{i≠j} k(sᵢ, sⱼ) = 2 Σ_{i<j} (the kernel is symmetric).
    let within = |s: &[&[f32]]| {
        let mut total = 0.0;
        for i in 0..s.len() {
            for j in i + 1..s.len() {
                total += kernel(s[i], s[j]);
            }
        }
        2.0 * total
    };
    let cross: f64 = x.iter().flat_map(|a| y.iter().map(|b| kernel(a, b))).sum();
    (within(x) + within(y)) / (m * (m - 1.0)) - 2.0 * cross / (m * m)
}

/// KID of features `x` (`nx × d`) against `y` (`ny × d`): `subsets` draws of `subset_size`
/// rows from each (without replacement within a draw; the size is cut to the smaller set),
/// seeded.
pub fn kid(
    x: &[f32],
    y: &[f32],
    d: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<Kid> {
    if d == 0 || !x.len().is_multiple_of(d) || !y.len().is_multiple_of(d) {
        return Err(Error::Value(format!(
            "KID: {} and {} values are not rows of {d}",
            x.len(),
            y.len()
        )));
    }
    let xs: Vec<&[f32]> = x.chunks_exact(d).collect();
    let ys: Vec<&[f32]> = y.chunks_exact(d).collect();
    let m = subset_size.min(xs.len()).min(ys.len());
    if m < 2 || subsets == 0 {
        return Err(Error::Value(format!(
            "KID needs subsets of at least 2 images from each set (got {} and {} images, \
             {subsets} subsets)",
            xs.len(),
            ys.len()
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    fn pick<'a>(rows: &[&'a [f32]], m: usize, rng: &mut StdRng) -> Vec<&'a [f32]> {
        sample(rng, rows.len(), m)
            .into_iter()
            .map(|i| rows[i])
            .collect()
    }
    let values: Vec<f64> = (0..subsets)
        .map(|_| {
            let (a, b) = (pick(&xs, m, &mut rng), pick(&ys, m, &mut rng));
            mmd2_unbiased(&a, &b)
        })
        .collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = match values.len() {
        1 => 0.0,
        _ => (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    };
    Ok(Kid {
        mean,
        std,
        stderr: std / n.sqrt(),
        subsets,
        subset_size: m,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_mmd() {
        // d = 2, X = {(1,0), (0,1)}, Y = {(1,1), (0,0)}; k = (x·y/2 + 1)³.
        // XX off-diagonal: x₁·x₂ = 0 → 1, twice: 2. YY: y₁·y₂ = 0 → 1, twice: 2.
        // XY: 1.5³, 1, 1.5³, 1 → 8.75. MMD² = 4/2 − 2·8.75/4 = −2.375.
        let x: [&[f32]; 2] = [&[1.0, 0.0], &[0.0, 1.0]];
        let y: [&[f32]; 2] = [&[1.0, 1.0], &[0.0, 0.0]];
        assert!((mmd2_unbiased(&x, &y) + 2.375).abs() < 1e-12);
        // With one subset of all rows, KID is that value.
        let k = kid(&[1.0, 0.0, 0.0, 1.0], &[1.0, 1.0, 0.0, 0.0], 2, 1, 2, 0).unwrap();
        assert!((k.mean + 2.375).abs() < 1e-12 && k.std == 0.0);
    }

    #[test]
    fn same_distribution_is_near_zero_and_shift_is_not() {
        use rand::RngExt;
        let mut rng = StdRng::seed_from_u64(5);
        let mut draw = |shift: f32| -> Vec<f32> {
            (0..400 * 8)
                .map(|_| rng.random_range(-1.0f32..1.0) + shift)
                .collect()
        };
        let (a, b, c) = (draw(0.0), draw(0.0), draw(0.5));
        let same = kid(&a, &b, 8, 20, 100, 1).unwrap();
        let shifted = kid(&a, &c, 8, 20, 100, 1).unwrap();
        assert!(same.mean.abs() < 3.0 * same.stderr + 1e-3, "{same:?}");
        assert!(shifted.mean > 10.0 * shifted.stderr, "{shifted:?}");
        assert!(kid(&a, &b, 8, 0, 100, 1).is_err());
        assert!(kid(&a[..8], &b, 8, 4, 100, 1).is_err());
        assert!(kid(&a[..7], &b, 8, 4, 100, 1).is_err());
    }
}
