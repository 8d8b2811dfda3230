//! Image-quality metrics that need no network: the Fréchet distance between feature Gaussians
//! (FID), the kernel inception distance (KID), reference statistics as `.npz`, and the FID
//! Inception-v3's weights and input resize ([`inception`]; the network itself runs in the burn
//! crate, `mdm_prime::inception`).

pub mod fid;
pub mod inception;
pub mod kid;
pub mod linalg;
pub mod npz;

pub use fid::{FrechetReference, Gaussian, frechet_distance};
pub use kid::{Kid, kid};
