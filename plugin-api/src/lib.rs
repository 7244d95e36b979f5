//! The hubget plugin interface, version 1, and the SDK for backend plugin authors.
//!
//! hubget loads transport backends as `cdylib` plugins through [abi_stable]. A plugin exports one
//! root module ([`PluginMod`]: `info`, `init`, `new_backend`) and hands out [`Backend`] trait
//! objects with four blocking methods: [`capabilities`](Backend::capabilities),
//! [`resolve`](Backend::resolve) (repo + revision → [`Manifest`]), [`fetch`](Backend::fetch)
//! (a [`FetchBatch`] → one [`FileOutcome`] per item, with [`ProgressEvent`]s and a
//! [`CancelToken`]) and [`call`](Backend::call), a JSON extension point.
//!
//! Plugin authors use [`sdk`]: implement [`sdk::BackendPlugin`] and call [`export_plugin!`];
//! [`partial::stream_to_partial`] writes a blocking reader into the host's partial file while
//! honouring cancellation, and the `testing` feature adds `testing` (a recording progress
//! sink, batch builders, a self-cancelling token) for unit tests. See `examples/hello-backend`,
//! `examples/statichttp-backend` and `docs/plugin-authors.md` in the repository.
//!
//! # Who does what
//!
//! The host owns planning, the cache, verification, fallback, retries across backends, resume
//! state and output. A backend owns only transport: getting the bytes of a file into the partial
//! file the host named, starting at the offset the host gave. The host checks size and hash of
//! every file afterwards, so a backend never needs to hash.
//!
//! # Freeze rules (read before changing anything in this crate)
//!
//! abi_stable checks type layouts when a plugin loads, and its rule is one-way: a plugin built
//! against a *newer* interface loads in an older host, but an old plugin is **refused** by a host
//! whose interface has any extra field or method, whatever `#[sabi(last_prefix_field)]` and
//! default methods suggest (measured; abi_stable issue #118). Therefore, within 1.x:
//!
//! **Never** (these break every existing plugin):
//! - add, remove, reorder or retype a field of any `#[repr(C)]` type in [`types`] or of
//!   [`PluginMod`];
//! - add, remove, reorder a method of [`Backend`] or [`ProgressSink`], or change a signature;
//! - turn a `u32` kind newtype ([`ErrorKind`], [`RepoType`], [`EventKind`]) into an enum;
//! - rename this package (abi_stable records the package name in layouts) or bump it to 2.0
//!   without keeping a frozen 1.x copy in the host as an adapter.
//!
//! **Allowed** (old plugins keep loading):
//! - new constants of the kind newtypes and new [`Features`] bits (code must treat unknown
//!   values as "other" / ignore unknown bits);
//! - new keys in the JSON carried by `*_json` fields and in [`HostSettings`] (every key optional,
//!   unknown keys ignored);
//! - new `call` methods (unknown methods answer [`ErrorKind::UNSUPPORTED`]);
//! - new helper functions and SDK code that does not change a layout.
//!
//! A test in `host` loads plugins built against this crate; a layout change shows up there as a
//! load failure. Evolve through data, not through layout.
//!
//! # Contract details
//!
//! - All backend methods block and may be called from several host threads at once
//!   (`Backend: Send + Sync`). Use [`sdk::runtime`] for async code inside a plugin.
//! - `fetch` returns exactly one outcome per item; the SDK fills in missing ones.
//! - Cancellation: check the [`CancelToken`] between reads and return [`ErrorKind::CANCELLED`]
//!   within about a second (a blocking read cannot be checked: stream it through
//!   [`partial::stream_to_partial`]); the host abandons calls that do not return.
//! - Panics are caught by the SDK at the boundary; a plugin must be built with `panic = "unwind"`
//!   (the default), the host refuses others.
//! - Tokens: the Hub token in [`HostSettings::token`] goes only to the Hub origin; never log it.
//! - Plugins must not install signal handlers, a global tracing subscriber, or change the working
//!   directory or environment: those are the host's.

#![deny(missing_docs)]

pub mod interface;
pub mod partial;
pub mod protocol;
pub mod sdk;
pub mod settings;
#[cfg(feature = "testing")]
pub mod testing;
pub mod types;

pub use interface::{
    Backend, Backend_TO, BackendBox, PluginMod, PluginModRef, Progress, ProgressSink,
    ProgressSink_TO,
};
pub use settings::HostSettings;
pub use types::{
    CancelToken, Capabilities, ErrorKind, EventKind, Features, FetchBatch, FetchItem, FileDone,
    FileOutcome, HostContext, LogFn, Manifest, ManifestFile, PluginError, PluginInfo,
    ProgressEvent, RepoType, ResolveRequest, is_commit_sha,
};

/// Re-exported so plugins and the host use the same abi_stable types (`RString`, `RVec`, ...).
pub use abi_stable::std_types;

/// The version of this interface crate, as recorded in [`PluginInfo::api_version`].
pub const API_VERSION: &str = env!("CARGO_PKG_VERSION");
