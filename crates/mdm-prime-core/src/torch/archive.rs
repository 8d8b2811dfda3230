//! The zip side of a PyTorch archive: `torch.save` (since PyTorch 1.6) and `torch.jit.save`
//! both write a zip with one top folder `<root>/` holding `data.pkl` (the pickled object) and
//! `data/<key>` (each storage's raw little-endian bytes). The pickle is read when the archive
//! is opened; a tensor's bytes only when [`TorchArchive::tensor_f32`] asks for them.

use std::io::{Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::pickle::{self, AllowList};
use super::value::{DType, StorageRef, TensorRef, Value};
use crate::error::{Error, Result};
use crate::limits;

/// Largest `data.pkl` read (the FID Inception-v3's is 36 KB; a large Lightning checkpoint's a
/// few MB).
const MAX_PICKLE_BYTES: u64 = 1 << 30;

trait Source: Read + Seek + Send {}
impl<T: Read + Seek + Send> Source for T {}

/// An opened PyTorch archive: its unpickled `data.pkl` and lazy access to its storages.
pub struct TorchArchive {
    path: PathBuf,
    root: String,
    torchscript: bool,
    value: Value,
    zip: Mutex<zip::ZipArchive<Box<dyn Source>>>,
}

impl std::fmt::Debug for TorchArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchArchive")
            .field("path", &self.path)
            .field("root", &self.root)
            .field("torchscript", &self.torchscript)
            .finish_non_exhaustive()
    }
}

impl TorchArchive {
    /// Opens the archive at `path` with the fixed allow list.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &AllowList::new())
    }

    /// Opens the archive at `path`, also reading the classes `allow` names as plain data.
    pub fn open_with(path: impl AsRef<Path>, allow: &AllowList) -> Result<Self> {
        let path = path.as_ref();
        // A FIFO would block the open, a directory give a puzzling zip error: refuse them first.
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        crate::fsutil::check_regular(path, &meta)?;
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Self::read(path.into(), Box::new(std::io::BufReader::new(file)), allow)
    }

    /// Reads an archive held in memory (errors name it `<memory>`).
    pub fn from_bytes(bytes: Vec<u8>, allow: &AllowList) -> Result<Self> {
        Self::read("<memory>".into(), Box::new(Cursor::new(bytes)), allow)
    }

    fn read(path: PathBuf, source: Box<dyn Source>, allow: &AllowList) -> Result<Self> {
        let fail = |reason: String| Error::data(&path, reason);
        let mut zip = zip::ZipArchive::new(source).map_err(|e| {
            fail(format!(
                "not a zip archive ({e}); torch.save since PyTorch 1.6 and torch.jit.save write \
                 zips, the older non-zip torch.save format is not read"
            ))
        })?;
        let roots: Vec<&str> = zip
            .file_names()
            .filter_map(|n| n.strip_suffix("/data.pkl"))
            .filter(|root| !root.is_empty() && !root.contains('/'))
            .collect();
        let root = match roots.as_slice() {
            [root] => root.to_string(),
            [] => {
                return Err(fail(
                    "no <root>/data.pkl: not a torch.save or torch.jit.save archive".into(),
                ));
            }
            many => {
                return Err(fail(format!(
                    "several top folders hold a data.pkl: {many:?}"
                )));
            }
        };
        let torchscript = zip.file_names().any(|n| {
            n == format!("{root}/constants.pkl") || n.starts_with(&format!("{root}/code/"))
        });
        if let Ok(order) = read_entry(&mut zip, &format!("{root}/byteorder"), 16)
            && order != b"little"
        {
            let order = String::from_utf8_lossy(&order);
            return Err(fail(format!(
                "byte order {order:?}: only little-endian archives are read"
            )));
        }
        let pkl = format!("{root}/data.pkl");
        let bytes = read_entry(&mut zip, &pkl, MAX_PICKLE_BYTES)
            .map_err(|e| fail(format!("{pkl}: {e}")))?;
        let allow = allow.clone().torchscript(torchscript);
        let value = pickle::load(&bytes, &allow).map_err(|e| fail(format!("{pkl}: {e}")))?;
        Ok(TorchArchive {
            path,
            root,
            torchscript,
            value,
            zip: Mutex::new(zip),
        })
    }

    /// The unpickled `data.pkl`: a state dict, a checkpoint dict, a TorchScript module object.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Where the archive was read from (`<memory>` for [`TorchArchive::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The archive's top folder (`archive` for recent `torch.save`, the file stem for older
    /// ones, whatever `torch.jit.save` was given).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Whether this is a `torch.jit.save` archive (it has `code/` or `constants.pkl`).
    pub fn is_torchscript(&self) -> bool {
        self.torchscript
    }

    /// Every tensor in the archive with its path name ([`Value::named_tensors`] of the root).
    pub fn named_tensors(&self) -> Vec<(String, &TensorRef)> {
        self.value.named_tensors()
    }

    /// The values of `t` as f32 in row-major order of its shape. Reads float32, and converts
    /// float16 and bfloat16 exactly; other dtypes are an error. The view (offset, shape,
    /// stride) is checked against the storage's declared and real lengths before the read, and
    /// the output against the machine's memory before it is allocated.
    pub fn tensor_f32(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let convert: fn(&[u8]) -> f32 = match t.dtype {
            DType::F32 => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F16 => |b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            DType::BF16 => |b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])),
            other => {
                return Err(self.fail(format!(
                    "storage {}: a {} tensor cannot be read as f32 (float32, float16 and \
                     bfloat16 can)",
                    t.storage.key,
                    other.name()
                )));
            }
        };
        let size = t.dtype.size();
        let needed = t.storage_elements_needed().ok_or_else(|| {
            self.fail(format!(
                "storage {}: the tensor's extent overflows",
                t.storage.key
            ))
        })?;
        let holds = t.storage.bytes / size as u64;
        if needed as u64 > holds {
            return Err(self.fail(format!(
                "storage {}: offset {}, shape {:?} and stride {:?} reach element {}, the storage \
                 holds {holds} {} elements",
                t.storage.key,
                t.offset,
                t.shape,
                t.stride,
                needed - 1,
                t.dtype.name()
            )));
        }
        let numel = t.numel();
        if numel == 0 {
            return Ok(Vec::new());
        }
        limits::check_fits("a tensor read as f32", numel as u128, 4)?;
        let bytes = self.storage_bytes(&t.storage, t.offset * size, needed * size)?;
        let elems: Vec<f32> = bytes.chunks_exact(size).map(convert).collect();
        gather(t, &elems).ok_or_else(|| self.fail(format!("storage {}: bad view", t.storage.key)))
    }

    /// Bytes `from..to` of storage `s`, after checking that its entry holds the declared size.
    fn storage_bytes(&self, s: &StorageRef, from: usize, to: usize) -> Result<Vec<u8>> {
        let name = format!("{}/data/{}", self.root, s.key);
        let mut zip = self
            .zip
            .lock()
            .map_err(|_| self.fail("the archive reader was poisoned by an earlier panic".into()))?;
        let mut entry = zip
            .by_name(&name)
            .map_err(|e| self.fail(format!("storage {name} is missing: {e}")))?;
        if entry.size() < s.bytes {
            return Err(self.fail(format!(
                "storage {name} is truncated: {} bytes, the pickle declares {}",
                entry.size(),
                s.bytes
            )));
        }
        let mut skip = entry.by_ref().take(from as u64);
        std::io::copy(&mut skip, &mut std::io::sink())
            .map_err(|e| self.fail(format!("storage {name}: {e}")))?;
        // Grows with the data actually read, never with a size a header claims.
        let mut bytes = Vec::new();
        entry
            .take((to - from) as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| self.fail(format!("storage {name}: {e}")))?;
        if bytes.len() != to - from {
            return Err(self.fail(format!(
                "storage {name} is truncated: it ends {} bytes into the {} bytes needed from \
                 byte {from}",
                bytes.len(),
                to - from
            )));
        }
        Ok(bytes)
    }

    fn fail(&self, reason: String) -> Error {
        Error::data(&self.path, reason)
    }
}

/// Reads a whole entry of at most `limit` bytes.
fn read_entry(
    zip: &mut zip::ZipArchive<Box<dyn Source>>,
    name: &str,
    limit: u64,
) -> std::result::Result<Vec<u8>, String> {
    let entry = zip.by_name(name).map_err(|e| format!("cannot open: {e}"))?;
    if entry.size() > limit {
        return Err(format!(
            "{} bytes, more than the {limit} accepted",
            entry.size()
        ));
    }
    let mut bytes = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("more than the {limit} bytes accepted"));
    }
    Ok(bytes)
}

/// The view's values in row-major order; `elems` starts at the view's storage offset.
/// `None` only if the view reaches past `elems` (checked before, so never).
fn gather(t: &TensorRef, elems: &[f32]) -> Option<Vec<f32>> {
    let numel = t.numel();
    if t.is_contiguous() {
        return elems.get(..numel).map(<[f32]>::to_vec);
    }
    let mut out = Vec::with_capacity(numel);
    let mut index = vec![0usize; t.shape.len()];
    // Position relative to the offset; the wrapping steps always come back into range.
    let mut pos = 0usize;
    for _ in 0..numel {
        out.push(*elems.get(pos)?);
        for d in (0..t.shape.len()).rev() {
            index[d] += 1;
            pos = pos.wrapping_add(t.stride[d]);
            if index[d] < t.shape[d] {
                break;
            }
            pos = pos.wrapping_sub(t.stride[d].wrapping_mul(t.shape[d]));
            index[d] = 0;
        }
    }
    Some(out)
}

/// IEEE half precision to single, exactly (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let sign = u32::from(negative) << 31;
    match exp {
        // ±0 and subnormals: man · 2⁻²⁴, exact in f32.
        0 => {
            let v = man as f32 * f32::from_bits(0x3380_0000);
            if negative { -v } else { v }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        // Rebias the exponent: 127 − 15 = 112.
        e => f32::from_bits(sign | ((e + 112) << 23) | (man << 13)),
    }
}

/// bfloat16 is the top half of an f32.
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_converts_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc100), -2.5);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24)); // smallest subnormal
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14)); // smallest normal
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc049), -3.140625);
    }

    #[test]
    fn gather_walks_any_strided_view() {
        // A 3 × 4 row-major block read transposed: shape (4, 3), stride (1, 4).
        let storage: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let t = TensorRef {
            dtype: DType::F32,
            storage: StorageRef {
                key: "0".into(),
                dtype: Some(DType::F32),
                location: "cpu".into(),
                bytes: 48,
            },
            offset: 0,
            shape: vec![4, 3],
            stride: vec![1, 4],
            requires_grad: false,
        };
        let expect = [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.];
        assert_eq!(gather(&t, &storage).unwrap(), expect);
        // Broadcast (stride 0) and a huge stride on a size-1 dimension.
        let t = TensorRef {
            shape: vec![2, 1, 3],
            stride: vec![0, usize::MAX, 2],
            ..t
        };
        assert_eq!(gather(&t, &storage).unwrap(), [0., 2., 4., 0., 2., 4.]);
    }
}
