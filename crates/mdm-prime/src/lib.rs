//! # mdm-prime
//!
//! MDM-Prime on burn: the consistency filter and objectives on tensors, the DiT denoiser,
//! training, evaluation and checkpoints. The burn-free math (sub-tokenizer, schedules, forward
//! process, configs, data) lives in [`mdm_prime_core`], re-exported as [`core`].
//!
//! Data flows one way: tokens → sub-tokens → noising → denoiser → one `log_probs` shared by the
//! loss and the sampler.

pub use mdm_prime_core as core;

pub mod batch;
pub mod checkpoint;
pub mod device;
pub mod error;
pub mod eval;
pub mod genppl;
pub mod gpt2;
pub mod import;
pub mod inception;
pub mod model;
pub mod objective;
pub mod ops;
pub mod optim;
pub mod params;
pub mod profile;
pub mod sampler;
pub mod subtoken;
pub mod train;

pub use error::{Error, Result};
