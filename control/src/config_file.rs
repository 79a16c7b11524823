//! What every config file of `srtp-control` shares: reading it, and errors that name the key
//! at fault.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a config file (a scenario, a registration fleet) cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type (the message names the key).
    #[error("{0}")]
    Toml(String),
    /// A value that parses but makes no sense; names the key.
    #[error("{key}: {why}")]
    Invalid {
        /// The key, dotted (`load.rate`).
        key: &'static str,
        /// Why.
        why: String,
    },
}

/// A config file's text.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })
}

/// A value that parses but makes no sense, named by its dotted key.
pub fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}
