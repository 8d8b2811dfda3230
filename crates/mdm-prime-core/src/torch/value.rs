//! The data tree a pickle becomes: plain Python values, tensors as references into the
//! archive's storages, and allowed classes as inert [`Object`]s.

use std::fmt::Write as _;

/// Element types of PyTorch tensors, named as `torch.<name>` (`float32`, `bfloat16`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// PyTorch's name (`torch.float32` prints as `float32`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U64 => "uint64",
            DType::U32 => "uint32",
            DType::U16 => "uint16",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    /// The dtype a `torch.<name>` global stands for (`float32`, `half`, `long`, ...).
    pub fn from_torch_name(name: &str) -> Option<DType> {
        Some(match name {
            "float64" | "double" => DType::F64,
            "float32" | "float" => DType::F32,
            "float16" | "half" => DType::F16,
            "bfloat16" => DType::BF16,
            "int64" | "long" => DType::I64,
            "int32" | "int" => DType::I32,
            "int16" | "short" => DType::I16,
            "int8" => DType::I8,
            "uint64" => DType::U64,
            "uint32" => DType::U32,
            "uint16" => DType::U16,
            "uint8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }

    /// The dtype of a legacy typed storage class (`torch.FloatStorage`, ...).
    pub fn from_storage_class(name: &str) -> Option<DType> {
        Some(match name {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }
}

/// A storage named by a persistent id `('storage', type, key, location, numel)`: its bytes are
/// the archive entry `<root>/data/<key>`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// The entry name under `<root>/data/`.
    pub key: String,
    /// Element type of a typed storage; `None` for `torch.storage.UntypedStorage` (bytes).
    pub dtype: Option<DType>,
    /// Where it was saved from (`cpu`, `cuda:0`); informational.
    pub location: String,
    /// Its length in bytes, as the pickle declares it.
    pub bytes: u64,
}

/// A tensor as the pickle describes it: a strided view (in elements) of a storage. Reading
/// its values is [`super::TorchArchive::tensor_f32`].
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    pub dtype: DType,
    pub storage: StorageRef,
    /// First element, in elements from the start of the storage.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Strides in elements, one per dimension.
    pub stride: Vec<usize>,
    pub requires_grad: bool,
}

impl TensorRef {
    /// The number of elements, the product of the shape (saturating; a tensor read from a
    /// pickle has been checked not to overflow).
    pub fn numel(&self) -> usize {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// How many storage elements the view reaches: `offset + Σ (shape[i] − 1)·stride[i] + 1`,
    /// 0 for an empty tensor, `None` where the shape or the extent overflows.
    pub fn storage_elements_needed(&self) -> Option<usize> {
        let numel = self
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        if numel == 0 {
            return Some(0);
        }
        self.shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |acc, (&d, &s)| {
                acc.checked_add((d - 1).checked_mul(s)?)
            })?
            .checked_add(1)
    }

    /// Whether the view is the dense row-major layout of its shape.
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1usize;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expect {
                return false;
            }
            expect = expect.saturating_mul(d);
        }
        true
    }
}

/// An instance of an allowed class, read as data: nothing of the class runs. `args` are what
/// its constructor would have received (`REDUCE` / `NEWOBJ`), `state` what `BUILD` would have
/// set (usually a dict of attributes); `items` / `list` hold what a dict or list subclass had.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `module.name`, e.g. `argparse.Namespace`.
    pub class: String,
    pub args: Vec<Value>,
    pub state: Option<Box<Value>>,
    pub items: Vec<(Value, Value)>,
    pub list: Vec<Value>,
}

/// A value read from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// A `set` or `frozenset`, in pickle order.
    Set(Vec<Value>),
    /// A `dict` or `OrderedDict`: pairs in insertion order.
    Dict(Vec<(Value, Value)>),
    Tensor(TensorRef),
    Object(Object),
    /// A storage that is not inside a tensor.
    Storage(StorageRef),
    /// A reference to an allowed class or constant that was never called (a dtype such as
    /// `torch.float16`, a class stored as a value), by `module.name`.
    Global(String),
}

static NONE: Value = Value::None;

impl Value {
    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Set(_) => "set",
            Value::Dict(_) => "dict",
            Value::Tensor(_) => "tensor",
            Value::Object(_) => "object",
            Value::Storage(_) => "storage",
            Value::Global(_) => "global",
        }
    }

    /// The entry `key` of a dict with string keys, or the attribute `key` of an object (its
    /// state dict, then its dict items). `None` where there is no such key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        fn find<'a>(pairs: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
            pairs
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v)
        }
        match self {
            Value::Dict(pairs) => find(pairs, key),
            Value::Object(o) => o
                .state
                .as_deref()
                .and_then(|s| s.get(key))
                .or_else(|| find(&o.items, key)),
            _ => None,
        }
    }

    /// Item `i` of a list or tuple.
    pub fn get_index(&self, i: usize) -> Option<&Value> {
        self.as_list()?.get(i)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// A float, or an int as a float (Python's numeric tower).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The items of a list or tuple.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The pairs of a dict.
    pub fn as_dict(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(pairs) => Some(pairs),
            _ => None,
        }
    }

    pub fn as_tensor(&self) -> Option<&TensorRef> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// Every tensor under this value, in pickle order, named by its path joined with `.`:
    /// dict keys (strings or ints), object attributes, list indices. For a state dict these
    /// are its keys (`layer.weight`); for a TorchScript module its parameter and buffer names
    /// (`net.layers.conv.weight`); `ema.shadow_params.0` for a list inside a dict.
    pub fn named_tensors(&self) -> Vec<(String, &TensorRef)> {
        let mut out = Vec::new();
        self.walk(&mut String::new(), &mut out);
        out
    }

    fn walk<'a>(&'a self, path: &mut String, out: &mut Vec<(String, &'a TensorRef)>) {
        let child = |path: &mut String, name: &dyn std::fmt::Display| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            let _ = write!(path, "{name}");
            len
        };
        let pairs = |pairs: &'a [(Value, Value)], path: &mut String, out: &mut Vec<_>| {
            for (k, v) in pairs {
                let len = match k {
                    Value::Str(s) => child(path, s),
                    Value::Int(i) => child(path, i),
                    _ => child(path, &k.kind()),
                };
                v.walk(path, out);
                path.truncate(len);
            }
        };
        let items = |items: &'a [Value], path: &mut String, out: &mut Vec<_>| {
            for (i, v) in items.iter().enumerate() {
                let len = child(path, &i);
                v.walk(path, out);
                path.truncate(len);
            }
        };
        match self {
            Value::Tensor(t) => out.push((path.clone(), t)),
            Value::Dict(p) => pairs(p, path, out),
            Value::List(v) | Value::Tuple(v) | Value::Set(v) => items(v, path, out),
            Value::Object(o) => {
                if !o.args.is_empty() {
                    let len = child(path, &"args");
                    items(&o.args, path, out);
                    path.truncate(len);
                }
                if let Some(state) = &o.state {
                    state.walk(path, out);
                }
                pairs(&o.items, path, out);
                items(&o.list, path, out);
            }
            _ => {}
        }
    }
}

/// `value["key"]`: the entry or attribute `key`, or `None` where there is none (as
/// `serde_json::Value` does), so nested look-ups read `ckpt["ema"]["shadow_params"][0]`.
impl std::ops::Index<&str> for Value {
    type Output = Value;
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NONE)
    }
}

/// `value[i]`: item `i` of a list or tuple, or `None`.
impl std::ops::Index<usize> for Value {
    type Output = Value;
    fn index(&self, i: usize) -> &Value {
        self.get_index(i).unwrap_or(&NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[usize], stride: &[usize]) -> TensorRef {
        TensorRef {
            dtype: DType::F32,
            storage: StorageRef {
                key: "0".into(),
                dtype: Some(DType::F32),
                location: "cpu".into(),
                bytes: 0,
            },
            offset: 0,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
            requires_grad: false,
        }
    }

    #[test]
    fn contiguity_ignores_the_stride_of_size_one_dimensions() {
        assert!(tensor(&[2, 3], &[3, 1]).is_contiguous());
        assert!(tensor(&[2, 1, 3], &[3, 99, 1]).is_contiguous());
        assert!(tensor(&[], &[]).is_contiguous());
        assert!(!tensor(&[3, 2], &[1, 3]).is_contiguous());
        assert_eq!(tensor(&[2, 0, 3], &[0, 3, 1]).numel(), 0);
    }

    #[test]
    fn lookups_and_tensor_names_follow_dicts_objects_and_lists() {
        let t = Value::Tensor(tensor(&[1], &[1]));
        let module = Value::Object(Object {
            class: "__torch__.M".into(),
            args: vec![],
            state: Some(Box::new(Value::Dict(vec![
                (Value::Str("training".into()), Value::Bool(true)),
                (Value::Str("weight".into()), t.clone()),
            ]))),
            items: vec![],
            list: vec![],
        });
        let root = Value::Dict(vec![
            (Value::Str("net".into()), module),
            (
                Value::Str("ema".into()),
                Value::Dict(vec![(
                    Value::Str("shadow".into()),
                    Value::List(vec![t.clone(), Value::Int(3)]),
                )]),
            ),
            (Value::Int(7), t),
        ]);
        let names: Vec<String> = root.named_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["net.weight", "ema.shadow.0", "7"]);
        assert_eq!(root["net"]["training"].as_bool(), Some(true));
        assert_eq!(root["ema"]["shadow"][1].as_int(), Some(3));
        assert_eq!(root["missing"]["deeper"][4], Value::None);
    }
}
