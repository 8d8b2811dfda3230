//! What the opcodes that make values do: containers, objects, `REDUCE` of the allowed
//! globals (tensors, storages, dicts, sets, bytes), and the final tree.

use super::allow::{Global, Rebuild};
use super::{Id, MAX_DEPTH, Node, PickleError, Result, Vm};
use crate::torch::value::{DType, Object, StorageRef, TensorRef, Value};

impl Vm<'_> {
    // ---- containers and objects ----------------------------------------------------------

    pub(super) fn global(&mut self, module: &str, name: &str) -> Result<()> {
        let global = self.allow.resolve(module, name)?;
        self.push(Node::Global(format!("{module}.{name}"), global))?;
        Ok(())
    }

    pub(super) fn set_items(&mut self, pairs: Vec<(Id, Id)>) -> Result<()> {
        let top = self.peek()?;
        match &mut self.nodes[top] {
            Node::Dict(p) | Node::Object { items: p, .. } => p.extend(pairs),
            other => {
                let kind = node_kind(other);
                return Err(self.bad(format!("SETITEMS on a {kind}")));
            }
        }
        Ok(())
    }

    pub(super) fn append(&mut self, items: Vec<Id>) -> Result<()> {
        let top = self.peek()?;
        match &mut self.nodes[top] {
            Node::List(v) | Node::Set(v) | Node::Object { list: v, .. } => v.extend(items),
            other => {
                let kind = node_kind(other);
                return Err(self.bad(format!("APPENDS on a {kind}")));
            }
        }
        Ok(())
    }

    /// `BUILD`: an object keeps its state. A dict's attributes are dropped (an
    /// `OrderedDict` state dict carries `_metadata`, the modules' version numbers); state on
    /// anything else is an error.
    pub(super) fn build(&mut self, state: Id) -> Result<()> {
        let top = self.peek()?;
        let empty = match &self.nodes[state] {
            Node::Leaf(Value::None) => true,
            Node::Dict(p) => p.is_empty(),
            _ => false,
        };
        match &mut self.nodes[top] {
            Node::Object { state: s, .. } => *s = Some(state),
            Node::Dict(_) => {}
            _ if empty => {}
            other => {
                let kind = node_kind(other);
                return Err(self.bad(format!("BUILD with a state on a {kind}")));
            }
        }
        Ok(())
    }

    fn global_of(&self, id: Id) -> Result<(String, Global)> {
        match &self.nodes[id] {
            Node::Global(name, g) => Ok((name.clone(), *g)),
            other => Err(self.bad(format!("a {} is not callable", node_kind(other)))),
        }
    }

    fn tuple(&self, id: Id) -> Result<Vec<Id>> {
        match &self.nodes[id] {
            Node::Tuple(items) => Ok(items.clone()),
            other => Err(self.bad(format!("arguments are a {}, not a tuple", node_kind(other)))),
        }
    }

    pub(super) fn new_object(&mut self, class: Id, args: Id) -> Result<Id> {
        let (name, global) = self.global_of(class)?;
        let args = self.tuple(args)?;
        match global {
            Global::Class => {}
            Global::OrderedDict if args.is_empty() => return self.add(Node::Dict(vec![])),
            Global::Set if args.is_empty() => return self.add(Node::Set(vec![])),
            _ => return Err(self.bad(format!("`{name}` cannot be instantiated with NEWOBJ"))),
        }
        self.add(Node::Object {
            class: name,
            args,
            state: None,
            items: Vec::new(),
            list: Vec::new(),
        })
    }

    /// Adds a node, charged against the budget (so that copying a shared list again and
    /// again cannot grow the arena faster than the input allows).
    pub(super) fn add(&mut self, node: Node) -> Result<Id> {
        self.charge(node_bytes(&node))?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.budget = self
            .budget
            .checked_sub(bytes)
            .ok_or(PickleError::TooLarge(self.limit))?;
        Ok(())
    }

    /// `REDUCE`: what calling an allowed global would have produced, as data.
    pub(super) fn reduce(&mut self, callable: Id, args: Id) -> Result<Id> {
        let (name, global) = self.global_of(callable)?;
        let args = self.tuple(args)?;
        let wrong = |vm: &Self| vm.bad(format!("`{name}` cannot be called with these arguments"));
        let node = match (global, args.as_slice()) {
            (Global::Class, _) => Node::Object {
                class: name.clone(),
                args: args.clone(),
                state: None,
                items: Vec::new(),
                list: Vec::new(),
            },
            (Global::OrderedDict, []) => Node::Dict(vec![]),
            (Global::OrderedDict, [list]) => Node::Dict(self.pair_list(*list)?),
            (Global::Rebuild(kind), _) => Node::Leaf(Value::Tensor(self.tensor(kind, &args)?)),
            (Global::Size | Global::JitList, [items]) => match &self.nodes[*items] {
                Node::Tuple(v) if global == Global::Size => Node::Tuple(v.clone()),
                Node::List(v) => Node::List(v.clone()),
                _ => return Err(wrong(self)),
            },
            (Global::Set, []) => Node::Set(vec![]),
            (Global::Set, [items]) => match &self.nodes[*items] {
                Node::List(v) | Node::Tuple(v) | Node::Set(v) => Node::Set(v.clone()),
                _ => return Err(wrong(self)),
            },
            (Global::ByteArray, []) => Node::Leaf(Value::Bytes(vec![])),
            (Global::ByteArray, [b]) => match &self.nodes[*b] {
                Node::Leaf(Value::Bytes(b)) => Node::Leaf(Value::Bytes(b.clone())),
                _ => return Err(wrong(self)),
            },
            (Global::Encode, [text, codec]) => {
                Node::Leaf(Value::Bytes(self.latin1(*text, *codec)?))
            }
            (Global::JitTypeTag, [value, _]) => return Ok(*value),
            _ => return Err(wrong(self)),
        };
        self.add(node)
    }

    fn pair_list(&self, list: Id) -> Result<Vec<(Id, Id)>> {
        let items = match &self.nodes[list] {
            Node::List(v) | Node::Tuple(v) => v,
            other => return Err(self.bad(format!("OrderedDict of a {}", node_kind(other)))),
        };
        items
            .iter()
            .map(|&p| match &self.nodes[p] {
                Node::Tuple(kv) | Node::List(kv) if kv.len() == 2 => Ok((kv[0], kv[1])),
                _ => Err(self.bad("OrderedDict items must be (key, value) pairs".into())),
            })
            .collect()
    }

    /// `_codecs.encode(text, 'latin1')`: how protocol 2 writes Python 3 `bytes`.
    fn latin1(&self, text: Id, codec: Id) -> Result<Vec<u8>> {
        match (&self.nodes[text], &self.nodes[codec]) {
            (Node::Leaf(Value::Str(s)), Node::Leaf(Value::Str(c)))
                if c == "latin1" || c == "latin-1" =>
            {
                s.chars()
                    .map(|ch| u8::try_from(u32::from(ch)))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| self.bad("_codecs.encode: a character beyond Latin-1".into()))
            }
            _ => Err(self.bad("_codecs.encode is read only as (str, 'latin1')".into())),
        }
    }

    // ---- tensors ---------------------------------------------------------------------------

    fn int(&self, id: Id, what: &str) -> Result<i64> {
        match &self.nodes[id] {
            Node::Leaf(Value::Int(i)) => Ok(*i),
            Node::Leaf(Value::Bool(b)) => Ok(i64::from(*b)),
            other => Err(self.bad(format!("{what} is a {}, not an int", node_kind(other)))),
        }
    }

    fn index(&self, id: Id, what: &str) -> Result<usize> {
        let i = self.int(id, what)?;
        usize::try_from(i).map_err(|_| self.bad(format!("{what} is negative ({i})")))
    }

    fn indices(&self, id: Id, what: &str) -> Result<Vec<usize>> {
        match &self.nodes[id] {
            Node::Tuple(v) | Node::List(v) => v.iter().map(|&i| self.index(i, what)).collect(),
            other => Err(self.bad(format!("{what}s are a {}, not a tuple", node_kind(other)))),
        }
    }

    fn bool(&self, id: Id) -> Result<bool> {
        match &self.nodes[id] {
            Node::Leaf(Value::Bool(b)) => Ok(*b),
            other => Err(self.bad(format!("requires_grad is a {}", node_kind(other)))),
        }
    }

    /// The tensor a `torch._utils._rebuild_*` call describes.
    fn tensor(&self, kind: Rebuild, args: &[Id]) -> Result<TensorRef> {
        match (kind, args) {
            (Rebuild::Parameter, &[data, grad, _])
            | (Rebuild::ParameterWithState, &[data, grad, _, _]) => match &self.nodes[data] {
                Node::Leaf(Value::Tensor(t)) => Ok(TensorRef {
                    requires_grad: self.bool(grad)?,
                    ..t.clone()
                }),
                other => Err(self.bad(format!("a parameter of a {}", node_kind(other)))),
            },
            (Rebuild::V1, &[storage, offset, size, stride]) => {
                self.view([storage, offset, size, stride], None, false)
            }
            (Rebuild::V2, &[storage, offset, size, stride, grad, _, ..]) if args.len() <= 7 => {
                self.view([storage, offset, size, stride], None, self.bool(grad)?)
            }
            (Rebuild::V3, &[storage, offset, size, stride, grad, _, dtype, ..])
                if args.len() <= 8 =>
            {
                let dtype = match &self.nodes[dtype] {
                    Node::Global(name, Global::DType) => {
                        name.strip_prefix("torch.").and_then(DType::from_torch_name)
                    }
                    _ => None,
                };
                let dtype =
                    dtype.ok_or_else(|| self.bad("_rebuild_tensor_v3 without a dtype".into()))?;
                self.view(
                    [storage, offset, size, stride],
                    Some(dtype),
                    self.bool(grad)?,
                )
            }
            _ => Err(self.bad(format!(
                "a tensor rebuild function called with {} arguments",
                args.len()
            ))),
        }
    }

    /// `[storage, storage_offset, size, stride]` as a view; the extent is checked for
    /// overflow here and against the storage's real length when the values are read.
    fn view(
        &self,
        [storage, offset, size, stride]: [Id; 4],
        dtype: Option<DType>,
        grad: bool,
    ) -> Result<TensorRef> {
        let Node::Leaf(Value::Storage(s)) = &self.nodes[storage] else {
            return Err(self.bad("a tensor whose storage is not a persistent storage id".into()));
        };
        let dtype = dtype
            .or(s.dtype)
            .ok_or_else(|| self.bad("an untyped storage used without a dtype".into()))?;
        let t = TensorRef {
            dtype,
            storage: s.clone(),
            offset: self.index(offset, "a storage offset")?,
            shape: self.indices(size, "a tensor dimension")?,
            stride: self.indices(stride, "a tensor stride")?,
            requires_grad: grad,
        };
        if t.shape.len() != t.stride.len() {
            return Err(self.bad(format!(
                "a tensor with shape {:?} and stride {:?}",
                t.shape, t.stride
            )));
        }
        if t.storage_elements_needed().is_none() {
            return Err(self.bad(format!(
                "a tensor whose extent overflows (offset {}, shape {:?}, stride {:?})",
                t.offset, t.shape, t.stride
            )));
        }
        Ok(t)
    }

    /// `BINPERSID` of `('storage', storage class, key, location, numel)`.
    pub(super) fn storage(&self, pid: Id) -> Result<StorageRef> {
        let bad = || {
            self.bad("a persistent id that is not ('storage', class, key, location, size)".into())
        };
        let Node::Tuple(items) = &self.nodes[pid] else {
            return Err(bad());
        };
        let &[tag, class, key, location, numel] = items.as_slice() else {
            return Err(bad());
        };
        let text = |id: Id| match &self.nodes[id] {
            Node::Leaf(Value::Str(s)) => Some(s.clone()),
            Node::Leaf(Value::Int(i)) => Some(i.to_string()),
            _ => None,
        };
        if text(tag).as_deref() != Some("storage") {
            return Err(bad());
        }
        let Node::Global(_, Global::Storage(dtype)) = self.nodes[class] else {
            return Err(self.bad("a persistent id whose type is not a storage class".into()));
        };
        let key = text(key).ok_or_else(bad)?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(self.bad(format!("storage key {key:?} is not a plain name")));
        }
        let numel = self.index(numel, "a storage size")? as u64;
        let bytes = numel
            .checked_mul(dtype.map_or(1, |d| d.size() as u64))
            .ok_or_else(|| self.bad(format!("storage size {numel} overflows")))?;
        Ok(StorageRef {
            key,
            dtype,
            location: text(location).ok_or_else(bad)?,
            bytes,
        })
    }

    // ---- the tree --------------------------------------------------------------------------

    /// The value of node `id` as a tree; shared nodes are copied, each copy charged.
    pub(super) fn tree(&mut self, id: Id, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(PickleError::TooDeep);
        }
        self.charge(std::mem::size_of::<Value>() + node_bytes(&self.nodes[id]))?;
        let d = depth + 1;
        Ok(match &self.nodes[id] {
            Node::Leaf(v) => v.clone(),
            Node::Global(name, _) => Value::Global(name.clone()),
            Node::List(v) => Value::List(self.trees(&v.clone(), d)?),
            Node::Tuple(v) => Value::Tuple(self.trees(&v.clone(), d)?),
            Node::Set(v) => Value::Set(self.trees(&v.clone(), d)?),
            Node::Dict(p) => Value::Dict(self.pair_trees(&p.clone(), d)?),
            Node::Object { .. } if self.open.contains(&id) => {
                // A reference back to an enclosing object: a parent link (omegaconf's
                // `_parent`), read as None where the caller allows it; otherwise a cycle.
                if !self.allow.parent_links {
                    return Err(PickleError::TooDeep);
                }
                Value::None
            }
            Node::Object {
                class,
                args,
                state,
                items,
                list,
            } => {
                self.open.push(id);
                let (class, args, state, items, list) = (
                    class.clone(),
                    args.clone(),
                    *state,
                    items.clone(),
                    list.clone(),
                );
                let object = Value::Object(Object {
                    class,
                    args: self.trees(&args, d)?,
                    state: match state {
                        Some(s) => Some(Box::new(self.tree(s, d)?)),
                        None => None,
                    },
                    items: self.pair_trees(&items, d)?,
                    list: self.trees(&list, d)?,
                });
                self.open.pop();
                object
            }
        })
    }

    fn trees(&mut self, ids: &[Id], depth: usize) -> Result<Vec<Value>> {
        ids.iter().map(|&id| self.tree(id, depth)).collect()
    }

    fn pair_trees(&mut self, pairs: &[(Id, Id)], depth: usize) -> Result<Vec<(Value, Value)>> {
        pairs
            .iter()
            .map(|&(k, v)| Ok((self.tree(k, depth)?, self.tree(v, depth)?)))
            .collect()
    }
}

/// Heap and inline bytes of a node, for the budget.
fn node_bytes(node: &Node) -> usize {
    let id = std::mem::size_of::<Id>();
    std::mem::size_of::<Node>()
        + match node {
            Node::Leaf(Value::Str(s)) | Node::Global(s, _) => s.len(),
            Node::Leaf(Value::Bytes(b)) => b.len(),
            Node::Leaf(Value::Tensor(t)) => {
                id * 2 * t.shape.len() + t.storage.key.len() + t.storage.location.len()
            }
            Node::Leaf(Value::Storage(s)) => s.key.len() + s.location.len(),
            Node::Leaf(_) => 0,
            Node::List(v) | Node::Tuple(v) | Node::Set(v) => id * v.len(),
            Node::Dict(p) => 2 * id * p.len(),
            Node::Object {
                class,
                args,
                items,
                list,
                ..
            } => class.len() + id * (args.len() + 2 * items.len() + list.len()),
        }
}

pub(super) fn node_kind(node: &Node) -> &'static str {
    match node {
        Node::Leaf(v) => v.kind(),
        Node::Global(..) => "global",
        Node::List(_) => "list",
        Node::Tuple(_) => "tuple",
        Node::Set(_) => "set",
        Node::Dict(_) => "dict",
        Node::Object { .. } => "object",
    }
}
