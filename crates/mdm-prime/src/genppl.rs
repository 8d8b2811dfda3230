//! Generative perplexity (docs/genppl.md, design §8.1): samples scored by a judge language
//! model, with their unigram entropy beside (the guard against repetitive samples).
//!
//! A [`Judge`] is an autoregressive run of this project (`[model] kind = "ar"`) or a GPT-2 in
//! the Hugging Face layout ([`Gpt2`]). Each sample becomes `[BOS] + content` in the judge's
//! tokens ([`Reader::sequence`]); sequences longer than the judge's context are read in windows
//! that share one token ([`windows`]); every content token but EOS is scored given the tokens
//! before it in its window ([`scored`]); the perplexity is token-weighted over all samples
//! ([`GenPplReport`]).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use mdm_prime_core::Tokenizer;
use mdm_prime_core::TokenizerKind;
use mdm_prime_core::config::{DataKind, RunConfig};
use mdm_prime_core::metrics::genppl::{
    GenPplReport, Reader, SampleLine, SampleScore, scored, windows,
};

use crate::checkpoint::{RunDir, load_module};
use crate::gpt2::Gpt2;
use crate::model::{Ar, Denoiser, Network};
use crate::objective::next_token_nll;
use crate::{Error, Result};

/// A language model that scores samples.
pub enum Judge {
    /// A GPT-2 (`dir` holds `model.safetensors` + `config.json`); samples' text is
    /// re-tokenised with the GPT-2 tokenizer.
    Gpt2 {
        model: Box<Gpt2>,
        tokenizer: Tokenizer,
        dir: PathBuf,
    },
    /// An autoregressive run of this project, with its EMA weights; its context is the run's
    /// `data.seq_len`.
    Ar {
        model: Box<Ar>,
        tokenizer: Tokenizer,
        context: usize,
        run: PathBuf,
    },
}

impl Judge {
    /// The judge at `path`: a run directory (`config.toml`: it must be an autoregressive run) or
    /// a folder with a GPT-2's `model.safetensors` and `config.json`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if path.join("config.toml").is_file() {
            return Self::load_run(path, device);
        }
        if !path.is_dir() {
            return Err(Error::checkpoint(
                path,
                "is not a folder: give an autoregressive run directory or a folder with a \
                 GPT-2's model.safetensors and config.json",
            ));
        }
        let model = Gpt2::load(path, device)?;
        let tokenizer = Tokenizer::new(TokenizerKind::Gpt2)?;
        let v = model.config().vocab_size;
        if v < tokenizer.vocab_size() as usize {
            return Err(Error::checkpoint(
                path.join("config.json"),
                format!(
                    "`vocab_size` = {v}, but samples are re-tokenised with the GPT-2 tokenizer \
                     (V = {}): the judge's vocabulary does not match it; use a GPT-2 with the \
                     GPT-2 vocabulary",
                    tokenizer.vocab_size()
                ),
            ));
        }
        Ok(Judge::Gpt2 {
            model: Box::new(model),
            tokenizer,
            dir: path.to_path_buf(),
        })
    }

    fn load_run(path: &Path, device: &Device) -> Result<Self> {
        let run = RunDir::new(path);
        let cfg = RunConfig::load(&run.config(), &[])?;
        if cfg.model.kind() != "ar" {
            return Err(Error::checkpoint(
                path,
                format!(
                    "is a masked diffusion run (`[model] kind = \"{}\"`), which has no \
                     left-to-right likelihood to score samples with: a judge is an \
                     autoregressive run (`kind = \"ar\"`, e.g. configs/cpu-ar.toml) or a GPT-2 \
                     (a folder with model.safetensors and config.json)",
                    cfg.model.kind()
                ),
            ));
        }
        if cfg.data.kind != DataKind::Text {
            return Err(Error::checkpoint(
                path,
                "is an image run; a judge scores text",
            ));
        }
        let codec = cfg.codec()?;
        cfg.check_model_memory()?;
        let net = load_module(Network::init(&cfg, &codec, device)?, &run.ema())?.valid();
        let Network::Ar(model) = net else {
            return Err(Error::config_kind("ar", cfg.model.kind()));
        };
        Ok(Judge::Ar {
            model: Box::new(model),
            tokenizer: Tokenizer::new(cfg.data.tokenizer)?,
            context: cfg.data.seq_len,
            run: path.to_path_buf(),
        })
    }

    /// What the judge is, for reports.
    pub fn describe(&self) -> String {
        match self {
            Judge::Gpt2 { model, dir, .. } => {
                let c = model.config();
                format!(
                    "GPT-2 {} ({} layers, n_embd {}, {} positions, {:.1} M parameters)",
                    dir.display(),
                    c.n_layer,
                    c.n_embd,
                    c.n_positions,
                    c.parameters() as f64 / 1e6
                )
            }
            Judge::Ar {
                tokenizer,
                context,
                run,
                ..
            } => format!(
                "autoregressive run {} ({} tokenizer, context {context})",
                run.display(),
                tokenizer.kind()
            ),
        }
    }

    /// Tokens per window.
    pub fn context(&self) -> usize {
        match self {
            Judge::Gpt2 { model, .. } => model.config().n_positions,
            Judge::Ar { context, .. } => *context,
        }
    }

    /// How the judge reads samples: a GPT-2 re-tokenises text always (as MDLM); a run uses the
    /// samples' tokens when they are in its tokenizer.
    pub fn reader(&self) -> Reader<'_> {
        match self {
            Judge::Gpt2 {
                model, tokenizer, ..
            } => Reader {
                tokenizer,
                use_tokens: false,
                vocab_size: model.config().vocab_size,
                bos: model.config().bos_token_id,
            },
            Judge::Ar { tokenizer, .. } => Reader {
                tokenizer,
                use_tokens: true,
                vocab_size: tokenizer.vocab_size() as usize,
                // The data's BOS (= EOS) as in training blocks; the network puts its own learned
                // start token before it.
                bos: tokenizer.eos(),
            },
        }
    }

    /// The EOS of the judge's tokenizer (context, never scored).
    pub fn eos(&self) -> u32 {
        match self {
            Judge::Gpt2 { tokenizer, .. } | Judge::Ar { tokenizer, .. } => tokenizer.eos(),
        }
    }

    /// Vocabulary size V of the judge's logits.
    pub fn vocab_size(&self) -> usize {
        self.reader().vocab_size
    }

    /// `−log p(w_j | w_0 … w_{j−1})` for j = 1 … W−1 of each window (`host` = `windows` on the
    /// host, B·W ids). The logits of a batch would be B·(W−1)·V floats (1.6 GB for 8 GPT-2
    /// windows), so the head and the fused log-softmax + gather run on chunks of rows of at most
    /// [`HEAD_BYTES`] of logits.
    ///
    /// # Shapes
    /// `windows: [B, W]` → `[B, W − 1]`.
    pub fn window_nll(&self, windows: Tensor<2, Int>, host: &[u32]) -> Tensor<2> {
        let chunk = (HEAD_BYTES / (4 * self.vocab_size())).max(1);
        self.window_nll_in_chunks(windows, host, chunk)
    }

    /// [`Judge::window_nll`] with the head run on `chunk` rows at a time.
    pub fn window_nll_in_chunks(
        &self,
        windows: Tensor<2, Int>,
        host: &[u32],
        chunk: usize,
    ) -> Tensor<2> {
        let [b, w] = windows.dims();
        let targets: Vec<u32> = host
            .chunks_exact(w)
            .flat_map(|r| &r[1..])
            .copied()
            .collect();
        let h =
            match self {
                // Row j of the hidden states predicts token j + 1.
                Judge::Gpt2 { model, .. } => model.hidden(windows).narrow(1, 0, w - 1),
                // Row j reads [start, w_0 … w_{j−1}] and predicts w_j.
                Judge::Ar { model, .. } => model
                    .features(model.inputs(windows), &vec![0.0; b])
                    .narrow(1, 1, w - 1),
            };
        let head = |h: Tensor<3>| match self {
            Judge::Gpt2 { model, .. } => model.head(h),
            Judge::Ar { model, .. } => model.head_logits(h),
        };
        let (rows, d) = (b * (w - 1), h.dims()[2]);
        let flat = h.reshape([1, rows, d]);
        let chunk = chunk.max(1);
        let parts: Vec<Tensor<2>> = (0..rows)
            .step_by(chunk)
            .map(|r0| {
                let n = chunk.min(rows - r0);
                next_token_nll(head(flat.clone().narrow(1, r0, n)), &targets[r0..r0 + n])
            })
            .collect();
        Tensor::cat(parts, 1).reshape([b, w - 1])
    }
}

/// The most logits [`Judge::window_nll`] holds at once, in bytes.
pub const HEAD_BYTES: usize = 256 << 20;

/// Scores `samples` (read from `path`, which errors name) under `judge`, `batch_size` windows
/// at a time; `progress(done, total)` counts windows.
pub fn evaluate(
    judge: &Judge,
    path: &Path,
    samples: &[SampleLine],
    batch_size: usize,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GenPplReport> {
    let reader = judge.reader();
    let seqs = samples
        .iter()
        .map(|s| reader.sequence(path, s))
        .collect::<mdm_prime_core::Result<Vec<_>>>()?;
    let tokens: Vec<&[u32]> = seqs.iter().map(|(s, _)| s.as_slice()).collect();
    let nll = sequence_nll(judge, &tokens, batch_size, reader.bos, device, progress)?;
    let eos = judge.eos();
    let per_sample = seqs
        .iter()
        .zip(nll)
        .enumerate()
        .map(|(i, ((seq, source), nll))| SampleScore::new(i, *source, seq, eos, nll))
        .collect();
    Ok(GenPplReport::new(per_sample))
}

/// Σ over the scored positions of each judge sequence of `−log p_judge`, windows of the
/// judge's context batched by length (`pad`, a valid id, fills the shorter rows; their
/// positions are masked out). One upload of ids and mask and one read of B sums per batch.
pub fn sequence_nll(
    judge: &Judge,
    seqs: &[&[u32]],
    batch_size: usize,
    pad: u32,
    device: &Device,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<f64>> {
    let eos = judge.eos();
    let mut all: Vec<(usize, std::ops::Range<usize>)> = seqs
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            windows(s.len(), judge.context())
                .into_iter()
                .map(move |w| (i, w))
        })
        .collect();
    // Longest first, so that a batch holds windows of about one length.
    all.sort_by_key(|(_, w)| std::cmp::Reverse(w.len()));
    let mut nll = vec![0.0f64; seqs.len()];
    let mut done = 0;
    for batch in all.chunks(batch_size.max(1)) {
        let w = batch.iter().map(|(_, r)| r.len()).max().unwrap_or(2);
        let b = batch.len();
        let mut ids = vec![pad; b * w];
        let mut mask = vec![0.0f32; b * (w - 1)];
        for (row, (i, r)) in batch.iter().enumerate() {
            let s = seqs[*i];
            ids[row * w..row * w + r.len()].copy_from_slice(&s[r.clone()]);
            for j in scored(s, eos).filter(|j| r.start < *j && *j < r.end) {
                mask[row * (w - 1) + (j - r.start - 1)] = 1.0;
            }
        }
        let ids_t = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&x| x as i64).collect(), [b, w]),
            device,
        );
        let mask_t = Tensor::<2>::from_data(TensorData::new(mask, [b, w - 1]), device);
        let sums: Vec<f32> = (judge.window_nll(ids_t, &ids) * mask_t)
            .sum_dim(1)
            .try_into_vec_as()
            .map_err(|e| mdm_prime_core::Error::Value(format!("reading NLL sums: {e:?}")))?;
        for ((i, _), s) in batch.iter().zip(sums) {
            nll[*i] += s as f64;
        }
        done += b;
        progress(done, all.len());
    }
    Ok(nll)
}
