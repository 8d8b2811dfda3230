//! Metrics that need no network: for images the Fréchet distance between feature Gaussians
//! (FID), the kernel inception distance (KID), reference statistics as `.npz`, and the FID
//! Inception-v3's weights and input resize ([`inception`]; the network itself runs in the burn
//! crate, `mdm_prime::inception`); for text the unigram entropy of samples ([`diversity`]) and
//! the burn-free half of generative perplexity ([`genppl`]; the judges run in
//! `mdm_prime::genppl`).

pub mod diversity;
pub mod fid;
pub mod genppl;
pub mod inception;
pub mod kid;
pub mod linalg;
pub mod npz;

pub use diversity::unigram_entropy;
pub use fid::{FrechetReference, Gaussian, frechet_distance};
pub use kid::{Kid, kid};

/// Mean and standard error of the mean, `sd / √n` with the unbiased `sd` (0 for one value, NaN
/// for none).
pub fn mean_stderr(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, 0.0);
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[cfg(test)]
mod tests {
    #[test]
    fn mean_stderr_by_hand() {
        // [1, 2, 3, 6]: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, s.e. √(14/3 / 4).
        let (m, se) = super::mean_stderr(&[1.0, 2.0, 3.0, 6.0]);
        assert_eq!(m, 3.0);
        assert!((se - (14.0f64 / 12.0).sqrt()).abs() < 1e-15);
        assert_eq!(super::mean_stderr(&[5.0]), (5.0, 0.0));
        assert!(super::mean_stderr(&[]).0.is_nan());
    }
}
