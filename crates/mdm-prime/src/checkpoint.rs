//! Run directories and checkpoints (docs/checkpoints.md; design §15.4).
//!
//! ```text
//! runs/<name>/
//!   config.toml          resolved config, every default explicit
//!   version.txt          the code version that made the run, and a line per resume naming
//!                        the version that continued it
//!   model.safetensors    training weights (parameter paths as tensor names)
//!   ema.safetensors      EMA weights: what eval and sample load
//!   optim.safetensors    AdamW moments `exp_avg/<path>`, `exp_avg_sq/<path>`; metadata `step`
//!   state.json           step, tokens seen, elapsed time
//!   metrics.jsonl        one JSON object per log / validation event
//!   loss.png             the loss curve (fid.png: the training-time FID, when `[train] fid_every` is set)
//! ```
//! Every file is written to a temporary beside it and renamed into place, so a crash never leaves
//! half a file; a checkpoint's files are installed together through a journal
//! ([`write_all_atomic`], [`recover`]), so a crash never leaves half a checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use mdm_prime_core::checkpoint::{Journal, Loaded, parse_safetensors, serialize};

use crate::Error;
use crate::optim::AdamW;
use crate::params::{map_params, named_params};

/// Format version written into every safetensors header.
pub const FORMAT_VERSION: &str = "1";

/// The version of this code, recorded in every run directory.
pub fn code_version() -> String {
    format!(
        "mdm-prime {} (git {})",
        env!("CARGO_PKG_VERSION"),
        env!("MDM_PRIME_GIT")
    )
}

pub use mdm_prime_core::checkpoint::TrainState;

/// The progress of a run that has not trained yet (a new run, an imported one).
pub fn fresh_state() -> TrainState {
    TrainState {
        step: 0,
        tokens_seen: 0,
        elapsed_s: 0.0,
        code_version: code_version(),
        skipped_steps: 0,
    }
}

/// The files a trainer writes in the root of a run directory (whose stale temporaries
/// [`recover`] may remove).
const RUN_FILES: &[&str] = &[
    "config.toml",
    "version.txt",
    "model.safetensors",
    "ema.safetensors",
    "optim.safetensors",
    "state.json",
    "metrics.jsonl",
    "loss.png",
    "fid.png",
    JOURNAL,
];

/// Paths of one run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn model(&self) -> PathBuf {
        self.root.join("model.safetensors")
    }
    pub fn ema(&self) -> PathBuf {
        self.root.join("ema.safetensors")
    }
    pub fn optim(&self) -> PathBuf {
        self.root.join("optim.safetensors")
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }
    pub fn loss_plot(&self) -> PathBuf {
        self.root.join("loss.png")
    }
    /// `lock`: held (advisory, exclusive) by the one process training in this directory.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Takes the directory's writer lock: an exclusive advisory lock on [`RunDir::lock_file`]
    /// (the directory must exist), held until the returned file is dropped. The kernel releases
    /// it when the process ends, however it ends, so a crash never leaves it stuck. A second
    /// writer gets an error naming the holder's pid.
    pub fn lock(&self) -> Result<std::fs::File, Error> {
        use std::io::{Read, Seek, Write};
        let path = self.lock_file();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(Error::checkpoint(
                    &self.root,
                    format!(
                        "another process ({}) is training in this run directory; wait for it to \
                         finish, or train into another --run-dir (eval and sample may read it \
                         meanwhile)",
                        match holder.trim() {
                            "" => "pid unknown".to_string(),
                            pid => format!("pid {pid}"),
                        }
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        let written = (|| {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        })();
        written.map_err(|e| Error::io(&path, e))?;
        Ok(file)
    }

    pub fn version(&self) -> PathBuf {
        self.root.join("version.txt")
    }

    /// Whether a checkpoint (a state file) exists here.
    pub fn has_checkpoint(&self) -> bool {
        self.state().exists()
    }

    /// Reads `state.json`.
    pub fn read_state(&self) -> Result<TrainState, Error> {
        let path = self.state();
        let bytes = mdm_prime_core::fsutil::read_input(&path)?;
        Ok(TrainState::parse(&path, &bytes)?)
    }

    /// `state.json` with `state`, ready for [`write_all_atomic`].
    pub fn state_file(&self, state: &TrainState) -> Result<(PathBuf, Vec<u8>), Error> {
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::checkpoint(self.state(), e.to_string()))?;
        Ok((self.state(), json))
    }
}

/// Writes `bytes` to `path` through a temporary file beside it + fsync + rename
/// ([`mdm_prime_core::fsutil::write_atomic`]); the error names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    mdm_prime_core::fsutil::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// `line` added at the end of the text file at `path` (created when missing), atomically.
pub fn append_line(path: &Path, line: &str) -> Result<(), Error> {
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

fn f32_bytes(t: &Tensor<1>) -> Vec<u8> {
    let v: Vec<f32> = t.clone().try_into_vec_as().expect("float tensor readback");
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The safetensors file at `path` of every float parameter of `module` (names = parameter
/// paths), with `metadata` plus `format_version` and `code_version`, ready for
/// [`write_all_atomic`].
pub fn module_file<M: Module>(
    module: &M,
    path: PathBuf,
    mut metadata: HashMap<String, String>,
) -> Result<(PathBuf, Vec<u8>), Error> {
    let tensors: Vec<_> = named_params(module)
        .into_iter()
        .map(|p| {
            let bytes = f32_bytes(&p.value);
            (p.path, p.shape, bytes)
        })
        .collect();
    metadata.insert("format_version".into(), FORMAT_VERSION.into());
    metadata.insert("code_version".into(), code_version());
    match serialize(&tensors, metadata) {
        Ok(bytes) => Ok((path, bytes)),
        Err(e) => Err(Error::checkpoint(path, e)),
    }
}

/// The commit record of a checkpoint being installed: [`write_all_atomic`] writes it once every
/// temporary is complete and removes it when every rename is done; [`recover`] finishes an
/// installation that a crash interrupted.
pub const JOURNAL: &str = "checkpoint.journal";

/// Writes several files of one directory as one checkpoint, so that a crash at any moment (kill
/// -9, power loss after the syncs) leaves either the previous checkpoint or the new one, never a
/// mix:
/// 1. every file goes to a synced temporary beside it (a failure here removes them and leaves
///    every previous file as it was; the error names the path and the cause);
/// 2. the journal [`JOURNAL`] naming each temporary and its destination is written atomically:
///    from here on the new checkpoint is decided;
/// 3. the temporaries are renamed into place, in order (`state.json`, which names the others,
///    last), the directory is synced, and the journal removed.
///
/// A crash during 3 leaves some files new and some old; [`recover`], which the trainer runs
/// before it reads a run directory, completes the renames from the journal. Before 2, it
/// removes the temporaries instead.
pub fn write_all_atomic(files: &[(PathBuf, Vec<u8>)]) -> Result<(), Error> {
    let Some(dir) = files.first().and_then(|(p, _)| p.parent()) else {
        return Ok(());
    };
    let mut temps: Vec<PathBuf> = Vec::new();
    let discard = |temps: &[PathBuf]| {
        temps.iter().for_each(|t| {
            let _ = std::fs::remove_file(t);
        })
    };
    for (path, bytes) in files {
        if path.parent() != Some(dir) {
            discard(&temps);
            return Err(Error::checkpoint(
                path,
                "all files of a checkpoint must be in one directory",
            ));
        }
        match mdm_prime_core::fsutil::write_temp(path, bytes) {
            Ok(tmp) => temps.push(tmp),
            Err(e) => {
                discard(&temps);
                return Err(Error::io(path, e));
            }
        }
    }
    mdm_prime_core::fsutil::crash_point("checkpoint:temps");
    let file_name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let journal = Journal {
        renames: temps
            .iter()
            .zip(files)
            .map(|(tmp, (path, _))| (file_name(tmp), file_name(path)))
            .collect(),
    };
    let journal_path = dir.join(JOURNAL);
    let record = journal.to_bytes();
    if let Err(e) = mdm_prime_core::fsutil::write_atomic(&journal_path, &record) {
        discard(&temps);
        return Err(Error::io(&journal_path, e));
    }
    mdm_prime_core::fsutil::crash_point("checkpoint:journal");
    for (k, ((path, _), tmp)) in files.iter().zip(&temps).enumerate() {
        std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            mdm_prime_core::fsutil::crash_point("checkpoint:renaming");
        }
    }
    mdm_prime_core::fsutil::sync_dir(dir);
    mdm_prime_core::fsutil::crash_point("checkpoint:renamed");
    std::fs::remove_file(&journal_path).map_err(|e| Error::io(&journal_path, e))
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Renames of an interrupted checkpoint installation that it completed.
    pub completed_renames: usize,
    /// Temporaries of writers that died before committing, removed.
    pub removed_temps: usize,
}

/// Brings a run directory back to one complete checkpoint after a crash: completes the renames
/// of an installation whose journal exists (see [`write_all_atomic`]), then removes temporaries
/// no journal claims. Run it only while holding the directory's writer lock.
pub fn recover(dir: &Path) -> Result<Recovery, Error> {
    let mut done = Recovery::default();
    let journal_path = dir.join(JOURNAL);
    match std::fs::read(&journal_path) {
        Ok(bytes) => {
            let journal = Journal::parse(&journal_path, &bytes)?;
            for (tmp, dest) in &journal.renames {
                let tmp = dir.join(tmp);
                if tmp.exists() {
                    std::fs::rename(&tmp, dir.join(dest)).map_err(|e| Error::io(&tmp, e))?;
                    done.completed_renames += 1;
                }
            }
            mdm_prime_core::fsutil::sync_dir(dir);
            std::fs::remove_file(&journal_path).map_err(|e| Error::io(&journal_path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&journal_path, e)),
    }
    done.removed_temps = mdm_prime_core::fsutil::remove_stale_temps(dir, RUN_FILES)
        .map_err(|e| Error::io(dir, e))?;
    Ok(done)
}

/// Reads a safetensors file written by this project
/// ([`mdm_prime_core::checkpoint::parse_safetensors`]). A missing, truncated, corrupt or foreign
/// file is an error naming the path.
pub fn read_safetensors(path: &Path) -> Result<Loaded, Error> {
    let bytes = mdm_prime_core::fsutil::read_input(path)?;
    Ok(parse_safetensors(path, &bytes)?)
}

/// Loads a module's parameters from a file written by [`module_file`]: every parameter must be
/// present with its shape, and the file must hold nothing else; otherwise an error lists what
/// differs (usually a run made with another architecture).
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M, Error> {
    let (mut tensors, _) = read_safetensors(path)?;
    let expected = named_params(&module);
    let mut problems = Vec::new();
    for p in &expected {
        match tensors.get(&p.path) {
            None => problems.push(format!("missing {}", p.path)),
            Some((shape, _)) if *shape != p.shape => {
                problems.push(format!("{}: file {:?}, model {:?}", p.path, shape, p.shape))
            }
            _ => {}
        }
    }
    let known: std::collections::HashSet<&str> = expected.iter().map(|p| p.path.as_str()).collect();
    problems.extend(
        tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .map(|k| format!("unexpected {k}")),
    );
    if !problems.is_empty() {
        problems.sort();
        let shown: Vec<_> = problems.iter().take(6).cloned().collect();
        return Err(Error::checkpoint(
            path,
            format!(
                "does not fit this model ({} problems: {}{}); was it made with another config?",
                problems.len(),
                shown.join("; "),
                if problems.len() > 6 { "; …" } else { "" }
            ),
        ));
    }
    Ok(map_params(module, &mut |name, current| {
        let (_, values) = tensors.remove(name)?;
        let n = values.len();
        Some(Tensor::from_data(
            TensorData::new(values, [n]),
            &current.device(),
        ))
    }))
}

/// The safetensors file at `path` of AdamW's moments and step count, ready for
/// [`write_all_atomic`].
pub fn optimizer_file(opt: &AdamW, path: PathBuf) -> Result<(PathBuf, Vec<u8>), Error> {
    let mut tensors = Vec::new();
    let mut names: Vec<&String> = opt.moments.keys().collect();
    names.sort();
    for name in names {
        let (m, v) = &opt.moments[name];
        let n = m.dims()[0];
        tensors.push((format!("exp_avg/{name}"), vec![n], f32_bytes(m)));
        tensors.push((format!("exp_avg_sq/{name}"), vec![n], f32_bytes(v)));
    }
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), opt.step.to_string());
    meta.insert("format_version".into(), FORMAT_VERSION.into());
    match serialize(&tensors, meta) {
        Ok(bytes) => Ok((path, bytes)),
        Err(e) => Err(Error::checkpoint(path, e)),
    }
}

/// Restores AdamW's moments and step count into `opt` (whose hyper-parameters come from the
/// config).
pub fn load_optimizer(opt: &mut AdamW, path: &Path, device: &Device) -> Result<(), Error> {
    let (tensors, meta) = read_safetensors(path)?;
    opt.step = meta
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::checkpoint(path, "no `step` in the metadata"))?;
    opt.moments.clear();
    let mk = |v: &Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), device);
    for (name, (_, m)) in &tensors {
        if let Some(param) = name.strip_prefix("exp_avg/") {
            let (_, v) = tensors
                .get(&format!("exp_avg_sq/{param}"))
                .ok_or_else(|| Error::checkpoint(path, format!("exp_avg_sq/{param} is missing")))?;
            opt.moments.insert(param.to_string(), (mk(m), mk(v)));
        }
    }
    Ok(())
}
