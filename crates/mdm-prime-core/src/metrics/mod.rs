//! Image-quality metrics that need no network: the Fréchet distance between feature Gaussians
//! (FID), the kernel inception distance (KID), and reference statistics as `.npz`. The
//! Inception-v3 feature extractor that will feed them (issue #11) is not written yet; its
//! weights are read by [`crate::torch`].

pub mod fid;
pub mod kid;
pub mod linalg;
pub mod npz;

pub use fid::{Gaussian, frechet_distance};
pub use kid::{Kid, kid};
