//! The burn-free half of `mdm-prime genppl` (docs/genppl.md): reading a samples file, turning
//! each sample into the token sequence a judge scores, cutting long sequences into the judge's
//! context windows, and the report.
//!
//! **What is scored.** A sample's content is what its `text` shows (by default the sequence
//! after the leading BOS, cut at the first EOS). The judge reads `[BOS] + content`; every content
//! token except the judge's EOS is scored, given the tokens before it. Generative perplexity is
//! `exp(Σ NLL / Σ scored tokens)` over all samples: token-weighted, as MDLM's
//! `compute_generative_perplexity` (a torchmetrics mean weighted by the token mask).

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{mean_stderr, unigram_entropy};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The fields of one `mdm-prime sample` JSON line that genppl reads (others are ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SampleLine {
    /// The line of the file (1-based), for errors.
    #[serde(skip)]
    pub line: usize,
    pub text: Option<String>,
    /// All L token ids of the sample, with the leading BOS and anything after the first EOS.
    pub tokens: Option<Vec<u32>>,
    /// The tokenizer of `tokens` (`bytes`, `gpt2`); files written before this field existed
    /// have none, and then `text` is used.
    pub tokenizer: Option<String>,
    /// Whether `text` stops at the first EOS (`sample` without `--no-truncate`; the default for
    /// files written before this field existed).
    #[serde(default = "truncated_default")]
    pub truncated: bool,
}

fn truncated_default() -> bool {
    true
}

/// The samples of a JSON-lines file (blank lines skipped). A missing or empty file, or a line
/// that is not a JSON object, is an error naming the file and the line.
pub fn read_samples(path: &Path) -> Result<Vec<SampleLine>> {
    let bytes = crate::fsutil::read_input(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::data(
            path,
            format!("is not UTF-8 text ({e}); a samples file is JSON lines"),
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut sample: SampleLine = serde_json::from_str(line).map_err(|e| {
            Error::data(
                path,
                format!(
                    "line {} is not a sample ({e}); each line is a JSON object with `text` \
                     and/or `tokens`, as `mdm-prime sample` writes",
                    i + 1
                ),
            )
        })?;
        sample.line = i + 1;
        out.push(sample);
    }
    if out.is_empty() {
        return Err(Error::data(
            path,
            "holds no samples; write some with `mdm-prime sample --run RUN --out FILE`",
        ));
    }
    Ok(out)
}

/// Where a judge sequence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The line's `tokens`, already in the judge's tokenizer.
    Tokens,
    /// The line's `text`, re-tokenised with the judge's tokenizer.
    Text,
}

/// How a judge reads samples.
pub struct Reader<'a> {
    /// The judge's tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// Use a line's `tokens` when it names the judge's tokenizer (an autoregressive run of this
    /// project); otherwise, and always when false (a GPT-2 judge, as MDLM re-tokenises), the
    /// line's `text` is re-tokenised.
    pub use_tokens: bool,
    /// The judge's vocabulary: a token id at or above it is an error.
    pub vocab_size: usize,
    /// The token every judge sequence starts with.
    pub bos: u32,
}

impl Reader<'_> {
    /// The judge sequence of sample `s` (errors name its line of the file at `path`):
    /// `[BOS] + content`, and where the content came from.
    ///
    /// From `tokens`: one leading EOS (the sample's BOS) is dropped and, when the line's text
    /// was truncated, everything from the first EOS on, so that the content is what `text`
    /// shows. From `text`: [`Tokenizer::encode_with_eos`].
    pub fn sequence(&self, path: &Path, s: &SampleLine) -> Result<(Vec<u32>, Source)> {
        let tok = self.tokenizer;
        let eos = tok.eos();
        let same = s.tokenizer.as_deref() == Some(&tok.kind().to_string());
        let (content, source) = match (&s.tokens, &s.text) {
            (Some(ids), _) if self.use_tokens && same => {
                let body = ids.strip_prefix(&[eos]).unwrap_or(ids);
                let body = match body.iter().position(|&x| x == eos) {
                    Some(end) if s.truncated => &body[..end],
                    _ => body,
                };
                (body.to_vec(), Source::Tokens)
            }
            (_, Some(text)) => (tok.encode_with_eos(text)?, Source::Text),
            _ => {
                return Err(Error::data(
                    path,
                    format!(
                        "line {}: the sample has no `text`{}; the judge reads text in its own \
                         tokenizer ({})",
                        s.line,
                        if s.tokens.is_some() {
                            " and its `tokens` are not marked as the judge's tokenizer"
                        } else {
                            ""
                        },
                        tok.kind()
                    ),
                ));
            }
        };
        if let Some(&bad) = content.iter().find(|&&x| x as usize >= self.vocab_size) {
            return Err(Error::data(
                path,
                format!(
                    "line {}: token id {bad} is not below the judge's vocabulary size {}: \
                     the judge's vocabulary does not match the {} tokenizer (V = {})",
                    s.line,
                    self.vocab_size,
                    tok.kind(),
                    tok.vocab_size()
                ),
            ));
        }
        let mut seq = Vec::with_capacity(content.len() + 1);
        seq.push(self.bos);
        seq.extend(content);
        if scored(&seq, eos).next().is_none() {
            return Err(Error::data(
                path,
                format!(
                    "line {}: the sample has no tokens to score (its text is empty{}); \
                     remove it or sample again",
                    s.line,
                    if seq.len() > 1 { " but for EOS" } else { "" }
                ),
            ));
        }
        Ok((seq, source))
    }
}

/// The positions of a judge sequence that are scored: every one after the first (the BOS,
/// context only) whose token is not `eos` (MDLM's mask: EOS is context, not scored).
pub fn scored(seq: &[u32], eos: u32) -> impl Iterator<Item = usize> + '_ {
    (1..seq.len()).filter(move |&j| seq[j] != eos)
}

/// The windows a judge of context `n` reads a sequence of `m` tokens in: `[k(n−1), k(n−1)+n)`
/// cut at m, for k = 0, 1, … while the window predicts something. Consecutive windows share
/// one token, so every position ≥ 1 is predicted exactly once, from the tokens before it in its
/// window (at most n − 1 of them; the context restarts at each window).
///
/// # Panics
/// When `n < 2` (a window must hold a token and its context).
pub fn windows(m: usize, n: usize) -> Vec<Range<usize>> {
    assert!(n >= 2, "a context of {n} tokens predicts nothing");
    (0..)
        .map(|k| k * (n - 1))
        .take_while(|&start| start + 1 < m)
        .map(|start| start..(start + n).min(m))
        .collect()
}

/// One sample's scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleScore {
    /// Index of the sample in the file (0-based, blank lines not counted).
    pub index: usize,
    pub source: Source,
    /// Scored tokens.
    pub tokens: usize,
    /// Σ −log p_judge(token | the tokens before it in its window), nats.
    pub nll: f64,
    /// [`unigram_entropy`] of the scored tokens, nats.
    pub entropy: f64,
}

impl SampleScore {
    /// The scores of judge sequence `seq` whose scored tokens sum to `nll`.
    pub fn new(index: usize, source: Source, seq: &[u32], eos: u32, nll: f64) -> Self {
        let tokens: Vec<u32> = scored(seq, eos).map(|j| seq[j]).collect();
        SampleScore {
            index,
            source,
            tokens: tokens.len(),
            nll,
            entropy: unigram_entropy(&tokens),
        }
    }
}

/// What `genppl` reports.
#[derive(Debug, Clone, Serialize)]
pub struct GenPplReport {
    /// `exp(nll_per_token)`.
    pub gen_ppl: f64,
    /// `Σ nll / Σ tokens` over all samples (token-weighted).
    pub nll_per_token: f64,
    pub scored_tokens: u64,
    pub samples: usize,
    /// The mean over samples of each sample's NLL per token, and its standard error.
    pub mean_sample_nll: f64,
    pub mean_sample_nll_stderr: f64,
    /// The mean over samples of [`unigram_entropy`], and its standard error.
    pub entropy: f64,
    pub entropy_stderr: f64,
    pub per_sample: Vec<SampleScore>,
}

impl GenPplReport {
    /// Aggregates per-sample scores (at least one, each with at least one token).
    pub fn new(per_sample: Vec<SampleScore>) -> Self {
        let tokens: usize = per_sample.iter().map(|s| s.tokens).sum();
        let nll: f64 = per_sample.iter().map(|s| s.nll).sum();
        let per_token: Vec<f64> = per_sample.iter().map(|s| s.nll / s.tokens as f64).collect();
        let entropies: Vec<f64> = per_sample.iter().map(|s| s.entropy).collect();
        let (mean_sample_nll, mean_sample_nll_stderr) = mean_stderr(&per_token);
        let (entropy, entropy_stderr) = mean_stderr(&entropies);
        let nll_per_token = nll / tokens as f64;
        GenPplReport {
            gen_ppl: nll_per_token.exp(),
            nll_per_token,
            scored_tokens: tokens as u64,
            samples: per_sample.len(),
            mean_sample_nll,
            mean_sample_nll_stderr,
            entropy,
            entropy_stderr,
            per_sample,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenizerKind;

    #[test]
    fn windows_predict_every_position_once() {
        assert!(windows(0, 4).is_empty());
        assert!(windows(1, 4).is_empty());
        assert_eq!(windows(2, 4), vec![0..2]);
        assert_eq!(windows(4, 4), vec![0..4]);
        assert_eq!(windows(5, 3), vec![0..3, 2..5]);
        assert_eq!(windows(6, 3), vec![0..3, 2..5, 4..6]);
        assert_eq!(windows(3, 2), vec![0..2, 1..3]);
        // GPT-2: 1024 positions; BOS + 2047 tokens = two full windows and one of 2 tokens.
        assert_eq!(windows(2048, 1024), vec![0..1024, 1023..2047, 2046..2048]);
        for (m, n) in [(1usize, 2usize), (7, 2), (100, 7), (1025, 1024)] {
            let mut predicted: Vec<usize> = windows(m, n)
                .into_iter()
                .flat_map(|w| w.start + 1..w.end)
                .collect();
            predicted.dedup();
            assert_eq!(predicted, (1..m).collect::<Vec<_>>(), "m = {m}, n = {n}");
            assert!(windows(m, n).iter().all(|w| w.len() <= n));
        }
    }

    fn reader(tokenizer: &Tokenizer, use_tokens: bool, bos: u32, vocab_size: usize) -> Reader<'_> {
        Reader {
            tokenizer,
            use_tokens,
            vocab_size,
            bos,
        }
    }

    fn line(json: &str) -> SampleLine {
        SampleLine {
            line: 4,
            ..serde_json::from_str(json).unwrap()
        }
    }

    #[test]
    fn sequences_from_tokens_and_text() {
        let bytes = Tokenizer::new(TokenizerKind::Bytes).unwrap();
        let path = Path::new("s.jsonl");
        let ar = reader(&bytes, true, 0, 256);
        // sample's tokens: BOS, "ab", EOS, "c"; text "ab" (cut at the EOS).
        let s = line(
            r#"{"text": "ab", "tokens": [0, 97, 98, 0, 99], "tokenizer": "bytes", "truncated": true}"#,
        );
        assert_eq!(
            ar.sequence(path, &s).unwrap(),
            (vec![0, 97, 98], Source::Tokens)
        );
        let s = line(
            r#"{"text": "ab\u0000c", "tokens": [0, 97, 98, 0, 99], "tokenizer": "bytes", "truncated": false}"#,
        );
        let (seq, src) = ar.sequence(path, &s).unwrap();
        assert_eq!((seq.clone(), src), (vec![0, 97, 98, 0, 99], Source::Tokens));
        // The EOS inside is context, not scored.
        assert_eq!(scored(&seq, 0).collect::<Vec<_>>(), vec![1, 2, 4]);
        // No tokenizer named (an older file), or another one: the text is re-tokenised.
        let s = line(r#"{"text": "ab\u0000c", "tokens": [0, 9000]}"#);
        assert_eq!(
            ar.sequence(path, &s).unwrap(),
            (vec![0, 97, 98, 0, 99], Source::Text)
        );
        let s = line(r#"{"text": "hé", "tokens": [50256, 9000], "tokenizer": "gpt2"}"#);
        assert_eq!(
            ar.sequence(path, &s).unwrap(),
            (vec![0, 104, 0xc3, 0xa9], Source::Text)
        );
        // A GPT-2 judge re-tokenises always, `<|endoftext|>` being EOS.
        let gpt2 = Tokenizer::new(TokenizerKind::Gpt2).unwrap();
        let judge = reader(&gpt2, false, 50256, 50257);
        let s =
            line(r#"{"text": "Hello<|endoftext|> world", "tokens": [1, 2], "tokenizer": "gpt2"}"#);
        assert_eq!(
            judge.sequence(path, &s).unwrap(),
            (vec![50256, 15496, 50256, 995], Source::Text)
        );
    }

    #[test]
    fn unusable_samples_are_named() {
        let gpt2 = Tokenizer::new(TokenizerKind::Gpt2).unwrap();
        let path = Path::new("dir/s.jsonl");
        let tiny = reader(&gpt2, false, 96, 97);
        let e = tiny
            .sequence(path, &line(r#"{"text": "Hello"}"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 4: token id 15496") && e.contains("vocabulary"),
            "{e}"
        );
        let judge = reader(&gpt2, true, 50256, 50257);
        for (json, needle) in [
            (
                r#"{"text": ""}"#,
                "line 4: the sample has no tokens to score",
            ),
            (r#"{"text": "<|endoftext|>"}"#, "but for EOS"),
            (
                r#"{"tokens": [0, 1], "tokenizer": "bytes"}"#,
                "not marked as the judge's tokenizer",
            ),
            (
                r#"{"nfe": 3}"#,
                "line 4: the sample has no `text`; the judge reads text in its own tokenizer (gpt2)",
            ),
            (
                r#"{"tokens": [50256], "tokenizer": "gpt2"}"#,
                "no tokens to score",
            ),
        ] {
            let e = judge.sequence(path, &line(json)).unwrap_err().to_string();
            assert!(
                e.contains("dir/s.jsonl") && e.contains(needle),
                "{json}: {e}"
            );
        }
    }

    #[test]
    fn samples_files_and_their_errors() {
        let dir = std::env::temp_dir().join(format!("mdm-prime-genppl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.jsonl");
        std::fs::write(&f, "{\"text\": \"a\"}\n\n{\"text\": \"b\", \"nfe\": 2}\n").unwrap();
        let s = read_samples(&f).unwrap();
        assert_eq!((s.len(), s[0].line, s[1].line), (2, 1, 3));
        assert_eq!(s[1].text.as_deref(), Some("b"));
        assert!(s[1].truncated);
        std::fs::write(&f, "\n").unwrap();
        assert!(
            read_samples(&f)
                .unwrap_err()
                .to_string()
                .contains("holds no samples")
        );
        std::fs::write(&f, "{\"text\": \"a\"}\nnot json\n").unwrap();
        let e = read_samples(&f).unwrap_err().to_string();
        assert!(e.contains("line 2 is not a sample"), "{e}");
        let e = read_samples(&dir.join("missing.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.jsonl") && e.contains("cannot read"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn report_is_token_weighted() {
        // Sample 0: 2 tokens, NLL 1 + 3; sample 1: 1 token, NLL 2.
        let a = SampleScore::new(0, Source::Text, &[9, 1, 2], 0, 4.0);
        let b = SampleScore::new(1, Source::Text, &[9, 5, 0], 0, 2.0);
        assert_eq!((a.tokens, b.tokens), (2, 1));
        assert!((a.entropy - std::f64::consts::LN_2).abs() < 1e-12 && b.entropy == 0.0);
        let r = GenPplReport::new(vec![a, b]);
        // Token-weighted: (4 + 2) / 3 = 2; per sample: (2 + 2) / 2 = 2, s.e. 0.
        assert_eq!((r.nll_per_token, r.scored_tokens, r.samples), (2.0, 3, 2));
        assert!((r.gen_ppl - 2f64.exp()).abs() < 1e-12);
        assert_eq!((r.mean_sample_nll, r.mean_sample_nll_stderr), (2.0, 0.0));
        // Entropies ln 2 and 0: mean ln2/2, s.e. = sd/√2 = (ln2/√2)/√2 = ln2/2.
        let ln2 = std::f64::consts::LN_2;
        assert!(
            (r.entropy - ln2 / 2.0).abs() < 1e-12 && (r.entropy_stderr - ln2 / 2.0).abs() < 1e-12
        );
        let c = SampleScore::new(2, Source::Text, &[9, 1, 1, 1], 0, 3.0);
        let r = GenPplReport::new(vec![c, SampleScore::new(3, Source::Text, &[9, 1], 0, 3.0)]);
        // (3 + 3) / 4 = 1.5 token-weighted; the per-sample mean is (1 + 3) / 2 = 2.
        assert_eq!((r.nll_per_token, r.mean_sample_nll), (1.5, 2.0));
    }
}
