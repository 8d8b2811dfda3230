//! The model-free half of the ancestral sampler (design §7.1, §10.1): the time grid, the reveal
//! probability of a masked sub-token, categorical draws by the exponential race, nucleus
//! filtering, and the idle-step statistics (simulated and in closed form).
//!
//! Revealing does not depend on the model: a masked sub-token is revealed between t and s with
//! probability `(α_s − α_t)/(1 − α_t)`, whatever the network says. That is why idle steps can be
//! simulated without a model, and why the sampler can decide the reveals first and draw a token
//! only where something is revealed.

use rand::{Rng, RngExt};

use crate::schedule::Schedule;

/// The last time of the sampling grid (`text/diffusion.py`: `linspace(1, 1e-5, T+1)`).
pub const T_MIN: f64 = 1e-5;

/// The sampling grid `t_k = 1 − k·(1 − T_MIN)/T`, k = 0..T (T+1 points, from 1 down to T_MIN).
pub fn time_grid(steps: usize) -> Vec<f64> {
    (0..=steps)
        .map(|k| 1.0 - k as f64 * (1.0 - T_MIN) / steps as f64)
        .collect()
}

/// Probability that a sub-token still masked at time `t` is revealed by time `s < t`:
/// `(α_s − α_t)/(1 − α_t)` (design §3.1; `(t − s)/t` for the linear schedule).
pub fn reveal_probability(schedule: &Schedule, t: f64, s: f64) -> f64 {
    let (at, as_) = (schedule.alpha(t), schedule.alpha(s));
    ((as_ - at) / (1.0 - at)).clamp(0.0, 1.0)
}

/// Closed-form idle-step ratio of one sequence of `n_sub = ℓ·L` sub-tokens on the grid
/// (design §10.1): step k is idle with probability `(1 − (α_{s_k} − α_{t_k}))^{ℓL}`; the ratio is
/// the mean over the T steps. For α = 1 − t on a uniform grid this is `(1 − 1/T)^{ℓL}`.
pub fn isr_closed_form(schedule: &Schedule, steps: usize, n_sub: usize) -> f64 {
    let grid = time_grid(steps);
    let idle: f64 = grid
        .windows(2)
        .map(|w| (1.0 - (schedule.alpha(w[1]) - schedule.alpha(w[0]))).powi(n_sub as i32))
        .sum();
    idle / steps as f64
}

/// Expected network evaluations with idle-step caching (design §10.1):
/// `1 + Σ_{k=0}^{T−2} (1 − P(step k idle))`, plus 1 for the final noise removal.
pub fn nfe_expected(schedule: &Schedule, steps: usize, n_sub: usize) -> f64 {
    let grid = time_grid(steps);
    let non_idle: f64 = grid
        .windows(2)
        .take(steps.saturating_sub(1))
        .map(|w| 1.0 - (1.0 - (schedule.alpha(w[1]) - schedule.alpha(w[0]))).powi(n_sub as i32))
        .sum();
    1.0 + non_idle + 1.0
}

/// Simulates the reveal process of one sequence of `n_sub` sub-tokens over `steps` steps with
/// the sampler's own rule ([`reveal_probability`], one coin per still-masked sub-token per
/// step) and returns the number of idle steps (steps that reveal nothing).
pub fn simulate_idle_steps(
    schedule: &Schedule,
    steps: usize,
    n_sub: usize,
    rng: &mut impl Rng,
) -> usize {
    let grid = time_grid(steps);
    let mut masked = n_sub;
    let mut idle = 0;
    for w in grid.windows(2) {
        let p = reveal_probability(schedule, w[0], w[1]);
        let revealed = (0..masked).filter(|_| rng.random::<f64>() < p).count();
        masked -= revealed;
        idle += (revealed == 0) as usize;
    }
    idle
}

/// Precision of the exponential-race noise (design §7.1: `sampling_dtype`; fp64 recommended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoisePrecision {
    F32,
    F64,
}

/// Draws `argmax_x p_x / E_x` with `E_x = −ln(U_x + tiny)` (the exponential race, equivalent to
/// Gumbel-max). Zero-probability classes are never drawn. `probs` need not be normalised.
pub fn exponential_race(probs: &[f64], precision: NoisePrecision, rng: &mut impl Rng) -> usize {
    let mut best = (f64::NEG_INFINITY, 0usize);
    for (x, &p) in probs.iter().enumerate() {
        if p <= 0.0 {
            continue;
        }
        let e = match precision {
            NoisePrecision::F64 => -(rng.random::<f64>() + 1e-300).ln(),
            NoisePrecision::F32 => -((rng.random::<f32>() + f32::MIN_POSITIVE).ln()) as f64,
        };
        let score = p / e;
        if score > best.0 {
            best = (score, x);
        }
    }
    best.1
}

/// Nucleus (top-p) filtering in place (MDLM): sort descending, keep the classes whose cumulative
/// probability is ≤ p (always the top one), zero the rest, renormalise.
pub fn nucleus(probs: &mut [f64], top_p: f64) {
    if top_p >= 1.0 {
        return;
    }
    let total: f64 = probs.iter().sum();
    let mut order: Vec<usize> = (0..probs.len()).filter(|&x| probs[x] > 0.0).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut keep = vec![false; probs.len()];
    let mut cum = 0.0;
    for (rank, &x) in order.iter().enumerate() {
        cum += probs[x] / total;
        if rank == 0 || cum <= top_p {
            keep[x] = true;
        } else {
            break;
        }
    }
    let kept: f64 = probs
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(p, _)| p)
        .sum();
    for (p, k) in probs.iter_mut().zip(&keep) {
        *p = if *k { *p / kept } else { 0.0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn table_1_isr_in_closed_form() {
        // α = 1 − t on the code's grid; the design's (1 − 1/T)^{ℓL} values to 1e-4 absolute.
        let s = Schedule::LINEAR;
        let expect = [
            (1, 0.367700),
            (2, 0.135203),
            (3, 0.049714),
            (4, 0.018280),
            (6, 0.002471),
            (8, 0.000334),
        ];
        for (ell, isr) in expect {
            let got = isr_closed_form(&s, 1024, ell * 1024);
            assert!((got - isr).abs() < 1e-4, "ell={ell}: {got} vs {isr}");
            let exact = (1.0 - 1.0 / 1024.0f64).powi((ell * 1024) as i32);
            assert!((exact - isr).abs() < 5e-7, "ell={ell}");
        }
        // Expected idle-step counts of §10.1 at T = 2048: 1242.0 (ℓ=1), 277.0 (ℓ=4).
        assert!((isr_closed_form(&s, 2048, 1024) * 2048.0 - 1242.0).abs() < 1.0);
        assert!((isr_closed_form(&s, 2048, 4096) * 2048.0 - 277.0).abs() < 1.0);
    }

    #[test]
    fn reveal_probability_is_t_minus_s_over_t_for_linear() {
        assert!((reveal_probability(&Schedule::LINEAR, 0.5, 0.25) - 0.5).abs() < 1e-15);
        assert!((reveal_probability(&Schedule::default(), 0.5, 0.25) - 0.5).abs() < 1e-12);
        // Telescoping: revealed during step k with probability Δα_k (design §10.1).
        let s = Schedule::default();
        let g = time_grid(10);
        // P(still masked at t) = 1 − α_t for a sub-token masked by the forward process.
        let mut still = 1.0 - s.alpha(g[0]);
        for w in g.windows(2) {
            let p = still * reveal_probability(&s, w[0], w[1]);
            assert!((p - (s.alpha(w[1]) - s.alpha(w[0]))).abs() < 1e-12);
            still -= p;
        }
    }

    #[test]
    fn simulated_isr_agrees_with_closed_form() {
        let s = Schedule::LINEAR;
        let mut rng = StdRng::seed_from_u64(1);
        let (steps, n_sub, runs) = (256, 256, 200);
        let idle: Vec<f64> = (0..runs)
            .map(|_| simulate_idle_steps(&s, steps, n_sub, &mut rng) as f64 / steps as f64)
            .collect();
        let mean = idle.iter().sum::<f64>() / runs as f64;
        let sd = (idle.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (runs - 1) as f64).sqrt();
        let cf = isr_closed_form(&s, steps, n_sub);
        assert!(
            (mean - cf).abs() < 5.0 * sd / (runs as f64).sqrt(),
            "{mean} vs {cf}"
        );
    }

    #[test]
    fn exponential_race_samples_the_distribution() {
        let p = [0.5, 0.0, 0.3, 0.2];
        for prec in [NoisePrecision::F64, NoisePrecision::F32] {
            let mut rng = StdRng::seed_from_u64(2);
            let n = 20000;
            let mut counts = [0usize; 4];
            for _ in 0..n {
                counts[exponential_race(&p, prec, &mut rng)] += 1;
            }
            assert_eq!(counts[1], 0, "zero-probability class drawn");
            for (c, q) in counts.iter().zip(p) {
                let sd = (q * (1.0 - q) / n as f64).sqrt();
                assert!(
                    (*c as f64 / n as f64 - q).abs() <= 5.0 * sd + 1e-12,
                    "{counts:?}"
                );
            }
        }
    }

    #[test]
    fn nucleus_keeps_the_top_mass() {
        let mut p = vec![0.1, 0.5, 0.25, 0.15];
        nucleus(&mut p, 0.8); // sorted 0.5, 0.25 (cum 0.75 ≤ 0.8), 0.15 (0.9 > 0.8)
        assert_eq!(p[0], 0.0);
        assert_eq!(p[3], 0.0);
        assert!((p[1] - 0.5 / 0.75).abs() < 1e-12 && (p[2] - 0.25 / 0.75).abs() < 1e-12);
        let mut q = vec![0.9, 0.1];
        nucleus(&mut q, 0.5); // the top one is always kept
        assert_eq!(q, vec![1.0, 0.0]);
    }
}
