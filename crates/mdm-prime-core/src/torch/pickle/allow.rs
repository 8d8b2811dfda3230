//! The allow list: which `module.name` globals a pickle may name, and what each one is.

use super::{PickleError, Result};
use crate::torch::value::DType;

/// Which globals a pickle may name, beyond the fixed PyTorch set (`collections.OrderedDict`,
/// the `torch._utils._rebuild_*` functions, storage classes, dtypes, `torch.device`,
/// `torch.Size`, `argparse.Namespace`, `builtins.set` / `frozenset` / `bytearray`,
/// `_codecs.encode`, TorchScript's `torch.jit._pickle.build_*list` / `restore_type_tag`).
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    classes: Vec<String>,
    torchscript: bool,
    pub(super) parent_links: bool,
}

impl AllowList {
    /// Only the fixed set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also reads instances of `module.name` (e.g. `omegaconf.dictconfig.DictConfig`) as plain
    /// data: an [`Object`](crate::torch::Object) with its constructor arguments and state. Nothing of it runs.
    pub fn class(mut self, name: impl Into<String>) -> Self {
        self.classes.push(name.into());
        self
    }

    /// Reads a reference from inside an object back to that object or one enclosing it (a parent
    /// link, such as omegaconf's `_parent` in a saved `DictConfig`) as `None`, instead of
    /// refusing the pickle as one that contains itself. The data below is kept; only the link
    /// back up is cut.
    pub fn parent_links_as_none(mut self, yes: bool) -> Self {
        self.parent_links = yes;
        self
    }

    /// Also reads TorchScript module classes (`__torch__.*`) as objects; set when reading the
    /// `data.pkl` of a `torch.jit.save` archive.
    pub fn torchscript(mut self, yes: bool) -> Self {
        self.torchscript = yes;
        self
    }

    pub(super) fn resolve(&self, module: &str, name: &str) -> Result<Global> {
        use Global as G;
        let full = format!("{module}.{name}");
        let global = match (module, name) {
            ("collections", "OrderedDict") => G::OrderedDict,
            ("torch._utils", "_rebuild_tensor") => G::Rebuild(Rebuild::V1),
            ("torch._utils", "_rebuild_tensor_v2") => G::Rebuild(Rebuild::V2),
            ("torch._utils", "_rebuild_tensor_v3") => G::Rebuild(Rebuild::V3),
            ("torch._utils", "_rebuild_parameter") => G::Rebuild(Rebuild::Parameter),
            ("torch._utils", "_rebuild_parameter_with_state") => {
                G::Rebuild(Rebuild::ParameterWithState)
            }
            ("torch" | "torch.storage", "UntypedStorage") => G::Storage(None),
            ("torch", n) if DType::from_storage_class(n).is_some() => {
                G::Storage(DType::from_storage_class(n))
            }
            ("torch", n) if DType::from_torch_name(n).is_some() => G::DType,
            ("torch", "Size") => G::Size,
            ("builtins" | "__builtin__", "set" | "frozenset") => G::Set,
            ("builtins" | "__builtin__", "bytearray") => G::ByteArray,
            ("_codecs", "encode") => G::Encode,
            (
                "torch.jit._pickle",
                "build_intlist" | "build_floatlist" | "build_boollist" | "build_doublelist"
                | "build_tensorlist",
            ) => G::JitList,
            ("torch.jit._pickle", "restore_type_tag") => G::JitTypeTag,
            ("torch", "device") | ("argparse", "Namespace") => G::Class,
            (m, _) if self.torchscript && (m == "__torch__" || m.starts_with("__torch__.")) => {
                G::Class
            }
            _ if self.classes.contains(&full) => G::Class,
            _ => return Err(PickleError::Refused(full)),
        };
        Ok(global)
    }
}

/// What an allowed global is, decided once at `GLOBAL`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Global {
    OrderedDict,
    Rebuild(Rebuild),
    /// A storage class (`None`: untyped, lengths in bytes).
    Storage(Option<DType>),
    DType,
    Size,
    Set,
    ByteArray,
    Encode,
    JitList,
    JitTypeTag,
    /// A class read as plain data.
    Class,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Rebuild {
    V1,
    V2,
    V3,
    Parameter,
    ParameterWithState,
}
