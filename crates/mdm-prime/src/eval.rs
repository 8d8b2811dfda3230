//! Likelihood evaluation (design §4.3, §4.5): the valid sub-token bound (`elbo`) as nats/token,
//! bits/token and perplexity with a Monte-Carlo standard error, and the paper's objective under
//! its own name.
//!
//! Each sequence gets `time_draws` draws of (t, mask), stratified in t: draw k of K uses
//! `t = ε + (1 − ε)·(k + u)/K` with one `u ~ U(0,1)` per sequence. Both objectives come from the
//! same forward pass ([`Denoiser::eval_terms`]). The standard error is over sequences (each
//! sequence's K-draw average is one observation). A network whose likelihood is exact (the
//! autoregressive baseline: [`Denoiser::exact_likelihood`]) gets one draw: its terms do not
//! depend on t or the masks, and both columns are its exact NLL.

use burn::tensor::Device;
use mdm_prime_core::{Codec, Schedule};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

pub use mdm_prime_core::metrics::mean_stderr;

use crate::Result;
use crate::batch::noised_batch;
use crate::model::Denoiser;
use crate::subtoken::PrimeTables;

/// What `eval` measures.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub elbo_nats_per_token: f64,
    pub elbo_bits_per_token: f64,
    pub elbo_ppl: f64,
    /// Monte-Carlo standard error of `elbo_nats_per_token`.
    pub elbo_stderr: f64,
    /// The paper's objective: not a bound on the NLL when ℓ > 1 (design §4.5).
    pub paper_objective_nats_per_token: f64,
    pub paper_objective_stderr: f64,
    pub paper_objective_ppl: f64,
    pub tokens: u64,
    pub sequences: usize,
    pub time_draws: usize,
}

/// Settings of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    pub time_draws: usize,
    pub batch_size: usize,
    pub carry_over: bool,
    pub sampling_eps: f64,
    pub seed: u64,
}

impl EvalSettings {
    /// The settings a run's config asks for (`[eval]`, carry-over, training's ε, seed).
    pub fn from_config(cfg: &mdm_prime_core::config::RunConfig) -> Self {
        EvalSettings {
            time_draws: cfg.eval.time_draws,
            batch_size: cfg.eval.batch_size,
            carry_over: cfg.prime.carry_over,
            sampling_eps: cfg.train.sampling_eps,
            seed: cfg.seed,
        }
    }
}

/// Evaluates `model` (EMA weights, no autodiff) on `blocks`. `progress(done, total)` is called
/// after each batch.
#[allow(clippy::too_many_arguments)]
pub fn evaluate<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    codec: &Codec,
    schedule: &Schedule,
    blocks: &[&[u32]],
    settings: &EvalSettings,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalReport> {
    let k_draws = if model.exact_likelihood() {
        1
    } else {
        settings.time_draws.max(1)
    };
    let mut rng = StdRng::seed_from_u64(settings.seed ^ 0x5eed_e7a1);
    let (mut per_seq_elbo, mut per_seq_paper) = (Vec::new(), Vec::new());
    let mut tokens = 0u64;
    for (bi, chunk) in blocks.chunks(settings.batch_size.max(1)).enumerate() {
        let l = chunk[0].len();
        let u: Vec<f64> = (0..chunk.len()).map(|_| rng.random()).collect();
        let (mut elbo, mut paper) = (vec![0.0; chunk.len()], vec![0.0; chunk.len()]);
        for k in 0..k_draws {
            let t: Vec<f64> = u
                .iter()
                .map(|&u| {
                    settings.sampling_eps
                        + (1.0 - settings.sampling_eps) * (k as f64 + u) / k_draws as f64
                })
                .collect();
            let sigma = model.sigma(schedule, &t);
            let batch = noised_batch(codec, schedule, chunk, t, &mut rng, device)?;
            let terms = model.eval_terms(tables, &batch, &sigma, settings.carry_over);
            for (terms, acc) in terms.into_iter().zip([&mut elbo, &mut paper]) {
                let sums: Vec<f32> = terms.sum_dim(1).try_into_vec_as().expect("float readback");
                for (a, s) in acc.iter_mut().zip(sums) {
                    *a += s as f64 / (l * k_draws) as f64;
                }
            }
        }
        per_seq_elbo.extend(elbo);
        per_seq_paper.extend(paper);
        tokens += (chunk.len() * l) as u64;
        progress(
            (bi + 1)
                .saturating_mul(settings.batch_size)
                .min(blocks.len()),
            blocks.len(),
        );
    }
    let (elbo, elbo_se) = mean_stderr(&per_seq_elbo);
    let (paper, paper_se) = mean_stderr(&per_seq_paper);
    Ok(EvalReport {
        elbo_nats_per_token: elbo,
        elbo_bits_per_token: elbo / std::f64::consts::LN_2,
        elbo_ppl: elbo.exp(),
        elbo_stderr: elbo_se,
        paper_objective_nats_per_token: paper,
        paper_objective_stderr: paper_se,
        paper_objective_ppl: paper.exp(),
        tokens,
        sequences: per_seq_elbo.len(),
        time_draws: k_draws,
    })
}
