//! Integration tests of the burn crate: one binary, tiny models (D = 32, 2 layers, L = 16).

mod common;
mod model;
mod resume;
mod sampler;
