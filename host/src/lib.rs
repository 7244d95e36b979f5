//! hubget, the host library. The `hubget` binary is a thin `main` over [`commands::run`].
//!
//! A download flows through the modules in this order:
//! - [`cli`]: the command line, dispatched by [`commands`];
//! - [`settings`] and [`config`]: flags, environment and config file merged into one view
//!   (endpoint, token, cache, backend order, timeouts);
//! - [`plan`]: the revision resolved to one commit, the files selected, validated and checked
//!   against the target;
//! - [`engine`]: backend calls with retries, fallback, the stall watchdog and health, feeding
//!   [`resume`] (partial files and their checkpoints) and [`verify`] (size and hash before a
//!   file lands);
//! - backends: [`loader`] finds and loads the plugins, [`backend`] wraps each one for the
//!   engine, [`isolation`] serves a plugin from a helper process (crash-contained,
//!   sandboxed) when the policy says so;
//! - [`store`]: the Hugging Face cache or `--local-dir` layout, locks, installing verified
//!   files.
//!
//! Along the way, [`output`] shows progress bars or NDJSON events, [`error`] maps failures to
//! messages, hints and exit codes, and [`redact`] keeps tokens and signed URLs out of both.

pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod env;
pub mod error;
pub mod isolation;
pub mod loader;
pub mod output;
pub mod plan;
pub mod project;
pub mod redact;
pub mod resume;
pub mod retry;
pub mod settings;
pub mod store;
pub mod transport;
pub mod verify;

pub use backend::BackendHandle;
pub use error::HostError;
pub use loader::{LoadFailure, LoadedPlugin, PluginDir, Registry};
pub use settings::{Env, Settings};
