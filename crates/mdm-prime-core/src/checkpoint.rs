//! The burn-free half of checkpoint files (docs/checkpoints.md): `state.json` ([`TrainState`])
//! and safetensors files of flat f32 tensors with their FNV-1a checksum ([`serialize`],
//! [`parse_safetensors`]), and the journal of a checkpoint being installed ([`Journal`]). The
//! `mdm-prime` crate turns these into and from module parameters;
//! keeping the byte-level reading here lets it be fuzzed without building burn.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::data::Fnv1a;
use crate::error::{Error, Result};

/// The commit record of a checkpoint being installed (`checkpoint.journal`): which temporary
/// becomes which file, as names within the run directory. `mdm_prime::checkpoint` writes it
/// between the temporaries and the renames and replays it after a crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub renames: Vec<(String, String)>,
}

impl Journal {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a journal; every name must be a plain file name (no separator, not `..`), so that
    /// a damaged or hostile journal cannot rename anything outside the run directory.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let journal: Journal = serde_json::from_slice(bytes).map_err(|e| {
            Error::data(
                path,
                format!(
                    "unreadable checkpoint journal ({e}); it is written atomically, so this file \
                     was damaged: check which checkpoint files load (`mdm-prime eval`) and \
                     delete it"
                ),
            )
        })?;
        let plain = |n: &str| !n.is_empty() && !n.contains(['/', '\\', '\0']) && n != "..";
        if let Some((tmp, dest)) = journal.renames.iter().find(|(t, d)| !plain(t) || !plain(d)) {
            return Err(Error::data(
                path,
                format!("names a file outside the run directory ({tmp:?} → {dest:?})"),
            ));
        }
        Ok(journal)
    }
}

/// Progress that is not in the weights (`state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Completed optimiser steps.
    pub step: u64,
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    pub code_version: String,
    /// Steps whose loss or gradient was not finite: counted in `step`, their update not applied
    /// (so the optimiser is at `step − skipped_steps`).
    #[serde(default)]
    pub skipped_steps: u64,
}

impl TrainState {
    /// One optimiser step (applied or skipped) over `tokens` tokens is done.
    pub fn advance(&mut self, tokens: usize) {
        self.step += 1;
        self.tokens_seen += tokens as u64;
    }

    /// Parses the bytes of the `state.json` at `path`; the error names the path.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::data(path, format!("unreadable: {e}")))
    }
}

/// Metadata key of the tensors' checksum.
const CHECKSUM_KEY: &str = "tensors_fnv1a64";

/// FNV-1a 64 over every tensor in name order: name, shape and little-endian f32 bytes, each
/// length-prefixed. Detects any flipped byte of the data.
fn checksum(tensors: &[(&str, &[usize], &[u8])]) -> u64 {
    let mut h = Fnv1a::new();
    for (name, shape, bytes) in tensors {
        h.field(name.as_bytes());
        let dims: Vec<u8> = shape
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        h.field(&dims);
        h.field(bytes);
    }
    h.finish()
}

/// Serialises named flat f32 tensors (`(name, shape, little-endian bytes)`) and metadata to
/// safetensors bytes, with the checksum in the metadata.
pub fn serialize(
    tensors: &[(String, Vec<usize>, Vec<u8>)],
    metadata: HashMap<String, String>,
) -> std::result::Result<Vec<u8>, String> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut metadata = metadata;
    let mut sorted: Vec<(&str, &[usize], &[u8])> = tensors
        .iter()
        .map(|(n, sh, b)| (n.as_str(), sh.as_slice(), b.as_slice()))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    metadata.insert(CHECKSUM_KEY.into(), format!("{:016x}", checksum(&sorted)));
    safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())
}

/// The tensors of a safetensors file as `name → (shape, values)`, plus its metadata.
pub type Loaded = (
    HashMap<String, (Vec<usize>, Vec<f32>)>,
    HashMap<String, String>,
);

/// Parses the bytes of a safetensors file written by [`serialize`] (`path` names it in errors):
/// a truncated or foreign file, a checksum that does not match, or a tensor that is not f32 is
/// an error. Files written before checksums existed have none and load as before.
pub fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<Loaded> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| {
        Error::data(
            path,
            format!("not a readable safetensors file ({e}); it may be truncated"),
        )
    })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::data(path, e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(stored) = metadata.get(CHECKSUM_KEY) {
        let sorted: Vec<(&str, &[usize], &[u8])> = views
            .iter()
            .map(|(n, v)| (n.as_str(), v.shape(), v.data()))
            .collect();
        let actual = format!("{:016x}", checksum(&sorted));
        if *stored != actual {
            return Err(Error::data(
                path,
                format!(
                    "checksum mismatch (stored {stored}, computed {actual}): the file is corrupt \
                     (a damaged byte); restore it from a backup, or resume from another run \
                     directory"
                ),
            ));
        }
    }
    let mut out = HashMap::new();
    for (name, view) in views {
        if view.dtype() != Dtype::F32 {
            return Err(Error::data(
                path,
                format!("tensor {name} is {:?}, expected F32", view.dtype()),
            ));
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok((out, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_and_a_flipped_byte_is_caught() {
        let values: Vec<u8> = [1.5f32, -2.0, 0.25]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let meta = HashMap::from([("step".to_string(), "7".to_string())]);
        let bytes = serialize(&[("w".into(), vec![3], values)], meta).unwrap();
        let (t, m) = parse_safetensors(Path::new("m.safetensors"), &bytes).unwrap();
        assert_eq!(t["w"], (vec![3], vec![1.5, -2.0, 0.25]));
        assert_eq!(m["step"], "7");
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        let e = parse_safetensors(Path::new("m.safetensors"), &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("checksum mismatch"),
            "{e}"
        );
        let e = parse_safetensors(Path::new("m.safetensors"), &bytes[..20])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a readable safetensors file"), "{e}");
    }
}
