//! The Fréchet distance between two Gaussians (FID when the Gaussians are Inception-v3 pool3
//! statistics) and the statistics themselves.
//!
//! `FID = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^{1/2} Σ₂ Σ₁^{1/2})^{1/2}`.
//!
//! The trace term is computed through symmetric matrices only: `Σ₁^{1/2}` from the
//! eigendecomposition of Σ₁ (negative eigenvalues of a numerically indefinite covariance
//! clamped to 0), then the eigenvalues of the symmetric PSD `Σ₁^{1/2} Σ₂ Σ₁^{1/2}` (similar to
//! `Σ₁Σ₂`, so the same trace of the square root). The reference tools take `scipy.linalg.sqrtm`
//! of the non-symmetric product `Σ₁Σ₂` and drop the imaginary part it picks up; both give the
//! same value where that is well conditioned.

use super::linalg::{matmul, sym_apply, sym_eigen, sym_eigenvalues};
use crate::{Error, Result};

/// A Gaussian's mean `[d]` and covariance `[d, d]` (row-major), in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    pub mu: Vec<f64>,
    pub sigma: Vec<f64>,
    /// How many samples the statistics came from (0 when unknown, e.g. read from a file).
    pub count: usize,
}

impl Gaussian {
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Mean and unbiased covariance (divided by N − 1, as `numpy.cov` and pytorch-fid) of `n`
    /// feature rows of width `d`. Fewer than two rows is an error; fewer than `d + 1` gives a
    /// singular covariance ([`Gaussian::full_rank_possible`] says so; FID is still defined).
    pub fn from_features(features: &[f32], n: usize, d: usize) -> Result<Self> {
        if features.len() != n * d {
            return Err(Error::Value(format!(
                "{} feature values are not {n} rows of {d}",
                features.len()
            )));
        }
        if n < 2 {
            return Err(Error::Value(format!(
                "statistics need at least 2 images, got {n}"
            )));
        }
        let mut mu = vec![0.0f64; d];
        for row in features.chunks_exact(d) {
            for (m, &x) in mu.iter_mut().zip(row) {
                *m += x as f64;
            }
        }
        mu.iter_mut().for_each(|m| *m /= n as f64);
        // Centred rows x [n, d]; Σ = xᵀ · x / (n − 1).
        let x: Vec<f64> = features
            .chunks_exact(d)
            .flat_map(|row| row.iter().zip(&mu).map(|(&v, &m)| v as f64 - m))
            .collect();
        let xt = super::linalg::transpose(&x, n, d);
        let mut sigma = matmul(&xt, &x, d, n, d);
        sigma.iter_mut().for_each(|s| *s /= (n - 1) as f64);
        Ok(Gaussian {
            mu,
            sigma,
            count: n,
        })
    }

    /// Whether the sample count can give a full-rank covariance (`count > d`; unknown counts
    /// pass).
    pub fn full_rank_possible(&self) -> bool {
        self.count == 0 || self.count > self.dim()
    }

    fn check(&self, what: &str) -> Result<()> {
        let d = self.dim();
        if self.sigma.len() != d * d {
            return Err(Error::Value(format!(
                "{what}: sigma has {} values, not {d} × {d}",
                self.sigma.len()
            )));
        }
        if self.mu.iter().chain(&self.sigma).any(|x| !x.is_finite()) {
            return Err(Error::Value(format!("{what}: statistics are not finite")));
        }
        Ok(())
    }
}

/// The Fréchet distance between `a` and `b` (see the module documentation).
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> Result<f64> {
    FrechetReference::new(a)?.distance(b)
}

/// A Gaussian prepared to be compared with many others: `Σ₁^{1/2}` (the one eigendecomposition
/// with eigenvectors) computed once, as for the real set against several fake sets or the
/// validation images at every training-time FID.
#[derive(Debug, Clone)]
pub struct FrechetReference {
    mu: Vec<f64>,
    trace: f64,
    root: Vec<f64>,
}

impl FrechetReference {
    pub fn new(a: &Gaussian) -> Result<Self> {
        a.check("first statistics")?;
        let d = a.dim();
        let e = sym_eigen(&a.sigma, d).ok_or_else(not_converged)?;
        Ok(FrechetReference {
            mu: a.mu.clone(),
            trace: (0..d).map(|i| a.sigma[i * d + i]).sum(),
            root: sym_apply(&e, |x| x.max(0.0).sqrt()),
        })
    }

    /// The Fréchet distance between the reference and `b`.
    pub fn distance(&self, b: &Gaussian) -> Result<f64> {
        b.check("second statistics")?;
        let d = self.mu.len();
        if b.dim() != d {
            return Err(Error::Value(format!(
                "statistics of different widths: {d} and {}",
                b.dim()
            )));
        }
        let mean_term: f64 = self
            .mu
            .iter()
            .zip(&b.mu)
            .map(|(x, y)| (x - y).powi(2))
            .sum();
        let trace_b: f64 = (0..d).map(|i| b.sigma[i * d + i]).sum();
        let root = &self.root;
        let mut m = matmul(&matmul(root, &b.sigma, d, d, d), root, d, d, d);
        // Symmetrise the rounding away before the symmetric solver.
        for i in 0..d {
            for j in i + 1..d {
                let mean = 0.5 * (m[i * d + j] + m[j * d + i]);
                m[i * d + j] = mean;
                m[j * d + i] = mean;
            }
        }
        let values = sym_eigenvalues(&m, d).ok_or_else(not_converged)?;
        let tr_root: f64 = values.iter().map(|&x| x.max(0.0).sqrt()).sum();
        Ok(mean_term + self.trace + trace_b - 2.0 * tr_root)
    }
}

fn not_converged() -> Error {
    Error::Value("eigendecomposition did not converge".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(mu: &[f64], sigma: &[f64]) -> Gaussian {
        Gaussian {
            mu: mu.to_vec(),
            sigma: sigma.to_vec(),
            count: 0,
        }
    }

    #[test]
    fn known_answers() {
        // 1-D: (μ₁ − μ₂)² + (s₁ − s₂)².
        let f = frechet_distance(&g(&[0.0], &[4.0]), &g(&[1.0], &[9.0])).unwrap();
        assert!((f - 2.0).abs() < 1e-12, "{f}");
        // Diagonal: |μ|² + Σ (√a − √b)².
        let f = frechet_distance(
            &g(
                &[1.0, 2.0, 3.0],
                &[1.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 9.0],
            ),
            &g(
                &[1.0, 0.0, 3.0],
                &[4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 1.0],
            ),
        )
        .unwrap();
        assert!((f - (4.0 + 1.0 + 0.0 + 4.0)).abs() < 1e-12, "{f}");
        // Non-commuting 2 × 2: for a 2 × 2 PSD M, tr √M = √(tr M + 2√det M); here
        // tr(Σ₁Σ₂) = 10, det = 3·4 = 12, so FID = 4 + 5 − 2√(10 + 2√12).
        let f = frechet_distance(
            &g(&[0.0, 0.0], &[2.0, 1.0, 1.0, 2.0]),
            &g(&[0.0, 0.0], &[1.0, 0.0, 0.0, 4.0]),
        )
        .unwrap();
        let want = 9.0 - 2.0 * (10.0 + 2.0 * 12f64.sqrt()).sqrt();
        assert!((f - want).abs() < 1e-12, "{f} vs {want}");
        // A Gaussian against itself, including a singular covariance.
        let s = [1.0, 1.0, 1.0, 1.0];
        assert!(
            frechet_distance(&g(&[3.0, 1.0], &s), &g(&[3.0, 1.0], &s))
                .unwrap()
                .abs()
                < 1e-7
        );
    }

    #[test]
    fn statistics_of_features_match_numpy_conventions() {
        // Rows (1, 2), (3, 6), (5, 4): mean (3, 4); cov with N − 1 = 2:
        // var x = (4 + 0 + 4)/2 = 4, var y = (4 + 4 + 0)/2 = 4, cov = (4 + 0 + 0)/2 = 2.
        let st = Gaussian::from_features(&[1.0, 2.0, 3.0, 6.0, 5.0, 4.0], 3, 2).unwrap();
        assert_eq!(st.mu, vec![3.0, 4.0]);
        assert_eq!(st.sigma, vec![4.0, 2.0, 2.0, 4.0]);
        assert!(st.full_rank_possible());
        let st = Gaussian::from_features(&[1.0, 2.0, 3.0, 6.0], 2, 2).unwrap();
        assert!(!st.full_rank_possible());
        assert!(Gaussian::from_features(&[1.0, 2.0], 1, 2).is_err());
        assert!(Gaussian::from_features(&[1.0, 2.0, 3.0], 2, 2).is_err());
        let bad = g(&[0.0, 0.0], &[1.0, 0.0, 0.0]);
        assert!(frechet_distance(&bad, &bad).is_err());
        let nan = g(&[f64::NAN], &[1.0]);
        assert!(frechet_distance(&nan, &g(&[0.0], &[1.0])).is_err());
        assert!(
            frechet_distance(&g(&[0.0], &[1.0]), &g(&[0.0, 0.0], &[1.0, 0.0, 0.0, 1.0])).is_err()
        );
    }
}
