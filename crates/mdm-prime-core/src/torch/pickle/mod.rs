//! An allow-list pickle reader that cannot execute code: it interprets the opcodes that
//! `torch.save` (protocol 2) and TorchScript's `data.pkl` use and builds a [`Value`] tree.
//!
//! Python's unpickler imports every `GLOBAL` and calls it on `REDUCE`, which is how a pickle
//! runs `os.system`. Here a `GLOBAL` is looked up in a fixed table of names ([`AllowList`]);
//! anything else stops the read with [`PickleError::Refused`] naming `module.name`. Even an
//! allowed name is never called: `REDUCE` of `torch._utils._rebuild_tensor_v2` builds a
//! [`TensorRef`](crate::torch::TensorRef), `REDUCE` / `NEWOBJ` of a plain-data class builds an
//! inert [`Object`](crate::torch::Object).
//!
//! Values live in an arena while the pickle runs (so `BINGET` shares, and a later `APPENDS`
//! into a memoised list is seen by every reference, as in Python) and become a tree at
//! `STOP`. Bounds: every length is checked against the bytes left before anything is
//! allocated; every node the arena adds (copies of shared lists included) and every node of
//! the final tree is charged against a budget of [`BUDGET_PER_INPUT_BYTE`] bytes per input
//! byte (plus 1 MiB); nesting is limited to [`MAX_DEPTH`] (a structure that contains itself
//! hits it). Any input gives a value or an error, never a panic.

use std::collections::HashMap;

mod allow;
mod build;

pub use allow::AllowList;
use allow::Global;

use super::value::Value;

/// Deepest nesting accepted when building the tree (Python's default recursion limit is 1000;
/// real checkpoints nest a few dozen levels at most).
pub const MAX_DEPTH: usize = 256;

/// Bytes the arena and the tree may take per byte of pickle, plus 1 MiB: sharing through the
/// memo is allowed, a 20-byte input that doubles a tuple thirty times is not. Real files use
/// 29–56 (the fixtures: 29–43; the FID Inception-v3's 28 KB `data.pkl`: 56).
pub const BUDGET_PER_INPUT_BYTE: usize = 256;

/// Why a pickle could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PickleError {
    /// A `GLOBAL` outside the allow list; nothing was imported or called.
    #[error(
        "refused global `{0}`: not on the allow list, so it was neither imported nor called \
         (if it is a plain data class, allow it with AllowList::class)"
    )]
    Refused(String),
    /// The input ends inside an opcode's argument.
    #[error("byte {at}: the pickle ends inside {what}")]
    Truncated { at: usize, what: &'static str },
    /// An opcode this reader does not implement.
    #[error("byte {at}: unsupported pickle opcode 0x{op:02x}")]
    Opcode { at: usize, op: u8 },
    /// Opcodes that do not fit together (stack underflow, a tensor with a bad shape, ...).
    #[error("byte {at}: {reason}")]
    Malformed { at: usize, reason: String },
    /// Nesting deeper than [`MAX_DEPTH`], or a value that contains itself.
    #[error("the pickle nests deeper than {MAX_DEPTH} levels (or contains itself)")]
    TooDeep,
    /// Shared references that would expand beyond the budget.
    #[error("the pickle expands to more than {0} bytes of values through shared references")]
    TooLarge(usize),
}

type Result<T> = std::result::Result<T, PickleError>;

type Id = usize;

/// A value under construction; containers refer to other nodes by index.
#[derive(Debug)]
enum Node {
    Leaf(Value),
    Global(String, Global),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    Set(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Object {
        class: String,
        args: Vec<Id>,
        state: Option<Id>,
        items: Vec<(Id, Id)>,
        list: Vec<Id>,
    },
}

/// Reads one pickle. Fails on the first refused global, unsupported opcode or inconsistency.
pub fn load(bytes: &[u8], allow: &AllowList) -> Result<Value> {
    let limit = bytes
        .len()
        .saturating_mul(BUDGET_PER_INPUT_BYTE)
        .saturating_add(1 << 20);
    let mut vm = Vm {
        data: bytes,
        pos: 0,
        at: 0,
        nodes: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        open: Vec::new(),
        allow,
        budget: limit,
        limit,
    };
    let root = vm.run()?;
    vm.tree(root, 0)
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Start of the opcode being run, for error messages.
    at: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    allow: &'a AllowList,
    /// The objects whose tree is being built (to recognise a reference back to one).
    open: Vec<Id>,
    /// Bytes the arena and the tree may still take.
    budget: usize,
    limit: usize,
}

impl<'a> Vm<'a> {
    fn run(&mut self) -> Result<Id> {
        loop {
            self.at = self.pos;
            let op = self.byte("an opcode")?;
            if op == b'.' {
                return self.pop();
            }
            self.step(op)?;
        }
    }

    /// One opcode (a table: one line per opcode, helpers below).
    fn step(&mut self, op: u8) -> Result<()> {
        match op {
            0x80 => match self.byte("PROTO")? {
                0..=5 => {}
                v => return Err(self.bad(format!("pickle protocol {v} is not supported"))),
            },
            0x95 => drop(self.take(8, "FRAME")?),
            b'c' => {
                let module = self.line("GLOBAL")?;
                let name = self.line("GLOBAL")?;
                self.global(&module, &name)?;
            }
            0x93 => {
                let name = self.pop_str()?;
                let module = self.pop_str()?;
                self.global(&module, &name)?;
            }
            b'q' => {
                let i = self.byte("BINPUT")?;
                self.put(u32::from(i))?;
            }
            b'r' => {
                let i = self.u32("LONG_BINPUT")?;
                self.put(i)?;
            }
            0x94 => self.put(u32::try_from(self.memo.len()).unwrap_or(u32::MAX))?,
            b'h' => {
                let i = self.byte("BINGET")?;
                self.get(u32::from(i))?;
            }
            b'j' => {
                let i = self.u32("LONG_BINGET")?;
                self.get(i)?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => drop(self.pop()?),
            b'1' => drop(self.pop_mark()?),
            b'2' => self.stack.push(self.peek()?),
            b'}' => self.push(Node::Dict(Vec::new()))?,
            b']' => self.push(Node::List(Vec::new()))?,
            b')' => self.push(Node::Tuple(Vec::new()))?,
            0x8f => self.push(Node::Set(Vec::new()))?,
            b'd' => {
                let pairs = self.pairs()?;
                self.push(Node::Dict(pairs))?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Node::List(items))?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items))?;
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push(Node::Set(items))?;
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let from = self
                    .stack
                    .len()
                    .checked_sub(n)
                    .ok_or_else(|| self.underflow())?;
                let items = self.stack.split_off(from);
                self.push(Node::Tuple(items))?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![(k, v)])?;
            }
            b'u' => {
                let pairs = self.pairs()?;
                self.set_items(pairs)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])?;
            }
            b'e' | 0x90 => {
                let items = self.pop_mark()?;
                self.append(items)?;
            }
            b'N' => self.leaf(Value::None)?,
            0x88 => self.leaf(Value::Bool(true))?,
            0x89 => self.leaf(Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array("BININT")?);
                self.leaf(Value::Int(i64::from(v)))?;
            }
            b'K' => {
                let v = self.byte("BININT1")?;
                self.leaf(Value::Int(i64::from(v)))?;
            }
            b'M' => {
                let v = u16::from_le_bytes(self.array("BININT2")?);
                self.leaf(Value::Int(i64::from(v)))?;
            }
            0x8a => {
                let n = usize::from(self.byte("LONG1")?);
                self.long(n)?;
            }
            0x8b => {
                let n = self.u32("LONG4")? as usize;
                self.long(n)?;
            }
            b'I' | b'L' => self.text_int()?,
            b'G' => {
                let v = f64::from_be_bytes(self.array("BINFLOAT")?);
                self.leaf(Value::Float(v))?;
            }
            b'F' => {
                let line = self.line("FLOAT")?;
                let v = line
                    .parse()
                    .map_err(|_| self.bad(format!("FLOAT {line:?} is not a number")))?;
                self.leaf(Value::Float(v))?;
            }
            b'X' | 0x8c | 0x8d => {
                let n = self.length(op, "BINUNICODE")?;
                let raw = self.take(n, "BINUNICODE")?;
                let s = std::str::from_utf8(raw)
                    .map_err(|_| self.bad("BINUNICODE is not UTF-8".into()))?;
                self.leaf(Value::Str(s.to_owned()))?;
            }
            b'T' | b'U' => {
                // Python 2 `str`: bytes read as Latin-1 text (each byte one character).
                let n = self.length(op, "BINSTRING")?;
                let raw = self.take(n, "BINSTRING")?;
                self.leaf(Value::Str(raw.iter().map(|&b| char::from(b)).collect()))?;
            }
            b'B' | b'C' | 0x8e => {
                let n = self.length(op, "BINBYTES")?;
                let raw = self.take(n, "BINBYTES")?.to_vec();
                self.leaf(Value::Bytes(raw))?;
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.storage(pid)?;
                self.leaf(Value::Storage(storage))?;
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let id = self.reduce(callable, args)?;
                self.stack.push(id);
            }
            0x81 => {
                let args = self.pop()?;
                let class = self.pop()?;
                let id = self.new_object(class, args)?;
                self.stack.push(id);
            }
            0x92 => {
                let kwargs = self.pop()?;
                if !matches!(&self.nodes[kwargs], Node::Dict(p) if p.is_empty()) {
                    return Err(self.bad("NEWOBJ_EX with keyword arguments".into()));
                }
                let args = self.pop()?;
                let class = self.pop()?;
                let id = self.new_object(class, args)?;
                self.stack.push(id);
            }
            b'b' => {
                let state = self.pop()?;
                self.build(state)?;
            }
            _ => return Err(PickleError::Opcode { at: self.at, op }),
        }
        Ok(())
    }

    // ---- input -------------------------------------------------------------------------

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let data = self.data;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or(PickleError::Truncated { at: self.at, what })?;
        let s = &data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// The length prefix of a string or bytes opcode: 1, 4 or 8 bytes by opcode. Lengths past
    /// the end of the input fail in [`Self::take`], before anything is allocated.
    fn length(&mut self, op: u8, what: &'static str) -> Result<usize> {
        Ok(match op {
            0x8c | b'C' | b'U' => usize::from(self.byte(what)?),
            0x8d | 0x8e => {
                usize::try_from(u64::from_le_bytes(self.array(what)?)).unwrap_or(usize::MAX)
            }
            _ => self.u32(what)? as usize,
        })
    }

    /// A `\n`-terminated ASCII argument (GLOBAL, INT, LONG, FLOAT).
    fn line(&mut self, what: &'static str) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(PickleError::Truncated { at: self.at, what })?;
        let text = std::str::from_utf8(&rest[..n])
            .map_err(|_| self.bad(format!("{what} argument is not text")))?
            .to_owned();
        self.pos += n + 1;
        Ok(text)
    }

    /// `LONG1` / `LONG4`: a little-endian two's-complement integer of `n` bytes. One that does
    /// not fit in 64 bits is read as the nearest float (transformers pickles its "no limit"
    /// `model_max_length = int(1e30)` this way): the reader keeps data, not arithmetic.
    fn long(&mut self, n: usize) -> Result<()> {
        let raw = self.take(n, "LONG")?;
        let negative = raw.last().is_some_and(|&b| b & 0x80 != 0);
        let fill = if negative { 0xff } else { 0 };
        let mut le = [fill; 8];
        let used = raw.len().min(8);
        le[..used].copy_from_slice(&raw[..used]);
        let v = i64::from_le_bytes(le);
        let fits = raw.len() <= 8 || (raw[8..].iter().all(|&b| b == fill) && (v < 0) == negative);
        if fits {
            self.leaf(Value::Int(v))?;
        } else {
            let unsigned = raw
                .iter()
                .rev()
                .fold(0f64, |acc, &b| acc * 256.0 + f64::from(b));
            let value = if negative {
                unsigned - 256f64.powi(n as i32)
            } else {
                unsigned
            };
            self.leaf(Value::Float(value))?;
        }
        Ok(())
    }

    /// `INT` / `LONG` (protocol 0): decimal text; `INT 01` / `00` are `True` / `False`.
    fn text_int(&mut self) -> Result<()> {
        let line = self.line("INT")?;
        let value = match line.as_str() {
            "01" => Value::Bool(true),
            "00" => Value::Bool(false),
            s => Value::Int(
                s.trim_end_matches('L')
                    .parse()
                    .map_err(|_| self.bad(format!("INT {s:?} is not a 64-bit integer")))?,
            ),
        };
        self.leaf(value)?;
        Ok(())
    }

    // ---- stack and memo ----------------------------------------------------------------

    fn push(&mut self, node: Node) -> Result<()> {
        let id = self.add(node)?;
        self.stack.push(id);
        Ok(())
    }

    fn leaf(&mut self, value: Value) -> Result<()> {
        self.push(Node::Leaf(value))
    }

    fn pop(&mut self) -> Result<Id> {
        // A MARK above the top of the stack means the opcode reached into a marked frame.
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(self.underflow())?;
        }
        self.stack.pop().ok_or_else(|| self.underflow())
    }

    fn peek(&self) -> Result<Id> {
        self.stack.last().copied().ok_or_else(|| self.underflow())
    }

    fn pop_mark(&mut self) -> Result<Vec<Id>> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.bad("an opcode needs a MARK and there is none".into()))?;
        if mark > self.stack.len() {
            return Err(self.underflow());
        }
        Ok(self.stack.split_off(mark))
    }

    /// Key-value pairs from the items above the last MARK.
    fn pairs(&mut self) -> Result<Vec<(Id, Id)>> {
        let items = self.pop_mark()?;
        if items.len() % 2 != 0 {
            return Err(self.bad(format!("{} items cannot be key-value pairs", items.len())));
        }
        Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
    }

    fn put(&mut self, index: u32) -> Result<()> {
        let top = self.peek()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u32) -> Result<()> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.bad(format!("memo entry {index} was never stored")))?;
        self.stack.push(id);
        Ok(())
    }

    fn pop_str(&mut self) -> Result<String> {
        let id = self.pop()?;
        match &self.nodes[id] {
            Node::Leaf(Value::Str(s)) => Ok(s.clone()),
            _ => Err(self.bad("STACK_GLOBAL needs two strings".into())),
        }
    }

    fn underflow(&self) -> PickleError {
        self.bad("stack underflow".into())
    }

    fn bad(&self, reason: String) -> PickleError {
        PickleError::Malformed {
            at: self.at,
            reason,
        }
    }
}

#[cfg(test)]
mod tests;
