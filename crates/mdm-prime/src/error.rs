//! The error type of the burn crate: the core's errors plus checkpoint problems.

use std::path::PathBuf;

/// Everything that can go wrong in training, evaluation, sampling and checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] mdm_prime_core::Error),
    /// A checkpoint or run directory that cannot be used.
    #[error("{path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    /// A device that cannot be used: a backend this binary lacks, a GPU the machine lacks.
    #[error("{0}")]
    Device(String),
    /// Training was asked to stop (Ctrl-C) and stopped cleanly after saving.
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn checkpoint(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            reason: reason.into(),
        }
    }
    /// The config asks for another network than the code that reads it builds.
    pub fn config_kind(wanted: &str, got: &str) -> Self {
        Error::Core(mdm_prime_core::Error::config(
            "model.kind",
            format!("this network is `{wanted}` but the config says `{got}`"),
        ))
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Core(mdm_prime_core::Error::io(path, source))
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
