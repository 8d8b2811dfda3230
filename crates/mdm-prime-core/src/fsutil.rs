//! File-system helpers shared by the readers and writers: reading input files with their kind and
//! size checked first, atomic writes and folder listings.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Reads a whole input file (a corpus, a data set, a config, a checkpoint) after checking that
/// it is a regular file that fits in memory. A directory, a named pipe (which would block until
/// a writer comes), a device such as `/dev/zero` or `/dev/urandom` (which never ends) or a file
/// larger than the memory is an [`Error::Data`] naming the path and what it is: never a hang, an
/// endless read or an allocation abort.
pub fn read_input(path: &Path) -> Result<Vec<u8>> {
    let cannot = |e: std::io::Error| {
        Error::data(
            path,
            format!("cannot read the file ({e}); check that it exists and is readable"),
        )
    };
    let meta = fs::metadata(path).map_err(cannot)?;
    check_regular(path, &meta)?;
    let len = meta.len();
    crate::limits::check_bytes(
        &format!("reading {} ({len} bytes)", path.display()),
        u128::from(len),
        "pass a smaller file",
    )?;
    let file = fs::File::open(path).map_err(cannot)?;
    // The path may have been replaced between the two looks: check what was opened.
    check_regular(path, &file.metadata().map_err(cannot)?)?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // A file that grows while it is read is read up to the memory budget, not forever.
    let budget = u64::try_from(crate::limits::memory_budget()).unwrap_or(u64::MAX);
    file.take(budget).read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

/// An error naming `path` and what it is unless `meta` describes a regular file.
pub(crate) fn check_regular(path: &Path, meta: &fs::Metadata) -> Result<()> {
    match meta.is_file() {
        true => Ok(()),
        false => Err(not_regular(path, meta)),
    }
}

/// The error for an input path that is not a regular file: it names the path and what it is.
pub(crate) fn not_regular(path: &Path, meta: &fs::Metadata) -> Error {
    let kind = if meta.is_dir() {
        "a directory"
    } else {
        special_kind(meta)
    };
    Error::data(
        path,
        format!("not a regular file but {kind}, which cannot be read as input; pass a file"),
    )
}

#[cfg(unix)]
fn special_kind(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a named pipe (FIFO)"
    } else if t.is_char_device() {
        "a character device (like /dev/zero or /dev/urandom, it never ends)"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &fs::Metadata) -> &'static str {
    "a special file"
}

/// Writes `bytes` to `path` atomically: [`write_temp`], then rename over `path`. On error the
/// temporary file is removed and an existing `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Makes renames in `dir` durable where directories can be synced (best effort: not on every
/// platform or file system).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `bytes` to a new temporary file `<name>.<pid>.<n>.tmp` beside `path` (unique per
/// writer, so concurrent writers cannot clash) and syncs it; returns its path. The caller renames
/// it into place (several files can be prepared before any is committed). On error nothing is
/// left behind.
pub fn write_temp(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        if take_injected_failure() {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

thread_local! {
    /// (writes to let through, writes to fail after them).
    static INJECTED: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// Lets the next `pass` writes of this thread through, then makes the `fail` after them fail
/// with ENOSPC ("No space left on device"): a test's injected writer for what a full disk does
/// (no real file system is filled). `(0, 0)` turns it off.
#[doc(hidden)]
pub fn inject_write_failures(pass: usize, fail: usize) {
    INJECTED.with(|c| c.set((pass, fail)));
}

fn take_injected_failure() -> bool {
    INJECTED.with(|c| match c.get() {
        (0, 0) => false,
        (0, fail) => {
            c.set((0, fail - 1));
            true
        }
        (pass, fail) => {
            c.set((pass - 1, fail));
            false
        }
    })
}

/// The environment variable naming a crash point for fault-injection runs: `NAME` or `NAME@K`
/// (the K-th time the point is reached, default 1). See [`crash_point`].
pub const CRASH_ENV: &str = "MDM_PRIME_CRASH_AT";

/// A named point in a multi-step write (e.g. `checkpoint:renaming`, between two renames). When
/// [`CRASH_ENV`] names this point, the process kills itself here with SIGKILL (no destructor, no
/// flush: what a preempted machine or the OOM killer does), so a test can crash it at exactly the
/// moment a random kill would rarely hit. Unset (always, outside such tests) it does nothing
/// beyond one cached environment lookup.
pub fn crash_point(name: &str) {
    use std::sync::Mutex;
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: Mutex<u64> = Mutex::new(0);
    let target = TARGET.get_or_init(|| {
        let spec = std::env::var(CRASH_ENV).ok()?;
        Some(match spec.split_once('@') {
            Some((point, k)) => (point.to_string(), k.parse().unwrap_or(1)),
            None => (spec, 1),
        })
    });
    let Some((point, k)) = target else { return };
    if point != name {
        return;
    }
    let mut hits = HITS.lock().unwrap_or_else(|e| e.into_inner());
    *hits += 1;
    if *hits == *k {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid])
            .status();
        // `kill` missing or refused: end the process just as abruptly.
        std::process::abort();
    }
}

/// Removes the temporaries [`write_temp`] left in `dir` when a writer died before renaming them
/// (`<name>.<pid>.<n>.tmp`, for each `<name>` in `names`: other files are never touched);
/// returns how many. Call it only while no other process writes there (e.g. under the run
/// directory's lock).
pub fn remove_stale_temps(dir: &Path, names: &[&str]) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let mut parts = name.rsplitn(4, '.');
        let is_temp = parts.next() == Some("tmp")
            && parts.next().is_some_and(is_number)
            && parts.next().is_some_and(is_number)
            && parts.next().is_some_and(|stem| names.contains(&stem));
        if is_temp && path.is_file() {
            fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The files of `dir` whose extension is `ext` (compared case-insensitively; not recursive;
/// other entries ignored), sorted by file name. An entry whose metadata cannot be read (e.g. a
/// broken link) is kept, so that reading it reports the problem.
pub fn list_files(dir: &Path, ext: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let not_a_file = fs::metadata(&path).is_ok_and(|m| !m.is_file());
        let matches = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case(ext));
        if matches && !not_a_file {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_listing() {
        let dir = std::env::temp_dir().join(format!("mdm-prime-fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub.TXT")).unwrap();
        write_atomic(&dir.join("b.txt"), b"two").unwrap();
        write_atomic(&dir.join("a.TXT"), b"one").unwrap();
        write_atomic(&dir.join("c.png"), b"x").unwrap();
        write_atomic(&dir.join("b.txt"), b"again").unwrap();
        assert_eq!(fs::read(dir.join("b.txt")).unwrap(), b"again");
        let names: Vec<String> = list_files(&dir, "txt")
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.TXT", "b.txt"]);
        assert!(write_atomic(&dir.join("missing/x.txt"), b"").is_err());
        assert_eq!(read_input(&dir.join("b.txt")).unwrap(), b"again");
        let e = read_input(&dir.join("sub.TXT")).unwrap_err().to_string();
        assert!(e.contains("sub.TXT") && e.contains("a directory"), "{e}");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 4, "no temporary file is left behind");
        // A writer that died before its rename leaves `<name>.<pid>.<n>.tmp`; only those go.
        let stale = write_temp(&dir.join("b.txt"), b"half").unwrap();
        fs::write(dir.join("notes.1.tmp"), b"keep").unwrap();
        fs::write(dir.join("b.txt.1.2.tmp.bak"), b"keep").unwrap();
        fs::write(dir.join("other.txt.1.2.tmp"), b"not ours to remove").unwrap();
        assert_eq!(remove_stale_temps(&dir, &["b.txt", "a.TXT"]).unwrap(), 1);
        assert!(!stale.exists());
        assert_eq!(fs::read(dir.join("b.txt")).unwrap(), b"again");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 7);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Devices that never end and pipes that block are refused before anything is read.
    #[cfg(unix)]
    #[test]
    fn special_files_are_refused_not_read() {
        for (path, kind) in [
            ("/dev/zero", "character device"),
            ("/dev/urandom", "character device"),
        ] {
            let e = read_input(Path::new(path)).unwrap_err().to_string();
            assert!(e.contains(path) && e.contains(kind), "{e}");
        }
        let e = read_input(Path::new("/no/such/file"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the file"), "{e}");
    }
}
