//! # mdm-prime
//!
//! MDM-Prime on burn: the consistency filter and objectives on tensors, the denoiser, the
//! sampler, training, evaluation and checkpoints. The burn-free math (sub-tokenizer,
//! schedules, forward process) lives in [`mdm_prime_core`], re-exported as [`core`].

pub use mdm_prime_core as core;

pub mod objective;
pub mod subtoken;
