//! hubget, the host library: plugin loading ([`loader`]), backend handles ([`backend`]),
//! configuration ([`config`], [`settings`]), the command line ([`cli`], [`commands`]), errors
//! ([`error`]) and redaction of secrets ([`redact`]). The `hubget` binary is a thin `main` over
//! [`commands::run`].

pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod error;
pub mod loader;
pub mod output;
pub mod plan;
pub mod redact;
pub mod resume;
pub mod settings;
pub mod store;
pub mod verify;

pub use backend::BackendHandle;
pub use error::HostError;
pub use loader::{LoadFailure, LoadedPlugin, PluginDir, Registry};
pub use settings::{Env, Settings};
