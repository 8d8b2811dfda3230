//! The two objectives of design §4 on tensors: what training minimises and evaluation reports.
//!
//! Both take the model's logits over V (or the shared filtered [`PrimeTables::log_probs`]),
//! the noised sub-tokens `y_t`, the clean tokens `x₀` and the per-sequence loss weight
//! `w(t) = −α'_t/(1 − α_t)` (= 1/t for the log-linear schedule), and return weighted nats per
//! token, `[B, L]`. The per-token objective is their mean over tokens.
//!
//! - [`Objective::Paper`]: `−log p_θ(x₀ⁱ | y_t) · w` for every token (§4.1–4.2).
//! - [`Objective::Elbo`]: `Σ_{j : y_t^{i,j} = m} −log p̄_θ(y₀^{i,j} | y_t) · w` (§4.5), the
//!   valid bound.
//!
//! With ℓ = 1 both reduce to MDLM's SUBS objective: `−log p_θ(x₀ⁱ | x_t)/t` on masked tokens,
//! 0 on revealed ones (with carry-over).

use std::sync::Arc;

use burn::tensor::{Int, Tensor, TensorData};
use mdm_prime_core::Objective;

use crate::batch::NoisedBatch;
pub use crate::batch::loss_weights;
use crate::model::Denoiser;
use crate::ops::{Allowed, DigitTargets, digit_nll_fused, filtered_nll};
use crate::subtoken::PrimeTables;

/// Weighted nats per token under `objective`.
///
/// # Shapes
/// `log_probs: [B, L, V]` (from [`PrimeTables::log_probs`]), `yt: [B, L, ℓ]`, `x0: [B, L]`,
/// `weight: [B]` → `[B, L]`.
pub fn token_terms(
    objective: Objective,
    tables: &PrimeTables,
    log_probs: Tensor<3>,
    yt: Tensor<3, Int>,
    x0: Tensor<2, Int>,
    weight: Tensor<1>,
) -> Tensor<2> {
    let _span = crate::profile::span("loss");
    let [b, l] = x0.dims();
    let weight = weight.reshape([b, 1]);
    match objective {
        Objective::Paper => {
            let lp = log_probs.gather(2, x0.reshape([b, l, 1])).reshape([b, l]);
            -lp * weight
        }
        Objective::CrossEntropy => -log_probs.gather(2, x0.reshape([b, l, 1])).reshape([b, l]),
        Objective::Elbo => {
            let y0 = tables.clean_digits(x0);
            let masked = yt.equal_elem(tables.codec().mask_id() as i64).float();
            let marg = tables.digit_log_marginals_at(log_probs, y0);
            -(marg * masked).sum_dim(2).reshape([b, l]) * weight
        }
    }
}

/// Evaluation's weighted terms `[valid bound, paper objective]`, each `[B, L]`, of a noised batch
/// straight from its logits, fused: the bound through [`crate::ops::digit_nll_fused`], the paper
/// objective through [`filtered_nll`], both with one carry-over filter built from the batch's
/// host copy of `y_t`. What [`token_terms`] gives from [`PrimeTables::log_probs`], without
/// materialising the `B × L × V` log-probabilities or ℓ log-sum-exps over them. `None` where the
/// fused ops do not run (off flex): use [`token_terms`] there.
///
/// # Shapes
/// `logits: [B, L, V]` → two `[B, L]`.
pub fn eval_terms_fused(
    tables: &PrimeTables,
    logits: &Tensor<3>,
    batch: &NoisedBatch,
    carry_over: bool,
) -> Option<[Tensor<2>; 2]> {
    let [b, l, v] = logits.dims();
    let (allowed, digits) = digit_inputs(
        tables,
        batch.yt_host.clone(),
        batch.x0_host.clone(),
        carry_over,
    );
    let targets = Arc::new(batch.x0_host.clone());
    let digits = Arc::new(digits);
    let flat = logits.clone().reshape([b * l, v]);
    let weight = batch.weight.clone().reshape([b, 1]);
    let bound = digit_nll_fused(&flat, &allowed, &digits)?;
    let paper = {
        let _span = crate::profile::span("filter+log_softmax+loss (fused)");
        filtered_nll(flat, allowed, targets)
    };
    Some([bound, paper].map(|nll| nll.reshape([b, l]) * weight.clone()))
}

/// The fused kernels' view of N rows: the carry-over filter of their sub-tokens (`rows`, `N·ℓ`,
/// token-major) or none, and their clean tokens with the masked digits flagged.
fn digit_inputs(
    tables: &PrimeTables,
    rows: Vec<u32>,
    targets: Vec<u32>,
    carry_over: bool,
) -> (Allowed, DigitTargets) {
    let mask = tables.codec().mask_id();
    let digits = DigitTargets {
        columns: tables.digit_columns(),
        targets,
        masked: rows.iter().map(|&y| y == mask).collect(),
    };
    (tables.filter(rows, carry_over), digits)
}

/// Logits in, weighted nats per token out: [`PrimeTables::log_probs`] then [`token_terms`].
///
/// # Shapes
/// `logits: [B, L, V]`, `yt: [B, L, ℓ]`, `x0: [B, L]`, `weight: [B]` → `[B, L]`.
#[allow(clippy::too_many_arguments)]
pub fn objective_from_logits(
    objective: Objective,
    tables: &PrimeTables,
    logits: Tensor<3>,
    yt: Tensor<3, Int>,
    x0: Tensor<2, Int>,
    weight: Tensor<1>,
    carry_over: bool,
) -> Tensor<2> {
    let log_probs = tables.log_probs(logits, yt.clone(), carry_over);
    token_terms(objective, tables, log_probs, yt, x0, weight)
}

/// `−log p(x_i | x_{<i})` per token from next-token logits: the autoregressive baseline's exact
/// NLL terms (fused log-softmax and gather, [`filtered_nll`] with every class allowed).
///
/// # Shapes
/// `logits: [B, L, V]` (row i scores token i), `targets: B·L` tokens → `[B, L]`.
pub fn next_token_nll(logits: Tensor<3>, targets: &[u32]) -> Tensor<2> {
    let _span = crate::profile::span("log_softmax+loss (fused)");
    let [b, l, v] = logits.dims();
    filtered_nll(
        logits.reshape([b * l, v]),
        Allowed::All,
        Arc::new(targets.to_vec()),
    )
    .reshape([b, l])
}

/// The mean masked-diffusion objective per token of a noised batch (what a denoiser's training
/// minimises).
///
/// Positions with nothing masked contribute exactly 0 under the ELBO, and under the paper
/// objective when carry-over is on (one class is left, log-probability 0). Then the V-way head,
/// the filter and the loss run only on the masked positions (`batch.masked_positions`), which
/// gives the same value and gradient with less work; otherwise every position is used.
pub fn masked_batch_loss<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    objective: Objective,
    batch: &NoisedBatch,
    sigma: &[f32],
    carry_over: bool,
    only_masked: bool,
) -> Tensor<1> {
    let [b, l] = batch.x0.dims();
    let ell = tables.codec().ell();
    // Fully revealed tokens score exactly 0 under the ELBO, and under the token objectives when
    // the filter leaves them one class.
    let exact_zero = objective == Objective::Elbo || carry_over;
    let n = batch.masked_positions.len();
    if !(only_masked && exact_zero && n > 0) {
        let lp = model.log_probs(tables, batch.yt.clone(), sigma, carry_over);
        return token_terms(
            objective,
            tables,
            lp,
            batch.yt.clone(),
            batch.x0.clone(),
            batch.weight.clone(),
        )
        .mean();
    }
    let device = batch.x0.device();
    let idx: Vec<i64> = batch.masked_positions.iter().map(|&k| k as i64).collect();
    let seq: Vec<i64> = batch
        .masked_positions
        .iter()
        .map(|&k| (k / l) as i64)
        .collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device);
    let seq = Tensor::<1, Int>::from_data(TensorData::new(seq, [n]), &device);
    let h = model.features(batch.yt.clone(), sigma);
    let d = h.dims()[2];
    let h = h
        .reshape([b * l, d])
        .select(0, idx.clone())
        .reshape([n, 1, d]);
    let weight = match objective {
        Objective::CrossEntropy => Tensor::ones([n], &device),
        _ => batch.weight.clone().select(0, seq),
    };
    let logits = model.head_logits(h);
    let v = tables.codec().vocab_size() as usize;
    let rows: Vec<u32> = batch
        .masked_positions
        .iter()
        .flat_map(|&k| batch.yt_host[k * ell..(k + 1) * ell].iter().copied())
        .collect();
    let targets: Vec<u32> = batch
        .masked_positions
        .iter()
        .map(|&k| batch.x0_host[k])
        .collect();
    if objective != Objective::Elbo {
        // Filter, log-softmax and gather fused (`ops::filtered_nll`, tested equal to the
        // composed `log_probs` + `token_terms` in value and gradient).
        let allowed = tables.filter(rows, carry_over);
        let _span = crate::profile::span("filter+log_softmax+loss (fused)");
        let nll = filtered_nll(logits.reshape([n, v]), allowed, Arc::new(targets));
        return (nll * weight).sum().div_scalar((b * l) as f64);
    }
    // The ELBO: filter, log-softmax and digit marginals fused (`ops::digit_nll_fused`, tested
    // equal to the composed version in value and gradient) where it runs ...
    let (allowed, digits) = digit_inputs(tables, rows, targets, carry_over);
    let flat = logits.clone().reshape([n, v]);
    if let Some(nll) = digit_nll_fused(&flat, &allowed, &Arc::new(digits)) {
        return (nll * weight).sum().div_scalar((b * l) as f64);
    }
    // ... else on tensors, from the selected rows' noised digits and clean tokens.
    let yt = batch
        .yt
        .clone()
        .reshape([b * l, ell])
        .select(0, idx.clone())
        .reshape([n, 1, ell]);
    let x0 = batch
        .x0
        .clone()
        .reshape([b * l])
        .select(0, idx)
        .reshape([n, 1]);
    let lp = tables.log_probs(logits, yt.clone(), carry_over);
    token_terms(objective, tables, lp, yt, x0, weight)
        .sum()
        .div_scalar((b * l) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use mdm_prime_core::schedule::gauss_legendre_01;
    use mdm_prime_core::{Codec, Schedule};

    fn int3(v: Vec<i64>, dims: [usize; 3], d: &Device) -> Tensor<3, Int> {
        Tensor::from_data(TensorData::new(v, dims), d)
    }

    /// Exact value of both objectives for a single token with no context and the Bayes-optimal
    /// model (design §4.5): integrate over t ∈ [0, 1] by Gauss–Legendre (the integrand is a
    /// polynomial in t of degree < ℓ), enumerate all 2^ℓ mask patterns and every x₀, and call the
    /// production filter, objective and schedule on the whole enumeration as one batch.
    fn exact_objectives(p: &[f64], ell: usize, carry_over: bool) -> (f64, f64) {
        let d = Device::default();
        let v = p.len();
        let codec = Codec::new(v as u32, ell).unwrap();
        let tables = PrimeTables::new(&codec, &d);
        let schedule = Schedule::LINEAR;
        let nodes = gauss_legendre_01(12);
        let (mut yt, mut x0, mut logits, mut t, mut mass) =
            (vec![], vec![], vec![], vec![], vec![]);
        for &(tq, wq) in &nodes {
            for pattern in 0..1usize << ell {
                let n_masked = pattern.count_ones() as i32;
                let m = schedule.mask_prob(tq);
                let p_pattern = m.powi(n_masked) * (1.0 - m).powi(ell as i32 - n_masked);
                for (x, &px) in p.iter().enumerate() {
                    if px == 0.0 {
                        continue;
                    }
                    let digits = codec.digits(x as u32).unwrap();
                    let yt_x: Vec<i64> = (0..ell)
                        .map(|j| {
                            if pattern >> j & 1 == 1 {
                                codec.mask_id() as i64
                            } else {
                                digits[j] as i64
                            }
                        })
                        .collect();
                    // Bayes-optimal model: the true posterior p(z | y_t) ∝ p(z)·[z agrees with y_t].
                    let post: Vec<f64> = (0..v)
                        .map(|z| {
                            let dz = codec.digits(z as u32).unwrap();
                            let agrees =
                                (0..ell).all(|j| pattern >> j & 1 == 1 || dz[j] == digits[j]);
                            if agrees { p[z] } else { 0.0 }
                        })
                        .collect();
                    let zsum: f64 = post.iter().sum();
                    logits.extend(post.iter().map(|&q| (q / zsum).ln() as f32));
                    yt.extend(yt_x);
                    x0.push(x as i64);
                    t.push(tq);
                    mass.push(wq * p_pattern * px);
                }
            }
        }
        let n = x0.len();
        let yt = int3(yt, [n, 1, ell], &d);
        let x0 = Tensor::<2, Int>::from_data(TensorData::new(x0, [n, 1]), &d);
        let logits = Tensor::<3>::from_data(TensorData::new(logits, [n, 1, v]), &d);
        let w = loss_weights(&schedule, &t, &d);
        let eval = |obj| {
            let terms = objective_from_logits(
                obj,
                &tables,
                logits.clone(),
                yt.clone(),
                x0.clone(),
                w.clone(),
                carry_over,
            );
            let terms: Vec<f32> = terms.try_into_vec_as().unwrap();
            terms
                .iter()
                .zip(&mass)
                .map(|(&a, &m)| a as f64 * m)
                .sum::<f64>()
        };
        (eval(Objective::Paper), eval(Objective::Elbo))
    }

    fn entropy(p: &[f64]) -> f64 {
        p.iter().filter(|&&q| q > 0.0).map(|&q| -q * q.ln()).sum()
    }

    #[test]
    #[allow(clippy::approx_constant)] // 0.693147 is the design's printed value, checked as printed
    fn correlated_digits_paper_is_half_the_entropy() {
        // V = 4, ℓ = 2, b = 2, p = [.5, 0, 0, .5]: digits perfectly correlated.
        for carry_over in [true, false] {
            let (paper, elbo) = exact_objectives(&[0.5, 0.0, 0.0, 0.5], 2, carry_over);
            assert!((paper - 0.346574).abs() < 1e-5, "paper {paper}");
            assert!((elbo - 0.693147).abs() < 1e-5, "elbo {elbo}");
            assert!((elbo - entropy(&[0.5, 0.5])).abs() < 1e-5);
        }
    }

    #[test]
    fn uniform_tokens_both_equal_the_entropy() {
        let (paper, elbo) = exact_objectives(&[0.25; 4], 2, true);
        assert!((paper - 1.386294).abs() < 1e-5, "paper {paper}");
        assert!((elbo - 1.386294).abs() < 1e-5, "elbo {elbo}");
    }

    #[test]
    fn seven_tokens_three_digits() {
        let p = [0.3, 0.05, 0.05, 0.2, 0.1, 0.1, 0.2];
        for carry_over in [true, false] {
            let (paper, elbo) = exact_objectives(&p, 3, carry_over);
            assert!((paper - 1.573574).abs() < 1e-5, "paper {paper}");
            assert!((elbo - 1.765057).abs() < 1e-5, "elbo {elbo}");
            assert!((elbo - entropy(&p)).abs() < 1e-5);
        }
    }

    #[test]
    fn ell_one_both_objectives_equal_mdlm() {
        // ℓ = 1 with V = 5: MDLM's SUBS loss is −log softmax(logits)[x₀]/t on masked tokens and
        // 0 on revealed ones (carry-over). Computed here by hand from the same logits.
        let d = Device::default();
        let (b, l, v) = (3, 4, 5);
        let codec = Codec::new(v as u32, 1).unwrap();
        assert_eq!(codec.mask_id(), 5);
        let tables = PrimeTables::new(&codec, &d);
        let logits: Vec<f32> = (0..b * l * v)
            .map(|k| ((k * 7919 % 23) as f32 - 11.0) / 5.0)
            .collect();
        let x0: Vec<i64> = (0..b * l).map(|k| (k * 3 % v) as i64).collect();
        let yt: Vec<i64> = x0
            .iter()
            .enumerate()
            .map(|(k, &x)| if k % 3 == 0 { x } else { 5 })
            .collect();
        let t = [0.2, 0.5, 0.9];
        let mut expect = vec![0.0f64; b * l];
        for k in 0..b * l {
            if yt[k] == 5 {
                let row = &logits[k * v..(k + 1) * v];
                let lse = row.iter().map(|&z| (z as f64).exp()).sum::<f64>().ln();
                expect[k] = -(row[x0[k] as usize] as f64 - lse) / t[k / l];
            }
        }
        let logits_t = Tensor::<3>::from_data(TensorData::new(logits, [b, l, v]), &d);
        let yt_t = int3(yt, [b, l, 1], &d);
        let x0_t = Tensor::<2, Int>::from_data(TensorData::new(x0, [b, l]), &d);
        let w = loss_weights(&Schedule::default(), &t, &d);
        for obj in [Objective::Paper, Objective::Elbo] {
            let got: Vec<f32> = objective_from_logits(
                obj,
                &tables,
                logits_t.clone(),
                yt_t.clone(),
                x0_t.clone(),
                w.clone(),
                true,
            )
            .try_into_vec_as()
            .unwrap();
            for (g, e) in got.iter().zip(&expect) {
                assert!((*g as f64 - e).abs() < 1e-5, "{obj}: {got:?} vs {expect:?}");
            }
        }
    }

    #[test]
    fn filter_matches_the_scalar_codec_and_marginals_match_scatter_add() {
        let d = Device::default();
        let codec = Codec::new(50, 3).unwrap(); // b = 4, 64 codes, 14 invalid
        let tables = PrimeTables::new(&codec, &d);
        let m = codec.mask_id() as i64;
        let cases: Vec<[i64; 3]> = vec![
            [m, m, m],
            [2, m, m],
            [m, 1, m],
            [3, 0, m],
            [1, 2, 3],
            [m, m, 2],
        ];
        let n = cases.len();
        let yt = int3(cases.iter().flatten().copied().collect(), [n, 1, 3], &d);
        let allowed: Vec<bool> = tables.consistent(yt.clone()).try_into_vec_as().unwrap();
        for (k, case) in cases.iter().enumerate() {
            let yt_k: Vec<u32> = case.iter().map(|&y| y as u32).collect();
            assert_eq!(
                &allowed[k * 50..(k + 1) * 50],
                codec.allowed(&yt_k).unwrap().as_slice()
            );
        }
        // Digit log-marginals at x₀'s digits vs the scalar scatter-add, on a softmax of
        // arbitrary logits without the filter.
        let logits: Vec<f32> = (0..n * 50).map(|k| ((k * 31 % 17) as f32) / 4.0).collect();
        let lp = tables.log_probs(
            Tensor::from_data(TensorData::new(logits, [n, 1, 50]), &d),
            yt,
            false,
        );
        let probs: Vec<f32> = lp.clone().exp().try_into_vec_as().unwrap();
        let x0: Vec<u32> = (0..n as u32).map(|k| k * 7 % 50).collect();
        let y0 = int3(
            codec
                .encode(&x0)
                .unwrap()
                .iter()
                .map(|&y| y as i64)
                .collect(),
            [n, 1, 3],
            &d,
        );
        let got: Vec<f32> = tables
            .digit_log_marginals_at(lp, y0)
            .try_into_vec_as()
            .unwrap();
        for k in 0..n {
            let p: Vec<f64> = probs[k * 50..(k + 1) * 50]
                .iter()
                .map(|&q| q as f64)
                .collect();
            let marg = codec.digit_marginals(&p).unwrap();
            for (j, &dj) in codec.digits(x0[k]).unwrap().iter().enumerate() {
                let want = marg[j * 4 + dj as usize].ln();
                assert!((got[k * 3 + j] as f64 - want).abs() < 1e-5, "k={k} j={j}");
            }
        }
    }
}
