//! The error type of the core crate: one enum, every variant says what went wrong and how to fix it.

use std::path::PathBuf;

/// Result alias for the core crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the burn-free core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sub-tokenizer argument that cannot work (V < 2, ℓ = 0, b^ℓ overflowing, ...).
    #[error("sub-tokenizer: {0}")]
    Codec(String),
    /// An input value outside its range (a token id ≥ V, a digit ≥ b, ...).
    #[error("{0}")]
    Value(String),
    /// A configuration key with a bad value or an impossible combination.
    #[error("config key `{key}`: {reason}")]
    Config { key: String, reason: String },
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data file or corpus that is unusable (empty, not UTF-8, too short, corrupt).
    #[error("{path}: {reason}")]
    Data { path: PathBuf, reason: String },
    /// The tokenizer failed or was asked for something it cannot do.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl Error {
    /// An [`Error::Io`] that names the path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Config`] for `key`.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Data`] for `path`.
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
