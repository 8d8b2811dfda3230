//! Image-quality metrics that need no network: the Fréchet distance between feature Gaussians
//! (FID), the kernel inception distance (KID), and reference statistics as `.npz`. The
//! Inception-v3 feature extractor that feeds them lives in the burn crate.

pub mod fid;
pub mod kid;
pub mod linalg;
pub mod npz;

pub use fid::{Gaussian, frechet_distance};
pub use kid::{Kid, kid};
