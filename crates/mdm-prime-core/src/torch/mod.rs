//! A safe reader of PyTorch archives: `torch.save` zips (state dicts, Lightning `.ckpt`,
//! `.pth` training checkpoints) and TorchScript `.pt` zips (`torch.jit.save`).
//!
//! - [`pickle`]: an allow-list pickle reader that never imports or calls anything; a global
//!   outside the list (`os.system`, `builtins.eval`, an unknown class) is an error naming it.
//! - [`value`]: what a pickle becomes, a [`Value`] tree with tensors as [`TensorRef`]s.
//! - [`archive`]: [`TorchArchive`] finds `<root>/data.pkl`, reads it, and reads a tensor's
//!   storage `<root>/data/<key>` only when asked ([`TorchArchive::tensor_f32`]).
//!
//! ```no_run
//! use mdm_prime_core::torch::{AllowList, TorchArchive};
//! let ckpt = TorchArchive::open("last.ckpt")?;
//! for (name, t) in ckpt.value()["state_dict"].named_tensors() {
//!     let values = ckpt.tensor_f32(t)?;
//!     println!("{name} {:?} {}", t.shape, values.len());
//! }
//! let ema = &ckpt.value()["ema"]["shadow_params"];
//! // Config classes are refused unless the caller names them as plain data:
//! let ckpt = TorchArchive::open_with("last.ckpt", &AllowList::new().class("my.Config"))?;
//! # Ok::<(), mdm_prime_core::Error>(())
//! ```
//!
//! The formats: `torch/serialization.py` (`_save`: `data.pkl`, `data/<key>`, `byteorder`,
//! persistent ids `('storage', type, key, location, numel)`) and `torch/_utils.py`
//! (`_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`), PyTorch 2.x.

pub mod archive;
pub mod pickle;
pub mod value;

pub use archive::TorchArchive;
pub use pickle::{AllowList, PickleError};
pub use value::{DType, Object, StorageRef, TensorRef, Value};

/// Runs the pickle reader on arbitrary bytes (TorchScript classes allowed, so that the
/// module-object paths are reached too). Must never panic: the fuzz target.
pub fn fuzz_pickle(bytes: &[u8]) -> bool {
    pickle::load(bytes, &AllowList::new().torchscript(true)).is_ok()
}

/// Opens arbitrary bytes as an archive and reads every tensor of up to 2¹⁶ elements. Must
/// never panic: the fuzz target for the zip side.
pub fn fuzz_archive(bytes: &[u8]) -> bool {
    let Ok(archive) = TorchArchive::from_bytes(bytes.to_vec(), &AllowList::new()) else {
        return false;
    };
    for (_, t) in archive.named_tensors() {
        if t.numel() <= 1 << 16 {
            let _ = archive.tensor_f32(t);
        }
    }
    true
}

#[cfg(test)]
mod tests;
