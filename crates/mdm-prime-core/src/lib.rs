//! # mdm-prime-core
//!
//! The burn-free core of MDM-Prime (masked diffusion with partial masking,
//! arXiv 2505.18495): the sub-tokenizer, noise schedules and time sampling, the forward
//! process, tokenizers, configs and data. Everything here is plain Rust on slices and builds
//! and tests in seconds; the tensor code in the `mdm-prime` crate is built from these tables.
//!
//! ## Glossary (one name per concept, in paper, code, config and shapes)
//!
//! | paper | code / config | shape letter |
//! |---|---|---|
//! | C (classes) | `vocab_size` | V |
//! | L | `seq_len` | L |
//! | ℓ | `ell` (the reference calls it `target_length`) | — |
//! | b | `base` (derived, never configured) | — |
//! | x₀, y₀, y_t | `x0`, `y0`, `yt` | `[B, L]`, `[B, L, ℓ]` |
//! | α_t | `alpha` | — |
//!
//! Time convention: t = 0 clean, t = 1 fully masked; `α_t` is the unmasked probability.
//! Section numbers (design §N) refer to `docs/design.md`, the method in this project's words.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod flops;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzz;
pub mod gpt2;
pub mod import;
pub mod limits;
pub mod metrics;
pub mod noise;
pub mod objective;
pub mod observe;
pub mod plot;
pub mod rng;
pub mod sampling;
pub mod schedule;
pub mod solver;
pub mod subtoken;
pub mod sweep;
pub mod template;
pub mod tokenizer;
pub mod torch;

pub use error::{Error, Result};
pub use objective::Objective;
pub use schedule::Schedule;
pub use subtoken::Codec;
pub use tokenizer::{Tokenizer, TokenizerKind};
