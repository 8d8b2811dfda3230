//! Noise schedules, loss weights and time sampling (design §3).
//!
//! One convention throughout: **t = 0 is clean, t = 1 is fully masked** (the text convention),
//! and `α_t` is the probability that a sub-token is still *un*masked at time t. The image
//! schedule `α = t^n` of the flow-matching code (t = 0 masked) is expressed here by the change
//! of variable t ↦ 1 − t, so both schedules share [`Schedule::alpha`], [`Schedule::loss_weight`].

use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The ε of the log-linear schedule (`text/utils/noise_schedule.py::LogLinearNoise`).
pub const LOGLINEAR_EPS: f64 = 1e-3;
/// The lower end of training times, `training.sampling_eps` (design §3.2).
pub const SAMPLING_EPS: f64 = 1e-3;

/// A masking schedule: `α_t`, its derivative, and the ELBO loss weight `−α'_t / (1 − α_t)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// `α_t = 1 − (1 − ε)t` (MDLM's log-linear noise; design §3.2). Its loss weight is exactly `1/t`.
    /// `eps = 0` gives the linear schedule `α_t = 1 − t` of the design's exact cases (§4.5, §10.1).
    Loglinear {
        /// ε, default 1e-3.
        #[serde(default = "default_eps")]
        eps: f64,
    },
    /// The image schedule of design §3.3: unmasked probability `s^n` at flow time `s` (s = 0 masked),
    /// i.e. `α_t = (1 − t)^n` in this module's convention. Default n = 3.
    Polynomial {
        /// The exponent n (> 0).
        #[serde(default = "default_n")]
        n: f64,
    },
}

fn default_eps() -> f64 {
    LOGLINEAR_EPS
}
fn default_n() -> f64 {
    3.0
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Loglinear { eps: LOGLINEAR_EPS }
    }
}

impl Schedule {
    /// The linear schedule `α_t = 1 − t` (log-linear with ε = 0).
    pub const LINEAR: Schedule = Schedule::Loglinear { eps: 0.0 };

    /// Checks the parameters (0 ≤ ε < 1, n > 0).
    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Loglinear { eps } if !(0.0..1.0).contains(&eps) => Err(Error::config(
                "schedule.eps",
                format!("{eps} is outside [0, 1); the paper uses 1e-3"),
            )),
            Schedule::Polynomial { n } if !(n > 0.0 && n.is_finite()) => Err(Error::config(
                "schedule.n",
                format!("{n} must be a positive number; the paper uses 3 (2 for super-tokens)"),
            )),
            _ => Ok(()),
        }
    }

    /// `α_t`: the probability that a sub-token is unmasked at time t ∈ [0, 1].
    pub fn alpha(&self, t: f64) -> f64 {
        match *self {
            Schedule::Loglinear { eps } => 1.0 - (1.0 - eps) * t,
            Schedule::Polynomial { n } => (1.0 - t).powf(n),
        }
    }

    /// `dα_t / dt`.
    pub fn alpha_deriv(&self, t: f64) -> f64 {
        match *self {
            Schedule::Loglinear { eps } => -(1.0 - eps),
            Schedule::Polynomial { n } => -n * (1.0 - t).powf(n - 1.0),
        }
    }

    /// The masking probability `1 − α_t` ("move_chance").
    pub fn mask_prob(&self, t: f64) -> f64 {
        match *self {
            Schedule::Loglinear { eps } => (1.0 - eps) * t,
            Schedule::Polynomial { .. } => 1.0 - self.alpha(t),
        }
    }

    /// The continuous-time ELBO weight `−α'_t / (1 − α_t)` (positive for t > 0).
    ///
    /// Log-linear: `(1−ε)/((1−ε)t) = 1/t` exactly (design §10.3). Polynomial:
    /// `n s^(n−1) / (1 − s^n)` with `s = 1 − t` (design §4.4).
    pub fn loss_weight(&self, t: f64) -> f64 {
        match *self {
            Schedule::Loglinear { .. } => 1.0 / t,
            Schedule::Polynomial { .. } => -self.alpha_deriv(t) / self.mask_prob(t),
        }
    }
}

/// Draws `n` training times on `[eps, 1]` (design §3.2).
///
/// Antithetic (stratified): `u_k ← (u_k/n + k/n) mod 1` with `u ~ U(0,1)^n`, one stratum per
/// sample; then `t = (1 − eps)·u + eps`. Without `antithetic`, `u` is i.i.d. uniform.
pub fn sample_times(rng: &mut impl Rng, n: usize, antithetic: bool, eps: f64) -> Vec<f64> {
    (0..n)
        .map(|k| {
            let u: f64 = rng.random();
            let u = if antithetic {
                (u / n as f64 + k as f64 / n as f64) % 1.0
            } else {
                u
            };
            (1.0 - eps) * u + eps
        })
        .collect()
}

/// Gauss–Legendre nodes and weights on [0, 1]: `Σ w_k f(t_k)` integrates polynomials of degree
/// < 2n exactly. Used for deterministic time integrals (exact tests, quadrature evaluation).
pub fn gauss_legendre_01(n: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut dp = 0.0;
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                p0 = p1;
                p1 = p2;
            }
            dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
            let dx = p1 / dp;
            x -= dx;
            if dx.abs() < 1e-15 {
                break;
            }
        }
        let w = 2.0 / ((1.0 - x * x) * dp * dp);
        out.push(((1.0 - x) / 2.0, w / 2.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn binom(n: usize, k: usize) -> f64 {
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    #[test]
    fn gauss_legendre_is_exact_for_polynomials() {
        let q = gauss_legendre_01(5);
        assert!((q.iter().map(|&(_, w)| w).sum::<f64>() - 1.0).abs() < 1e-14);
        // ∫_0^1 t^9 dt = 1/10, degree 9 < 2·5.
        assert!((q.iter().map(|&(t, w)| w * t.powi(9)).sum::<f64>() - 0.1).abs() < 1e-14);
    }

    #[test]
    fn loglinear_weight_is_one_over_t() {
        // σ(t) = −log(1 − (1−ε)t): the MDLM weight σ'(t)/expm1(σ(t)) equals 1/t (design §10.3).
        let s = Schedule::default();
        for t in [1e-3f64, 0.1, 0.5, 0.999, 1.0] {
            let sigma = -(1.0 - 0.999 * t).ln();
            let dsigma = 0.999 / (1.0 - 0.999 * t);
            let mdlm = dsigma / sigma.exp_m1();
            assert!((s.loss_weight(t) - 1.0 / t).abs() < 1e-12);
            assert!((mdlm * t - 1.0).abs() < 1e-9, "t={t}: {mdlm}");
            assert!((s.mask_prob(t) - 0.999 * t).abs() < 1e-15);
            assert!((-s.alpha_deriv(t) / (1.0 - s.alpha(t)) - 1.0 / t).abs() < 1e-9);
        }
    }

    #[test]
    fn polynomial_matches_image_convention() {
        // Image code: unmasked prob s^3 at flow time s, weight n s^(n−1)/(1 − s^n) (design §4.4).
        let s = Schedule::Polynomial { n: 3.0 };
        for flow in [0.1, 0.5, 0.9] {
            let t = 1.0 - flow;
            assert!((s.alpha(t) - flow * flow * flow).abs() < 1e-12);
            let w = 3.0 * flow * flow / (1.0 - flow * flow * flow);
            assert!((s.loss_weight(t) - w).abs() < 1e-12);
        }
    }

    /// Expected total weight per token (design §4.5): ∫ w(t) E[count] dt with α = 1 − t.
    /// Paper: one term when ≥ 1 digit is masked → H_ℓ. Sub-token ELBO: one per masked digit → ℓ.
    #[test]
    fn expected_total_weights_are_harmonic_and_ell() {
        let s = Schedule::LINEAR;
        let nodes = gauss_legendre_01(16);
        for ell in 1..=6usize {
            let (mut paper, mut elbo) = (0.0, 0.0);
            for &(t, w) in &nodes {
                let m = s.mask_prob(t);
                for k in 0..=ell {
                    let p = binom(ell, k) * m.powi(k as i32) * (1.0 - m).powi((ell - k) as i32);
                    paper += w * s.loss_weight(t) * p * (k > 0) as u8 as f64;
                    elbo += w * s.loss_weight(t) * p * k as f64;
                }
            }
            let h: f64 = (1..=ell).map(|k| 1.0 / k as f64).sum();
            assert!((paper - h).abs() < 1e-10, "ell={ell}: {paper} vs H = {h}");
            assert!((elbo - ell as f64).abs() < 1e-10, "ell={ell}: {elbo}");
        }
    }

    #[test]
    fn antithetic_times_are_stratified_on_eps_1() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 64;
        let t = sample_times(&mut rng, n, true, SAMPLING_EPS);
        let mut strata: Vec<usize> = t
            .iter()
            .map(|&t| (((t - SAMPLING_EPS) / (1.0 - SAMPLING_EPS)) * n as f64) as usize)
            .collect();
        strata.sort();
        // u_k = (u/n + k/n) mod 1 lies in [k/n, (k+1)/n): one sample per stratum, all in [eps, 1].
        assert!(t.iter().all(|&t| (SAMPLING_EPS..=1.0).contains(&t)));
        strata.dedup();
        assert_eq!(strata.len(), n, "one sample per stratum");
        let iid = sample_times(&mut rng, 1000, false, SAMPLING_EPS);
        assert!(iid.iter().all(|&t| (SAMPLING_EPS..=1.0).contains(&t)));
    }

    #[test]
    fn bad_parameters_are_rejected() {
        assert!(Schedule::Loglinear { eps: 1.0 }.validate().is_err());
        assert!(Schedule::Polynomial { n: 0.0 }.validate().is_err());
        assert!(Schedule::default().validate().is_ok());
    }
}
