//! [`Dataset`]: blocks of `L` tokens split into train and validation, and [`load_dataset`], the
//! text pipeline that builds one from a corpus (images:
//! [`load_image_dataset`](super::load_image_dataset)).

use std::borrow::Cow;
use std::path::Path;

use super::blocks::{check_seq_len, check_val_fraction, split_blocks, wrap_blocks};
use super::corpus::CorpusSource;
use super::image::{ImageShape, flip_horizontal};
use super::tokens::load_tokens;
use super::unigram::unigram_nll;
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Blocks of `seq_len` tokens, train and validation splits. For images a block is one image
/// (`L = H·W·C` pixel tokens in (H, W, C) order, `V = 256`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// L, tokens per block (BOS and EOS included).
    pub seq_len: usize,
    /// V of the tokenizer.
    pub vocab_size: u32,
    /// `n_train · L` ids, flat, block after block.
    pub train: Vec<u32>,
    /// `n_val · L` ids, flat: the last blocks of the corpus.
    pub val: Vec<u32>,
    /// How many documents the corpus has (images: how many images the two splits hold).
    pub n_documents: usize,
    /// Length N of the token stream before wrapping (one EOS per document included; images:
    /// `train.len() + val.len()`).
    pub n_tokens: usize,
    /// [`CorpusSource::describe`] of the corpus (images: `ImageSource::describe`).
    pub source: String,
    /// Whether the token stream was read from the cache instead of tokenised.
    pub from_cache: bool,
    /// The shape of every block when the data are images; `None` for text.
    pub image: Option<ImageShape>,
}

impl Dataset {
    /// Number of training blocks.
    pub fn n_train(&self) -> usize {
        self.train.len().checked_div(self.seq_len).unwrap_or(0)
    }

    /// Number of validation blocks.
    pub fn n_val(&self) -> usize {
        self.val.len().checked_div(self.seq_len).unwrap_or(0)
    }

    /// Training block `i` (`L` ids). Panics when `i ≥ n_train()`, like slice indexing.
    pub fn train_block(&self, i: usize) -> &[u32] {
        &self.train[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Validation block `i` (`L` ids). Panics when `i ≥ n_val()`, like slice indexing.
    pub fn val_block(&self, i: usize) -> &[u32] {
        &self.val[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Training block `i` as a training example: mirrored left to right
    /// ([`flip_horizontal`]) when `flip` is set and the data are images, else borrowed
    /// unchanged (text is never flipped). Panics when `i ≥ n_train()`, like slice indexing.
    pub fn train_example(&self, i: usize, flip: bool) -> Cow<'_, [u32]> {
        let block = self.train_block(i);
        match self.image {
            Some(shape) if flip => Cow::Owned(flip_horizontal(block, shape)),
            _ => Cow::Borrowed(block),
        }
    }

    /// [`unigram_nll`] of the validation blocks under the training blocks' frequencies.
    pub fn unigram_baseline(&self) -> f64 {
        unigram_nll(&self.train, &self.val, self.vocab_size)
    }
}

/// Tokenise (or read from the cache, see [`load_tokens`]), wrap ([`wrap_blocks`]) and split
/// ([`split_blocks`]). `seq_len` (≥ 3) and `val_fraction` (in (0, 1)) are checked before any
/// file is read.
pub fn load_dataset(
    source: &CorpusSource,
    tokenizer: &Tokenizer,
    seq_len: usize,
    val_fraction: f64,
    cache_dir: Option<&Path>,
) -> Result<Dataset> {
    check_seq_len(seq_len)?;
    check_val_fraction(val_fraction)?;
    let stream = load_tokens(source, tokenizer, cache_dir)?;
    let n_tokens = stream.tokens.len();
    let blocks = wrap_blocks(&stream.tokens, seq_len, tokenizer.eos());
    drop(stream.tokens);
    let (train, val) = split_blocks(blocks, seq_len, val_fraction, n_tokens)?;
    Ok(Dataset {
        seq_len,
        vocab_size: tokenizer.vocab_size(),
        train,
        val,
        n_documents: stream.n_documents,
        n_tokens,
        source: source.describe(),
        from_cache: stream.from_cache,
        image: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::{TempDir, err_text};
    use crate::data::{EMBEDDED_BYTES, EMBEDDED_TEXT};
    use crate::tokenizer::TokenizerKind;
    use std::fs;

    #[test]
    fn error_bad_seq_len_and_val_fraction() {
        let dir = TempDir::new("args");
        let p = dir.write("tiny.txt", b"0123456789");
        let src = CorpusSource::TextFile(p);
        let t = Tokenizer::Bytes;
        // 11 tokens (10 bytes + EOS); L = 8 makes one block of 6 + 2.
        let msg = err_text(load_dataset(&src, &t, 8, 0.1, None));
        assert!(msg.contains("seq_len"), "{msg}");
        assert!(
            msg.contains(
                "sequence length 8 is longer than the data allows: the corpus has 11 tokens, \
                 which makes 1 blocks of 8"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("use a smaller seq_len or a larger corpus"),
            "{msg}"
        );
        let d = load_dataset(&src, &t, 7, 0.1, None).unwrap(); // 2 blocks of 5 + 2
        assert_eq!((d.n_train(), d.n_val(), d.n_tokens), (1, 1, 11));
        for l in [0, 1, 2] {
            let msg = err_text(load_dataset(&src, &t, l, 0.1, None));
            assert!(
                msg.contains("seq_len") && msg.contains("at least 3"),
                "{msg}"
            );
        }
        for f in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            let msg = err_text(load_dataset(&src, &t, 4, f, None));
            assert!(
                msg.contains("val_fraction") && msg.contains("(0, 1)"),
                "{msg}"
            );
        }
        assert!(split_blocks(vec![0; 9], 3, 0.0, 9).is_err());
    }

    #[test]
    fn json_lines_loading() {
        let dir = TempDir::new("jsonl");
        let content = "{\"text\": \"Call me\", \"id\": 1}\r\n\n{\"text\": \"Ishmael.\"}\n\
                       {\"meta\": null, \"text\": \"\\u00e9\"}";
        let p = dir.write("c.jsonl", content.as_bytes());
        let src = CorpusSource::parse(p.to_str().unwrap()).unwrap();
        let docs = src.read_documents().unwrap();
        assert_eq!(docs, vec!["Call me", "Ishmael.", "é"]);
        let d = load_dataset(&src, &Tokenizer::Bytes, 6, 0.3, None).unwrap();
        // 7 + 8 + 2 bytes + 3 EOS = 20 tokens; chunks of 4 → 5 blocks; ⌈1.5⌉ = 2 validation.
        assert_eq!(
            (d.n_documents, d.n_tokens, d.n_train(), d.n_val()),
            (3, 20, 3, 2)
        );
        assert_eq!(
            d.train_block(0),
            &[0, b'C' as u32, b'a' as u32, b'l' as u32, b'l' as u32, 0]
        );
        assert_eq!(
            d.train_block(1),
            &[0, b' ' as u32, b'm' as u32, b'e' as u32, 0, 0]
        );
        assert_eq!(d.val_block(1), &[0, 0, 0xc3, 0xa9, 0, 0]);
        assert!(!d.from_cache);
        assert!(d.source.contains("c.jsonl"));
        assert_eq!(d.image, None);
        // Text is never flipped.
        assert_eq!(d.train_example(0, true), d.train_block(0));
    }

    #[test]
    fn folder_loading() {
        let dir = TempDir::new("folder");
        dir.write("b.txt", b"second");
        dir.write("a.txt", b"first");
        dir.write("c.md", b"ignored");
        fs::create_dir(dir.0.join("z.txt")).unwrap();
        let src = CorpusSource::parse(dir.0.to_str().unwrap()).unwrap();
        assert_eq!(src.read_documents().unwrap(), vec!["first", "second"]);
        let d = load_dataset(&src, &Tokenizer::Bytes, 4, 0.5, None).unwrap();
        // "first" EOS "second" EOS: 13 tokens, chunks of 2 → 6 blocks, 3 validation.
        assert_eq!(
            (d.n_documents, d.n_tokens, d.n_train(), d.n_val()),
            (2, 13, 3, 3)
        );
        assert_eq!(d.train_block(2), &[0, b't' as u32, 0, 0]);
    }

    #[test]
    fn embedded_corpus_with_bytes() {
        assert_eq!(EMBEDDED_TEXT.len(), EMBEDDED_BYTES);
        assert!(
            EMBEDDED_TEXT.starts_with("CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years ago")
        );
        let t = Tokenizer::new(TokenizerKind::Bytes).unwrap();
        let d = load_dataset(&CorpusSource::Embedded, &t, 1024, 0.05, None).unwrap();
        assert_eq!((d.n_documents, d.n_tokens), (1, 1_204_997 + 1));
        // ⌊1,204,998 / 1022⌋ = 1179 blocks; ⌈1179 × 0.05⌉ = ⌈58.95⌉ = 59 validation.
        assert_eq!((d.n_train(), d.n_val()), (1120, 59));
        let b0 = d.train_block(0);
        assert_eq!((b0.len(), b0[0], b0[1023]), (1024, 0, 0));
        assert_eq!(
            &b0[1..21],
            "CHAPTER 1. Loomings."
                .bytes()
                .map(u32::from)
                .collect::<Vec<_>>()
        );
        let unigram = d.unigram_baseline();
        assert!(unigram > 2.0 && unigram < 4.0, "{unigram}"); // English bytes: about 3 nats
    }

    /// Times print with
    /// `cargo test -p mdm-prime-core data::dataset::tests::embedded_gpt2 -- --nocapture`.
    #[test]
    fn embedded_gpt2_token_count_and_timing() {
        let start = std::time::Instant::now();
        let t = Tokenizer::new(TokenizerKind::Gpt2).unwrap();
        let build = start.elapsed();
        let dir = TempDir::new("gpt2");
        let start = std::time::Instant::now();
        let d = load_dataset(&CorpusSource::Embedded, &t, 1024, 0.05, Some(&dir.0)).unwrap();
        let first = start.elapsed();
        assert!(!d.from_cache);
        assert_eq!(d.n_tokens, 317_756 + 1);
        let start = std::time::Instant::now();
        let again = load_dataset(&CorpusSource::Embedded, &t, 1024, 0.05, Some(&dir.0)).unwrap();
        let cached = start.elapsed();
        assert!(again.from_cache);
        assert_eq!(again.train, d.train);
        println!(
            "gpt2 Moby-Dick: {} tokens, {} train + {} val blocks; tokenizer {build:?}, first \
             load {first:?}, cached {cached:?}; unigram {:.4} nats/token",
            d.n_tokens,
            d.n_train(),
            d.n_val(),
            d.unigram_baseline()
        );
    }
}
