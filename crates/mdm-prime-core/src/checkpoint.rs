//! The burn-free half of checkpoint files (docs/checkpoints.md): `state.json` ([`TrainState`])
//! and safetensors files of flat f32 tensors with their FNV-1a checksum ([`serialize`],
//! [`parse_safetensors`]), and the journal of a checkpoint being installed ([`Journal`]). The
//! `mdm-prime` crate turns these into and from module parameters;
//! keeping the byte-level reading here lets it be fuzzed without building burn.

use std::collections::{BTreeMap, HashMap};
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
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| e.to_string())?;
    sorted_header(bytes)
}

/// `bytes` (a safetensors file) with the keys of its JSON header in sorted order. safetensors
/// writes the metadata in a `HashMap`'s order, which changes from process to process, so two
/// runs with bit-identical weights wrote files that differed in the header; sorted, identical
/// tensors and metadata give identical files (`cmp`, `sha256sum`). The header keeps the padding
/// to a multiple of 8 bytes that aligns the data; the offsets, relative to its end, stay valid.
fn sorted_header(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    #[derive(Serialize)]
    struct Header {
        #[serde(rename = "__metadata__", skip_serializing_if = "Option::is_none")]
        metadata: Option<BTreeMap<String, String>>,
        #[serde(flatten)]
        tensors: BTreeMap<String, serde_json::Value>,
    }
    let len = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(|b| u64::from_le_bytes(b) as usize)
        .filter(|&n| bytes.len() >= 8 + n)
        .ok_or("safetensors wrote a truncated header")?;
    let mut tensors: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + len]).map_err(|e| e.to_string())?;
    let metadata = tensors
        .remove("__metadata__")
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| e.to_string())?;
    let mut header =
        serde_json::to_vec(&Header { metadata, tensors }).map_err(|e| e.to_string())?;
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + header.len() + bytes.len() - 8 - len);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&bytes[8 + len..]);
    Ok(out)
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
        let values = widen(Dtype::F32, view.data()).unwrap_or_default();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok((out, metadata))
}

/// Little-endian values of a float `dtype` as f32: F32 as stored, F16 and BF16 exactly (every
/// half value is an f32), F64 rounded to nearest; `None` for any other dtype.
fn widen(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        // bfloat16 is the top half of an f32.
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        _ => return None,
    })
}

/// A safetensors file written by other software (a Hugging Face model): tensors of any float
/// width, each read on demand as f32 (the file is never converted as a whole).
pub struct FloatTensors {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

impl FloatTensors {
    /// Checks that `bytes` (the file at `path`, which errors name) is a readable safetensors
    /// file; a checksum this project wrote into it is verified as in [`parse_safetensors`].
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let file = FloatTensors {
            path: path.to_path_buf(),
            bytes,
        };
        let (_, meta) = safetensors::SafeTensors::read_metadata(&file.bytes).map_err(|e| {
            Error::data(
                path,
                format!("not a readable safetensors file ({e}); it may be truncated"),
            )
        })?;
        if meta
            .metadata()
            .as_ref()
            .is_some_and(|m| m.contains_key(CHECKSUM_KEY))
        {
            parse_safetensors(path, &file.bytes)?;
        } else {
            file.view()?;
        }
        Ok(file)
    }

    fn view(&self) -> Result<safetensors::SafeTensors<'_>> {
        safetensors::SafeTensors::deserialize(&self.bytes).map_err(|e| {
            Error::data(
                &self.path,
                format!("not a readable safetensors file ({e}); it may be truncated"),
            )
        })
    }

    /// Every tensor's name and shape, sorted by name.
    pub fn shapes(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let mut out: Vec<(String, Vec<usize>)> = self
            .view()?
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.shape().to_vec()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The values of tensor `name` as f32 ([`widen`]); a missing tensor or one that is not a
    /// float (an integer or boolean buffer) is an error naming it.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let st = self.view()?;
        let view = st
            .tensor(name)
            .map_err(|_| Error::data(&self.path, format!("has no tensor {name}")))?;
        widen(view.dtype(), view.data()).ok_or_else(|| {
            Error::data(
                &self.path,
                format!(
                    "tensor {name} is {:?}; only F32, F16, BF16 and F64 weights can be read",
                    view.dtype()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tensors_and_metadata_give_equal_files() {
        // Each HashMap iterates in its own random order; the files must not depend on it.
        let values: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        let tensors = vec![
            ("b.weight".to_string(), vec![2, 3], values[..24].to_vec()),
            ("a".to_string(), vec![4], values[24..].to_vec()),
        ];
        let files: Vec<Vec<u8>> = (0..8)
            .map(|_| {
                let meta: HashMap<String, String> = (0..12)
                    .map(|k| (format!("key{k}"), format!("value {k}")))
                    .collect();
                serialize(&tensors, meta).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]));
        let header_len = u64::from_le_bytes(files[0][..8].try_into().unwrap()) as usize;
        assert_eq!(header_len % 8, 0, "the data stays 8-byte aligned");
        let (t, m) = parse_safetensors(Path::new("m.safetensors"), &files[0]).unwrap();
        assert_eq!(t["a"].0, vec![4]);
        assert_eq!(t["b.weight"].1.len(), 6);
        assert_eq!((m.len(), m["key11"].as_str()), (13, "value 11"));
        // The stock reader agrees on every tensor's bytes.
        let st = safetensors::SafeTensors::deserialize(&files[0]).unwrap();
        assert_eq!(st.tensor("b.weight").unwrap().data(), &values[..24]);
        assert_eq!(st.tensor("a").unwrap().data(), &values[24..]);
    }

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

    #[test]
    fn half_widths_widen_exactly() {
        // f16: 0x3C00 = 1, 0xC000 = −2, 0x0001 = 2⁻²⁴ (the smallest subnormal), 0x7BFF = 65504.
        let f16: Vec<u8> = [0x3C00u16, 0xC000, 0x0001, 0x7BFF]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let want = vec![1.0, -2.0, 2f32.powi(-24), 65504.0];
        assert_eq!(widen(Dtype::F16, &f16), Some(want));
        // bf16: 0x3FC0 = 1.5, 0xC2F7 = −123.5 (the top half of its f32 bits 0xC2F70000).
        let bf16: Vec<u8> = [0x3FC0u16, 0xC2F7]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(widen(Dtype::BF16, &bf16), Some(vec![1.5, -123.5]));
        let f64s: Vec<u8> = [0.1f64].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(widen(Dtype::F64, &f64s), Some(vec![0.1f32]));
        assert_eq!(widen(Dtype::I64, &[0; 8]), None);
    }

    #[test]
    fn float_tensors_of_any_width_read_as_f32_and_others_are_named() {
        let f16 = half::f16::from_f32(0.5).to_le_bytes().repeat(2);
        let ids = 7i64.to_le_bytes();
        let views = vec![
            ("a", TensorView::new(Dtype::F16, vec![2], &f16).unwrap()),
            ("ids", TensorView::new(Dtype::I64, vec![1], &ids).unwrap()),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        let path = Path::new("hf/model.safetensors");
        let file = FloatTensors::parse(path, bytes.clone()).unwrap();
        assert_eq!(
            file.shapes().unwrap(),
            vec![("a".into(), vec![2]), ("ids".into(), vec![1])]
        );
        assert_eq!(file.f32("a").unwrap(), vec![0.5, 0.5]);
        let e = file.f32("ids").unwrap_err().to_string();
        assert!(
            e.contains("hf/model.safetensors") && e.contains("ids") && e.contains("I64"),
            "{e}"
        );
        assert!(
            file.f32("b")
                .unwrap_err()
                .to_string()
                .contains("no tensor b")
        );
        let e = FloatTensors::parse(path, bytes[..30].to_vec())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a readable safetensors file"), "{e}");
        // This project's files carry a checksum, which is checked here too.
        let ours = serialize(
            &[("w".into(), vec![1], 2f32.to_le_bytes().to_vec())],
            HashMap::new(),
        )
        .unwrap();
        assert_eq!(
            FloatTensors::parse(path, ours.clone())
                .unwrap()
                .f32("w")
                .unwrap(),
            vec![2.0]
        );
        let mut bad = ours;
        *bad.last_mut().unwrap() ^= 1;
        assert!(FloatTensors::parse(path, bad).is_err());
    }
}
