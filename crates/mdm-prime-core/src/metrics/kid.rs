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
    kernel_of_dot(dot, x.len())
}

/// The unbiased MMD² of two equal-sized sets of rows (each `m × d`, row-major).
pub fn mmd2_unbiased(x: &[&[f32]], y: &[&[f32]]) -> f64 {
    let gram = |a: &[&[f32]], b: &[&[f32]]| -> Vec<f64> {
        a.iter()
            .flat_map(|p| b.iter().map(|q| kernel(p, q)))
            .collect()
    };
    mmd2_from_kernels(&gram(x, x), &gram(y, y), &gram(x, y), x.len())
}

/// The unbiased MMD² from the kernel matrices of one subset pair (`m × m` each, row-major):
/// `k(xᵢ,xⱼ)`, `k(yᵢ,yⱼ)`, `k(xᵢ,yⱼ)`. The diagonals of the first two are left out.
pub fn mmd2_from_kernels(kxx: &[f64], kyy: &[f64], kxy: &[f64], m: usize) -> f64 {
    let off_diagonal = |k: &[f64]| -> f64 {
        let total: f64 = k.iter().sum();
        total - (0..m).map(|i| k[i * m + i]).sum::<f64>()
    };
    let mf = m as f64;
    (off_diagonal(kxx) + off_diagonal(kyy)) / (mf * (mf - 1.0))
        - 2.0 * kxy.iter().sum::<f64>() / (mf * mf)
}

/// The cubic polynomial kernel `(g / d + 1)³` of a dot product `g` of two `d`-wide rows.
pub fn kernel_of_dot(g: f64, d: usize) -> f64 {
    (g / d as f64 + 1.0).powi(3)
}

/// KID of features `x` (`nx × d`) against `y` (`ny × d`): `subsets` draws of `subset_size`
/// rows from each (without replacement within a draw; the size is cut to the smaller set),
/// seeded. The kernels are computed here, in f64 (the reference for [`kid_with`]).
pub fn kid(
    x: &[f32],
    y: &[f32],
    d: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
) -> Result<Kid> {
    row_counts(x, y, d)?;
    let xs: Vec<&[f32]> = x.chunks_exact(d).collect();
    let ys: Vec<&[f32]> = y.chunks_exact(d).collect();
    kid_with(xs.len(), ys.len(), subsets, subset_size, seed, |ix, iy| {
        let a: Vec<&[f32]> = ix.iter().map(|&i| xs[i]).collect();
        let b: Vec<&[f32]> = iy.iter().map(|&i| ys[i]).collect();
        Ok(mmd2_unbiased(&a, &b))
    })
}

/// The row counts of `x` and `y` as sets of `d`-wide rows; an error when they are not.
pub fn row_counts(x: &[f32], y: &[f32], d: usize) -> Result<(usize, usize)> {
    if d == 0 || !x.len().is_multiple_of(d) || !y.len().is_multiple_of(d) {
        return Err(Error::Value(format!(
            "KID: {} and {} values are not rows of {d}",
            x.len(),
            y.len()
        )));
    }
    Ok((x.len() / d, y.len() / d))
}

/// KID with the per-subset MMD² computed by `mmd2(rows of x, rows of y)` (e.g. with kernel
/// matrices from a GEMM and [`mmd2_from_kernels`]): the same subsets as [`kid`] for the same
/// seed.
pub fn kid_with(
    nx: usize,
    ny: usize,
    subsets: usize,
    subset_size: usize,
    seed: u64,
    mut mmd2: impl FnMut(&[usize], &[usize]) -> Result<f64>,
) -> Result<Kid> {
    let m = subset_size.min(nx).min(ny);
    if m < 2 || subsets == 0 {
        return Err(Error::Value(format!(
            "KID needs subsets of at least 2 images from each set (got {nx} and {ny} images, \
             {subsets} subsets)"
        )));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let values = (0..subsets)
        .map(|_| {
            let ix = sample(&mut rng, nx, m).into_vec();
            let iy = sample(&mut rng, ny, m).into_vec();
            mmd2(&ix, &iy)
        })
        .collect::<Result<Vec<f64>>>()?;
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
