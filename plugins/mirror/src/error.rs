//! The mirror backend's errors, and how they map to the plugin error kinds the host acts on.

use std::path::PathBuf;

use hubget_plugin_api::{ErrorKind, PluginError};

/// What can go wrong in the mirror backend.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Nothing is configured for this request (no endpoints, no dirs, or offline with only endpoints).
    #[error("{0}")]
    NotConfigured(String),
    /// No mirror holds the repository, revision or file.
    #[error("{0}")]
    NotFound(String),
    /// The request names a path that cannot be looked up safely.
    #[error("refusing {what} `{value}`: {why}")]
    BadName {
        /// What the value is (a repo id, a revision, a file path).
        what: &'static str,
        /// The value.
        value: String,
        /// Why it was refused.
        why: &'static str,
    },
    /// Reading a directory mirror or writing the partial file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "copying to").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file in a directory mirror changed size while it was copied.
    #[error("{} ended at byte {at}, expected {expected} bytes", path.display())]
    ShortRead {
        /// The source file.
        path: PathBuf,
        /// Where it ended.
        at: u64,
        /// Its expected size.
        expected: u64,
    },
    /// The host set the cancel token.
    #[error("cancelled by the host")]
    Cancelled,
}

impl MirrorError {
    /// An I/O error with context.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<MirrorError> for PluginError {
    fn from(e: MirrorError) -> Self {
        let kind = match &e {
            MirrorError::NotConfigured(_) => ErrorKind::UNSUPPORTED,
            MirrorError::NotFound(_) => ErrorKind::NOT_FOUND,
            MirrorError::BadName { .. } => ErrorKind::NOT_FOUND,
            MirrorError::Io { .. } => ErrorKind::IO,
            MirrorError::ShortRead { .. } => ErrorKind::INTEGRITY,
            MirrorError::Cancelled => ErrorKind::CANCELLED,
        };
        PluginError::new(kind, e.to_string())
    }
}
