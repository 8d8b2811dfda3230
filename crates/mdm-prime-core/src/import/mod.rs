//! Reading the official MDM-Prime checkpoints (github.com/chen-hao-chao/mdm-prime, released on
//! Hugging Face as `chen-hao-chao/mdm-prime`) into this project's config and parameter layout,
//! without running any of their pickle code (docs/import.md).
//!
//! - **Text** (`text/owt/results_*/checkpoint.ckpt`): a PyTorch Lightning checkpoint of
//!   `text/diffusion.py::Diffusion`; the network is `state_dict["backbone.*"]`, the EMA
//!   `ema.shadow_params` (a list in parameter order), the config `hyper_parameters.config` (an
//!   omegaconf `DictConfig`, read as data). See [`text`].
//! - **Images** (`image/<set>/results_*/checkpoint-<epoch>.pth`): `torch.save` of {model: the EMA
//!   wrapper's state dict (`model.*`, `shadow_params.*`), optimizer, lr_schedule, epoch, scaler,
//!   args: the `argparse.Namespace`}. The U-Net's sizes are not in the file (the official code
//!   hard-codes them); they are read off the tensor shapes, except the GroupNorm groups and the
//!   attention head width, which no shape shows ([`ImportOptions`]). See [`image`].
//!
//! [`read_official`] returns an [`Imported`]: a validated [`RunConfig`] and every tensor renamed
//! and laid out as this project's network names it (`mdm_prime::import` writes the run
//! directory). A tensor that no rule maps is an error naming its key; so is a shape that does
//! not fit the configuration.

pub mod image;
pub mod text;

use std::path::{Path, PathBuf};

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::torch::{AllowList, TensorRef, TorchArchive, Value};

/// One tensor in this project's layout: its parameter path (`blocks.0.qkv.weight`), its shape and
/// its values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// What an official checkpoint holds, in this project's terms.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The run configuration, read from the checkpoint (validated).
    pub config: RunConfig,
    /// The training weights.
    pub model: Vec<NamedTensor>,
    /// The EMA weights (what `eval` and `sample` use); `None` where the checkpoint has none
    /// (then the run's EMA starts as the weights).
    pub ema: Option<Vec<NamedTensor>>,
    /// Optimiser steps (text: Lightning's `global_step`) or epochs (images) the file records.
    pub progress: Progress,
    /// What the importer decided that a reader should know (set values, dropped classes).
    pub notes: Vec<String>,
}

/// How far the official training had gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Steps(u64),
    Epochs(u64),
}

/// What an image checkpoint does not record: the official code's constants
/// (`image/models/model_configs.py`, `image/models/nn.py`) unless overridden.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// GroupNorm groups (official: 32, `nn.normalization`).
    pub unet_groups: usize,
    /// Channels per attention head (official: `num_head_channels = 64`).
    pub unet_head_channels: usize,
    /// Dropout of the res-blocks (official: 0.4); only matters for fine-tuning.
    pub unet_dropout: f64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            unet_groups: 32,
            unet_head_channels: 64,
            unet_dropout: 0.4,
        }
    }
}

/// The classes an official checkpoint pickles besides tensors and plain containers, all read as
/// inert data (nothing of them runs; `torch::pickle`): the Hydra config (omegaconf 2.x
/// containers, nodes and metadata, with the types they record as values) and the GPT-2 tokenizer
/// that Lightning's `save_hyperparameters()` stores next to it (transformers 4.x `…Fast` and 5.x
/// names, the `tokenizers` objects inside). Any other global is refused with its name. Each
/// omegaconf node links to its parent container (`_parent`); those links are read as `None`.
pub fn allow_list() -> AllowList {
    const CLASSES: &[&str] = &[
        "omegaconf.dictconfig.DictConfig",
        "omegaconf.listconfig.ListConfig",
        "omegaconf.base.ContainerMetadata",
        "omegaconf.base.Metadata",
        "omegaconf.nodes.AnyNode",
        "omegaconf.nodes.StringNode",
        "omegaconf.nodes.IntegerNode",
        "omegaconf.nodes.FloatNode",
        "omegaconf.nodes.BooleanNode",
        "omegaconf.nodes.BytesNode",
        "omegaconf.nodes.PathNode",
        "typing.Any",
        "collections.defaultdict",
        "builtins.dict",
        "builtins.list",
        "builtins.int",
        "builtins.float",
        "builtins.str",
        "builtins.bool",
        "__builtin__.dict",
        "__builtin__.list",
        "__builtin__.int",
        "__builtin__.long",
        "__builtin__.float",
        "__builtin__.str",
        "__builtin__.unicode",
        "__builtin__.bool",
        "transformers.models.gpt2.tokenization_gpt2_fast.GPT2TokenizerFast",
        "transformers.models.gpt2.tokenization_gpt2.GPT2Tokenizer",
        "transformers.tokenization_utils_base.AddedToken",
        "tokenizers.Tokenizer",
        "tokenizers.AddedToken",
        "tokenizers.models.Model",
        "tokenizers.models.BPE",
    ];
    CLASSES
        .iter()
        .fold(AllowList::new(), |allow, class| allow.class(*class))
        .parent_links_as_none(true)
}

/// Reads the official checkpoint at `path`: a text `.ckpt` (it has `state_dict` and
/// `hyper_parameters`) or an image `.pth` (it has `model` and `args`).
pub fn read_official(path: &Path, opts: &ImportOptions) -> Result<Imported> {
    let archive = TorchArchive::open_with(path, &allow_list()).map_err(|e| match e {
        Error::Data { path, reason } if reason.contains("refused global") => Error::Data {
            path,
            reason: format!(
                "{reason}; the importer reads only the classes an official MDM-Prime checkpoint \
                 pickles (torch tensors, omegaconf configs, the GPT-2 tokenizer, argparse \
                 arguments): if this is an official file, that is a gap in this list (please \
                 report it with the global's name)"
            ),
        },
        other => other,
    })?;
    let root = archive.value();
    let reader = Reader {
        archive: &archive,
        path: path.to_path_buf(),
    };
    if root.get("state_dict").is_some() && root.get("hyper_parameters").is_some() {
        text::read(&reader)
    } else if root.get("model").is_some() && root.get("args").is_some() {
        image::read(&reader, opts)
    } else {
        let keys: Vec<String> = root
            .as_dict()
            .map(|pairs| {
                pairs
                    .iter()
                    .map(|(k, _)| k.as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        Err(reader.fail(format!(
            "not an official MDM-Prime checkpoint: a text checkpoint (.ckpt) has `state_dict` \
             and `hyper_parameters`, an image one (.pth) `model` and `args`; this file's top \
             level is a {} with keys {keys:?}",
            root.kind()
        )))
    }
}

/// The opened archive and its path, for reading tensors and naming the file in errors.
pub(crate) struct Reader<'a> {
    archive: &'a TorchArchive,
    path: PathBuf,
}

impl Reader<'_> {
    fn value(&self) -> &Value {
        self.archive.value()
    }

    fn fail(&self, reason: impl Into<String>) -> Error {
        Error::data(&self.path, reason)
    }

    /// The official tensor `key` (`shown` as the file names it) renamed and laid out by
    /// `target`; `None` (no rule maps the key) is an error naming it and saying `what` the
    /// importer maps.
    fn map(
        &self,
        key: &str,
        shown: &str,
        t: &TensorRef,
        target: Option<(String, Layout)>,
        what: &str,
    ) -> Result<NamedTensor> {
        let (name, layout) = target.ok_or_else(|| {
            self.fail(format!(
                "{shown} (shape {:?}) is not a parameter of the official {what} this importer maps",
                t.shape
            ))
        })?;
        let values = self.values(key, t)?;
        let (shape, values) = relayout(key, &t.shape, values, layout).map_err(|e| self.fail(e))?;
        Ok(NamedTensor {
            name,
            shape,
            values,
        })
    }

    fn values(&self, key: &str, t: &TensorRef) -> Result<Vec<f32>> {
        self.archive
            .tensor_f32(t)
            .map_err(|e| self.fail(format!("tensor `{key}`: {e}")))
    }
}

/// A tensor layout change between the official parameter and this project's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Layout {
    /// Same shape, same order.
    Same,
    /// A PyTorch `Linear` weight `[out, in]` → burn's `[in, out]`.
    Transpose,
    /// As `Transpose`, keeping only the first `keep` output rows (MDLM's head: the mask class,
    /// the last row, is dropped).
    TransposeKeepRows(usize),
    /// A vector keeping its first `keep` entries (the head's bias).
    KeepFirst(usize),
    /// A conv1d weight `[o, i, 1]` → a 1 × 1 conv2d weight `[o, i, 1, 1]`.
    Conv1dAs2d,
    /// Any shape → a vector (the `[1, 2C]` constant embedding → `[2C]`).
    Flatten,
    /// Output channels `[groups·(keep+1), …]` → `[groups·keep, …]`, dropping the last channel
    /// of each group (the ℓ = 1 image head's mask class per RGB channel).
    DropLastOfEachGroup { groups: usize, keep: usize },
}

/// Applies `layout` to the official tensor `key` (`shape`, `values`), checking that it fits.
pub(crate) fn relayout(
    key: &str,
    shape: &[usize],
    values: Vec<f32>,
    layout: Layout,
) -> std::result::Result<(Vec<usize>, Vec<f32>), String> {
    let bad = |what: &str| Err(format!("`{key}` has shape {shape:?}, expected {what}"));
    match layout {
        Layout::Same => Ok((shape.to_vec(), values)),
        Layout::Transpose | Layout::TransposeKeepRows(_) => {
            let &[rows, cols] = shape else {
                return bad("a matrix");
            };
            let keep = match layout {
                Layout::TransposeKeepRows(k) if k <= rows => k,
                Layout::TransposeKeepRows(k) => return bad(&format!("at least {k} rows")),
                _ => rows,
            };
            let mut out = vec![0.0; keep * cols];
            for r in 0..keep {
                for c in 0..cols {
                    out[c * keep + r] = values[r * cols + c];
                }
            }
            Ok((vec![cols, keep], out))
        }
        Layout::KeepFirst(keep) => match shape {
            &[n] if n >= keep => Ok((vec![keep], values[..keep].to_vec())),
            _ => bad(&format!("a vector of at least {keep}")),
        },
        Layout::Conv1dAs2d => match shape {
            &[o, i, 1] => Ok((vec![o, i, 1, 1], values)),
            _ => bad("a 1-wide conv1d weight [out, in, 1]"),
        },
        Layout::Flatten => Ok((vec![values.len()], values)),
        Layout::DropLastOfEachGroup { groups, keep } => {
            let Some((&n, rest)) = shape.split_first() else {
                return bad("a tensor");
            };
            if n != groups * (keep + 1) {
                return bad(&format!("{} output channels", groups * (keep + 1)));
            }
            let inner: usize = rest.iter().product();
            let mut out = Vec::with_capacity(groups * keep * inner);
            for g in 0..groups {
                let start = g * (keep + 1) * inner;
                out.extend_from_slice(&values[start..start + keep * inner]);
            }
            let mut new_shape = vec![groups * keep];
            new_shape.extend_from_slice(rest);
            Ok((new_shape, out))
        }
    }
}

/// An omegaconf container or node as the plain value it stands for (`DictConfig` → dict,
/// `ListConfig` → list, `AnyNode` & co → their `_val`); other values recursively unchanged.
/// Interpolations (`${...}`) stay the strings they are in a saved config.
pub fn plain(v: &Value) -> Value {
    match v {
        Value::Object(o) if o.class.starts_with("omegaconf.") => {
            let inner = if o.class.starts_with("omegaconf.nodes.") {
                v.get("_val")
            } else {
                v.get("_content")
            };
            inner.map(plain).unwrap_or(Value::None)
        }
        Value::Dict(pairs) => {
            Value::Dict(pairs.iter().map(|(k, v)| (plain(k), plain(v))).collect())
        }
        Value::List(items) => Value::List(items.iter().map(plain).collect()),
        Value::Tuple(items) => Value::Tuple(items.iter().map(plain).collect()),
        other => other.clone(),
    }
}

/// Typed look-ups of dotted keys in a plain config value, with errors that name the key and
/// where it was looked for (`hyper_parameters.config` or `args`).
pub(crate) struct Settings<'a> {
    pub root: &'a Value,
    pub origin: &'static str,
    pub path: &'a Path,
}

impl Settings<'_> {
    pub fn get(&self, key: &str) -> Option<&Value> {
        key.split('.')
            .try_fold(self.root, |v, part| v.get(part))
            .filter(|v| !matches!(v, Value::None))
    }

    fn want<T>(&self, key: &str, what: &str, f: impl Fn(&Value) -> Option<T>) -> Result<T> {
        let v = self.get(key).ok_or_else(|| {
            Error::data(
                self.path,
                format!(
                    "{}.{key} is missing (needed to build the run's config)",
                    self.origin
                ),
            )
        })?;
        f(v).ok_or_else(|| {
            let shown = match v {
                Value::Str(s) if s.contains("${") => format!("the unresolved interpolation {s:?}"),
                other => format!("{other:?}"),
            };
            Error::data(
                self.path,
                format!("{}.{key} is {shown}, expected {what}", self.origin),
            )
        })
    }

    pub fn int(&self, key: &str) -> Result<i64> {
        self.want(key, "an integer", |v| match v {
            Value::Float(f) if f.fract() == 0.0 => Some(*f as i64),
            other => other.as_int(),
        })
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        let i = self.int(key)?;
        usize::try_from(i).map_err(|_| {
            Error::data(
                self.path,
                format!("{}.{key} is {i}, expected a count ≥ 0", self.origin),
            )
        })
    }

    pub fn float(&self, key: &str) -> Result<f64> {
        self.want(key, "a number", |v| match v {
            Value::Str(s) => s.replace('_', "").parse().ok(),
            other => other.as_f64(),
        })
    }

    pub fn boolean(&self, key: &str) -> Result<bool> {
        self.want(key, "true or false", Value::as_bool)
    }

    pub fn string(&self, key: &str) -> Result<String> {
        self.want(key, "a string", |v| v.as_str().map(str::to_string))
    }

    /// `key`'s value, or `default` where the key is absent.
    pub fn float_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.float(key),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(_) => self.boolean(key),
        }
    }

    pub fn floats(&self, key: &str) -> Result<Vec<f64>> {
        self.want(key, "a list of numbers", |v| {
            v.as_list()?.iter().map(Value::as_f64).collect()
        })
    }

    /// That `key` (when present) is `expected`: the official options this importer maps.
    pub fn require_str(&self, key: &str, expected: &[&str], why: &str) -> Result<()> {
        match self.get(key) {
            None => Ok(()),
            Some(_) => {
                let got = self.string(key)?;
                if expected.contains(&got.as_str()) {
                    Ok(())
                } else {
                    Err(Error::data(
                        self.path,
                        format!(
                            "{}.{key} is {got:?}: only {expected:?} can be imported ({why})",
                            self.origin
                        ),
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_and_keeps_rows_as_the_head_needs() {
        // [[1, 2], [3, 4], [5, 6]] (3 outputs × 2 inputs) → [2, 3] transposed; keep 2 rows.
        let v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (s, t) = relayout("w", &[3, 2], v.clone(), Layout::Transpose).unwrap();
        assert_eq!((s, t), (vec![2, 3], vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]));
        let (s, t) = relayout("w", &[3, 2], v, Layout::TransposeKeepRows(2)).unwrap();
        assert_eq!((s, t), (vec![2, 2], vec![1.0, 3.0, 2.0, 4.0]));
        let (s, t) = relayout("b", &[3], vec![7.0, 8.0, 9.0], Layout::KeepFirst(2)).unwrap();
        assert_eq!((s, t), (vec![2], vec![7.0, 8.0]));
        let err = relayout("w", &[6], vec![0.0; 6], Layout::Transpose).unwrap_err();
        assert!(
            err.contains("`w` has shape [6], expected a matrix"),
            "{err}"
        );
    }

    #[test]
    fn drops_the_last_channel_of_each_group() {
        // 2 groups of (2 kept + 1 dropped) channels, 1 value each.
        let v = vec![0.0, 1.0, 9.0, 2.0, 3.0, 9.0];
        let layout = Layout::DropLastOfEachGroup { groups: 2, keep: 2 };
        let (s, t) = relayout("w", &[6, 1], v, layout).unwrap();
        assert_eq!((s, t), (vec![4, 1], vec![0.0, 1.0, 2.0, 3.0]));
        assert!(relayout("w", &[5, 1], vec![0.0; 5], layout).is_err());
    }
}

#[cfg(test)]
mod fixture_tests;
