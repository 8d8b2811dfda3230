//! Integration tests of the burn crate: one binary, tiny models (D = 32, 2 layers, L = 16).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod ar;
mod common;
mod faults;
mod fid;
mod fused_unet;
mod gpt2;
mod image;
mod import;
mod model;
mod ops;
mod parallel;
mod resume;
mod rundir;
mod sampler;
mod unet;
