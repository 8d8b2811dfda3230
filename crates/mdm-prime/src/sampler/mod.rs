//! The idle-step-aware ancestral sampler (design §7.1).
//!
//! Start fully masked (except fixed sub-tokens: a prompt, an infilling template). At each of T
//! steps from t to s, every still-masked sub-token is revealed with probability
//! `(α_s − α_t)/(1 − α_t)`; where a token has a digit revealed, one whole token x̂ is drawn from the
//! (carry-over filtered, tempered, nucleus-truncated) model distribution and the revealed digits
//! take x̂'s digits. A final noise-removal step fills whatever is still masked.
//!
//! Three facts make this cheap. Revealing does not depend on the model, so the reveals of a step
//! are decided first and a token is drawn only where something is revealed (the same distribution
//! as drawing everywhere and discarding). The V-way head is per position, so the network body's
//! output features are what is cached, and the head, the filter and the log-softmax run only on
//! the few rows being revealed at a step (about L·ℓ/T of them) instead of on every position. And a
//! step that reveals nothing leaves the sequence unchanged, so the body's output for it is reused:
//! **idle-step caching, per sequence** — in a batch only the sequences whose input changed are run
//! again (the reference re-runs the whole batch unless every sequence is idle; [`CacheMode::Batch`]
//! reproduces that). The network is evaluated at the start of a step when the sequence's cache is
//! stale, as in the reference, so NFE = 1 + #non-idle steps among the first T − 1, plus 1 for
//! noise removal when something is still masked and the cache is stale. Time-conditioned models
//! never cache.
//!
//! Every random draw of sequence `b` comes from its own generator, so caching never changes the
//! output, and neither does the batch size.
//!
//! [`sample`] and [`sample_each`] hand the work to the network ([`Denoiser::generate`]): a
//! masked denoiser runs the sampler of this file, the autoregressive baseline the left-to-right
//! one of [`ar`].

pub mod ar;

use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime_core::Schedule;
use mdm_prime_core::rng::step_seed;
use mdm_prime_core::sampling::{NoisePrecision, exponential_race, nucleus, reveal_probability};
use mdm_prime_core::solver::{DrawMode, Solver};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::Result;
use crate::model::{Denoiser, Templates};
use crate::subtoken::PrimeTables;

/// When the network output of a sequence is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Re-run only the sequences whose input changed (this project's default).
    Sequence,
    /// Re-run the whole batch unless every sequence was idle (the reference code).
    Batch,
    /// Re-run every step.
    Off,
}

/// Sampler controls.
#[derive(Debug, Clone)]
pub struct SampleSettings {
    /// Reverse steps T.
    pub steps: usize,
    /// Tokens per sequence L.
    pub seq_len: usize,
    /// Divides the log-probabilities before sampling (1 = the model's distribution).
    pub temperature: f64,
    /// Nucleus mass (1 = off).
    pub top_p: f64,
    pub seed: u64,
    pub precision: NoisePrecision,
    pub carry_over: bool,
    pub cache: CacheMode,
    /// Sequences per network batch.
    pub batch_size: usize,
}

/// One generated sequence.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// L token ids (invalid codes, possible only without carry-over, replaced by `replacement`).
    pub tokens: Vec<u32>,
    /// Tokens whose final digits formed a code ≥ V.
    pub invalid_codes: usize,
    /// Network evaluations spent on this sequence.
    pub nfe: usize,
    /// Steps that revealed nothing in this sequence.
    pub idle_steps: usize,
    pub steps: usize,
    /// Whether each of the T steps was idle.
    #[serde(skip)]
    pub idle_at: Vec<bool>,
}

pub use mdm_prime_core::template::Template;

/// The network body's output for one sequence: the final features `[L, D]`, row-major, of the
/// current `y` (the head is applied per position, on demand).
struct Cache {
    h: Vec<f32>,
}

struct SeqState {
    y: Vec<u32>,
    rng: StdRng,
    /// Body features for the current `y`, if fresh.
    cache: Option<Cache>,
    nfe: usize,
    idle: usize,
    idle_at: Vec<bool>,
}

/// Where the sampling time went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SamplerTiming {
    /// Seconds in network evaluations (including reading the log-probabilities back).
    pub network_s: f64,
    /// The part of `network_s` spent in the V-way head, the filter and the log-softmax.
    pub head_s: f64,
    /// Seconds in everything else: reveal decisions, tempering, nucleus, token draws.
    pub other_s: f64,
    /// Rows (sequence, position) the V-way head was evaluated on: one per token draw.
    pub head_rows: usize,
}

/// Generates `n` sequences and reports where the time went. `solver` is the schedule (the text
/// sampler of design §7.1) or a [`Solver`] with the image grid, tempering and draw mode of §7.3.
/// `progress(step, total)` is called after each step.
#[allow(clippy::too_many_arguments)]
pub fn sample<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    solver: impl Into<Solver>,
    settings: &SampleSettings,
    template: &Template,
    n: usize,
    replacement: u32,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Sample>, SamplerTiming)> {
    let shared = |_: usize| template;
    model.generate(
        tables,
        solver.into(),
        settings,
        (n, &shared),
        replacement,
        device,
        progress,
    )
}

/// `n` unconditional sequences of the run's length with the run's solver (`cfg.solver()`): what
/// `sample` on an image run, `fid` and the training-time FID draw.
pub fn sample_unconditional<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    cfg: &mdm_prime_core::config::RunConfig,
    settings: &SampleSettings,
    n: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Sample>> {
    let free = Template::free(cfg.data.seq_len, cfg.prime.ell);
    let (samples, _) = sample(
        model,
        tables,
        cfg.solver(),
        settings,
        &free,
        n,
        0,
        device,
        progress,
    )?;
    Ok(samples)
}

/// Sizes from the user, checked before anything is allocated: every sequence's digits and
/// random state, and its record of idle steps.
fn check_sizes(n: usize, settings: &SampleSettings, ell: usize) -> Result<()> {
    use mdm_prime_core::limits::check_fits;
    let l_ell = settings.seq_len as u128 * ell as u128;
    check_fits("sequences × L·ℓ digits", n as u128 * l_ell, 12)?;
    check_fits(
        "sequences × steps (idle-step record)",
        n as u128 * settings.steps as u128,
        1,
    )?;
    Ok(())
}

/// [`sample`] with one template per sequence (imputation: each sequence completes its own
/// observed image). Fixed sub-tokens never change.
#[allow(clippy::too_many_arguments)]
pub fn sample_each<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    solver: impl Into<Solver>,
    settings: &SampleSettings,
    templates: &[Template],
    replacement: u32,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Sample>, SamplerTiming)> {
    let each = |b: usize| &templates[b];
    model.generate(
        tables,
        solver.into(),
        settings,
        (templates.len(), &each),
        replacement,
        device,
        progress,
    )
}

/// The sampler proper, on `n` sequences whose templates `template(b)` gives (a masked
/// denoiser's [`Denoiser::generate`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    solver: Solver,
    settings: &SampleSettings,
    (n, template): Templates<'_, '_>,
    replacement: u32,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<Sample>, SamplerTiming)> {
    check_sizes(n, settings, tables.codec().ell())?;
    let schedule = &solver.schedule;
    let started = std::time::Instant::now();
    let mut network_s = 0.0;
    let mut head_rows = 0;
    let mut head_s = 0.0;
    let codec = tables.codec();
    let (ell, l, mask) = (codec.ell(), settings.seq_len, codec.mask_id());
    for template in (0..n).map(template) {
        assert_eq!(
            template.fixed.len(),
            l * ell,
            "template length {} ≠ L·ℓ = {}",
            template.fixed.len(),
            l * ell
        );
    }
    let mut seqs: Vec<SeqState> = (0..n)
        .map(|b| SeqState {
            y: template(b)
                .fixed
                .iter()
                .map(|f| f.unwrap_or(mask))
                .collect(),
            rng: StdRng::seed_from_u64(step_seed(settings.seed, b as u64, 7)),
            cache: None,
            nfe: 0,
            idle: 0,
            idle_at: Vec::with_capacity(settings.steps),
        })
        .collect();
    let time_dependent = model.time_conditioned();
    let grid = solver.grid(settings.steps);
    for k in 0..settings.steps {
        let (t, s) = (grid[k], grid[k + 1]);
        let t0 = std::time::Instant::now();
        refresh(model, tables, schedule, settings, &mut seqs, t, device)?;
        network_s += t0.elapsed().as_secs_f64();
        let p_reveal = reveal_probability(schedule, t, s);
        let t0 = std::time::Instant::now();
        let step = Step {
            p: Some(p_reveal),
            t,
        };
        let changes = reveal_all(model, tables, &solver, settings, &mut seqs, step, device)?;
        network_s += t0.elapsed().as_secs_f64() - changes.other_s;
        head_rows += changes.rows;
        head_s += changes.head_s;
        let mut any_changed = false;
        for (seq, &changed) in seqs.iter_mut().zip(&changes.changed) {
            seq.idle += (!changed) as usize;
            seq.idle_at.push(!changed);
            if changed || settings.cache == CacheMode::Off || time_dependent {
                seq.cache = None;
            }
            any_changed |= changed;
        }
        if settings.cache == CacheMode::Batch && any_changed {
            seqs.iter_mut().for_each(|s| s.cache = None);
        }
        progress(k + 1, settings.steps);
    }
    // Noise removal: fill everything still masked from one more prediction.
    let t_end = grid[settings.steps];
    let unfinished: Vec<usize> = (0..n).filter(|&b| seqs[b].y.contains(&mask)).collect();
    if !unfinished.is_empty() {
        let mut rest: Vec<SeqState> = Vec::new();
        let mut idx = Vec::new();
        for (b, seq) in seqs.iter_mut().enumerate() {
            if unfinished.contains(&b) {
                idx.push(b);
                rest.push(std::mem::replace(seq, placeholder()));
            }
        }
        let t0 = std::time::Instant::now();
        refresh(model, tables, schedule, settings, &mut rest, t_end, device)?;
        let step = Step { p: None, t: t_end };
        let changes = reveal_all(model, tables, &solver, settings, &mut rest, step, device)?;
        network_s += t0.elapsed().as_secs_f64() - changes.other_s;
        head_rows += changes.rows;
        head_s += changes.head_s;
        for (b, seq) in idx.into_iter().zip(rest) {
            seqs[b] = seq;
        }
    }
    let timing = SamplerTiming {
        network_s,
        head_s,
        other_s: started.elapsed().as_secs_f64() - network_s,
        head_rows,
    };
    let samples = seqs
        .into_iter()
        .map(|seq| {
            let mut invalid = 0;
            let tokens = seq
                .y
                .chunks_exact(ell)
                .map(|d| match codec.code(d) {
                    Ok(c) if c < codec.vocab_size() as u64 => c as u32,
                    _ => {
                        invalid += 1;
                        replacement
                    }
                })
                .collect();
            Sample {
                tokens,
                invalid_codes: invalid,
                nfe: seq.nfe,
                idle_steps: seq.idle,
                steps: settings.steps,
                idle_at: seq.idle_at,
            }
        })
        .collect();
    Ok((samples, timing))
}

fn placeholder() -> SeqState {
    SeqState {
        y: vec![],
        rng: StdRng::seed_from_u64(0),
        cache: None,
        nfe: 0,
        idle: 0,
        idle_at: vec![],
    }
}

/// Runs the network on every sequence whose cache is stale, `batch_size` at a time.
fn refresh<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    schedule: &Schedule,
    settings: &SampleSettings,
    seqs: &mut [SeqState],
    t: f64,
    device: &Device,
) -> Result<()> {
    let codec = tables.codec();
    let (ell, l) = (codec.ell(), settings.seq_len);
    let stale: Vec<usize> = (0..seqs.len())
        .filter(|&b| seqs[b].cache.is_none())
        .collect();
    for chunk in stale.chunks(settings.batch_size.max(1)) {
        let yt: Vec<i64> = chunk
            .iter()
            .flat_map(|&b| seqs[b].y.iter().map(|&d| d as i64))
            .collect();
        let yt = Tensor::<3, Int>::from_data(TensorData::new(yt, [chunk.len(), l, ell]), device);
        let sigma = model.sigma(schedule, &vec![t; chunk.len()]);
        let h: Vec<f32> = model
            .features(yt, &sigma)
            .try_into_vec_as()
            .map_err(|e| mdm_prime_core::Error::Value(format!("reading features: {e:?}")))?;
        let per_seq = h.len() / chunk.len();
        for (bl, &b) in chunk.iter().enumerate() {
            seqs[b].cache = Some(Cache {
                h: h[bl * per_seq..(bl + 1) * per_seq].to_vec(),
            });
            seqs[b].nfe += 1;
        }
    }
    Ok(())
}

/// What one reverse step did to a set of sequences.
struct Changes {
    /// Whether each sequence changed.
    changed: Vec<bool>,
    /// Seconds spent outside the network (reveal decisions, tempering, draws).
    other_s: f64,
    /// Rows the head ran on.
    rows: usize,
    /// Seconds in the head, filter and log-softmax.
    head_s: f64,
}

/// One reverse step from time `t`: with `p = Some(p)` each masked sub-token is revealed with
/// probability p; with `None` (noise removal) all are.
#[derive(Debug, Clone, Copy)]
struct Step {
    p: Option<f64>,
    t: f64,
}

/// One reverse step of every sequence in `seqs` (their caches must be fresh).
/// Each sequence first decides its reveals from its own generator; then the head, the filter and
/// the log-softmax run once on the rows (sequence, position) that reveal something, from the
/// cached features; then, in position order, each such token x̂ is drawn from its distribution
/// and the revealed digits take x̂'s digits.
fn reveal_all<M: Denoiser>(
    model: &M,
    tables: &PrimeTables,
    solver: &Solver,
    settings: &SampleSettings,
    seqs: &mut [SeqState],
    step: Step,
    device: &Device,
) -> Result<Changes> {
    let p = step.p;
    let temperature = settings.temperature * solver.tempering.at(step.t);
    let started = std::time::Instant::now();
    let codec = tables.codec();
    let (ell, mask, v) = (codec.ell(), codec.mask_id(), codec.vocab_size() as usize);
    let l = settings.seq_len;
    // Reveal decisions: (sequence, position, which digits).
    let mut rows: Vec<(usize, usize, Vec<bool>)> = Vec::new();
    for (b, seq) in seqs.iter_mut().enumerate() {
        for i in 0..l {
            let digits = &seq.y[i * ell..(i + 1) * ell];
            let reveal: Vec<bool> = digits
                .iter()
                .map(|&d| d == mask && p.is_none_or(|p| seq.rng.random::<f64>() < p))
                .collect();
            if reveal.contains(&true) {
                rows.push((b, i, reveal));
            }
        }
    }
    let mut other_s = started.elapsed().as_secs_f64();
    let mut head_s = 0.0;
    // The head on the revealed rows, at most a network batch of positions at a time.
    let mut changed = vec![false; seqs.len()];
    let chunk_rows = settings.batch_size.max(1).saturating_mul(l).max(1);
    for part in rows.chunks(chunk_rows) {
        let n = part.len();
        let mut h = Vec::new();
        let mut yt = Vec::with_capacity(n * ell);
        for (b, i, _) in part {
            let cache = seqs[*b].cache.as_ref().expect("refresh() filled the cache");
            let d = cache.h.len() / l;
            h.extend_from_slice(&cache.h[i * d..(i + 1) * d]);
            yt.extend(seqs[*b].y[i * ell..(i + 1) * ell].iter().map(|&x| x as i64));
        }
        let d = h.len() / n;
        let t_head = std::time::Instant::now();
        let h = Tensor::<3>::from_data(TensorData::new(h, [n, 1, d]), device);
        let yt = Tensor::<3, Int>::from_data(TensorData::new(yt, [n, 1, ell]), device);
        let lp: Vec<f32> = tables
            .log_probs(model.head_logits(h), yt, settings.carry_over)
            .try_into_vec_as()
            .map_err(|e| {
                mdm_prime_core::Error::Value(format!("reading log-probabilities: {e:?}"))
            })?;
        head_s += t_head.elapsed().as_secs_f64();
        let t0 = std::time::Instant::now();
        // The draws, sequences in parallel (each from its own generator, positions in order).
        let first_row = |b: usize| part.partition_point(|r| r.0 < b);
        seqs.par_iter_mut().enumerate().for_each(|(b, seq)| {
            for k in first_row(b)..first_row(b + 1) {
                let (_, i, reveal) = &part[k];
                let row = &lp[k * v..(k + 1) * v];
                let probs = tempered(row, temperature, settings.top_p);
                match solver.draw {
                    DrawMode::Joint => {
                        let x = exponential_race(&probs, settings.precision, &mut seq.rng);
                        let dx = &codec.digit_table()[x * ell..(x + 1) * ell];
                        for j in 0..ell {
                            if reveal[j] {
                                seq.y[i * ell + j] = dx[j];
                            }
                        }
                    }
                    DrawMode::Marginals => {
                        let b = codec.base() as usize;
                        let m = codec
                            .digit_marginals(&probs)
                            .expect("one probability per token of the vocabulary");
                        for j in (0..ell).filter(|&j| reveal[j]) {
                            let m = &m[j * b..(j + 1) * b];
                            let d = exponential_race(m, settings.precision, &mut seq.rng);
                            seq.y[i * ell + j] = d as u32;
                        }
                    }
                }
            }
        });
        part.iter().for_each(|r| changed[r.0] = true);
        other_s += t0.elapsed().as_secs_f64();
    }
    Ok(Changes {
        changed,
        other_s,
        rows: rows.len(),
        head_s,
    })
}

/// One row of log-probabilities (or logits) as unnormalised probabilities, tempered and
/// nucleus-truncated.
pub(crate) fn tempered(row: &[f32], temperature: f64, top_p: f64) -> Vec<f64> {
    let top = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let mut probs: Vec<f64> = row
        .iter()
        .map(|&lp| ((lp as f64 - top) / temperature).exp())
        .collect();
    nucleus(&mut probs, top_p);
    probs
}
