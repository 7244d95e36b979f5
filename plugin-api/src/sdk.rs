//! The SDK for plugin authors: implement [`BackendPlugin`], then call [`export_plugin!`](crate::export_plugin).
//!
//! The macro exports the root module and wraps **every** entry point and backend method in
//! `catch_unwind`, so a panic becomes a [`PluginError`] of kind [`ErrorKind::PANIC`] instead
//! of ending the host (abi_stable calls `exit(1)` on a panic that reaches the boundary). It also
//! installs the log bridge at `init`, so `log` records (and `tracing` events, with tracing's
//! `log` feature and no subscriber installed) reach the host's logger, and reports
//! `cfg!(panic = "unwind")` so that the host can refuse plugins built with `panic = "abort"`.
//!
//! A complete backend that copies files from a local directory (this example is compiled
//! by the doctests, so it stays current):
//!
//! ```no_run
//! use std::io::{Seek, SeekFrom};
//! use std::path::PathBuf;
//!
//! use hubget_plugin_api::sdk::{BackendPlugin, outcomes_for, parse_config};
//! use hubget_plugin_api::*;
//!
//! /// `[plugins.shelf]` in the config file.
//! #[derive(serde::Deserialize, Default)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     /// Files are at `<root>/<owner>/<name>/<path>`.
//!     root: Option<PathBuf>,
//! }
//!
//! struct Shelf {
//!     root: PathBuf,
//! }
//!
//! impl Shelf {
//!     fn copy(
//!         &self,
//!         batch: &FetchBatch,
//!         item: &FetchItem,
//!         index: u32,
//!         progress: &Progress,
//!     ) -> Result<FileDone, PluginError> {
//!         let io = |e: std::io::Error| PluginError::new(ErrorKind::IO, e.to_string());
//!         let source = self.root.join(batch.repo_id.as_str()).join(item.file.path.as_str());
//!         let mut from = std::fs::File::open(&source).map_err(|e| {
//!             PluginError::new(ErrorKind::NOT_FOUND, format!("{}: {e}", source.display()))
//!         })?;
//!         // The partial file exists and holds `offset` good bytes: write the rest after them,
//!         // never truncating it (the host verifies size and hash afterwards).
//!         let mut to = std::fs::OpenOptions::new()
//!             .write(true)
//!             .open(item.partial_path.as_str())
//!             .map_err(io)?;
//!         from.seek(SeekFrom::Start(item.offset)).map_err(io)?;
//!         to.seek(SeekFrom::Start(item.offset)).map_err(io)?;
//!         let copied = std::io::copy(&mut from, &mut to).map_err(io)?;
//!         // A local copy moves no network bytes (and the capabilities say LOCAL).
//!         progress.on_event(ProgressEvent::bytes(index, copied, 0));
//!         Ok(FileDone::new(0, source.display().to_string()))
//!     }
//! }
//!
//! impl BackendPlugin for Shelf {
//!     fn capabilities(&self) -> Capabilities {
//!         let features = Features::NON_XET_FILES | Features::RESUME | Features::LOCAL;
//!         Capabilities::new(&[RepoType::MODEL, RepoType::DATASET], features)
//!     }
//!
//!     // `resolve` and `call` keep their defaults (UNSUPPORTED): another backend resolves.
//!
//!     fn fetch(
//!         &self,
//!         batch: &FetchBatch,
//!         progress: &Progress,
//!         cancel: &CancelToken,
//!     ) -> Vec<FileOutcome> {
//!         let mut outcomes = Vec::new();
//!         for (i, item) in batch.items.iter().enumerate() {
//!             if cancel.is_cancelled() {
//!                 break;
//!             }
//!             let index = i as u32;
//!             let result = self.copy(batch, item, index, progress);
//!             outcomes.push(FileOutcome { index, result: result.into() });
//!         }
//!         // Every item needs exactly one outcome: the ones not reached were cancelled.
//!         outcomes_for(batch.items.len(), outcomes, &PluginError::cancelled())
//!     }
//! }
//!
//! fn new(_settings: HostSettings, config: &str) -> Result<Shelf, PluginError> {
//!     let config: Config = parse_config("shelf", config)?;
//!     let root = config
//!         .root
//!         .ok_or_else(|| PluginError::new(ErrorKind::CONFIG, "[plugins.shelf] needs `root`"))?;
//!     Ok(Shelf { root })
//! }
//!
//! hubget_plugin_api::export_plugin! {
//!     name: "shelf",
//!     description: "copies files from a local directory",
//!     constructor: new,
//! }
//! # fn main() {}
//! ```

/// Re-exported here: the SDK's helper for streaming a blocking reader into a partial file.
pub use crate::partial::stream_to_partial;

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use abi_stable::std_types::{RResult, RStr, RString, RVec};
use serde::de::DeserializeOwned;

use crate::interface::{Backend, Backend_TO, BackendBox, Progress};
use crate::settings::HostSettings;
use crate::types::{
    CancelToken, Capabilities, ErrorKind, FetchBatch, FetchItem, FileDone, FileOutcome,
    HostContext, LogFn, Manifest, PluginError, PluginInfo, ResolveRequest,
};

/// What a backend implements. Methods take references and return plain Rust types; the SDK
/// converts them and catches panics.
pub trait BackendPlugin: Send + Sync + 'static {
    /// What this backend can do. Keep it honest: the host plans with it.
    fn capabilities(&self) -> Capabilities;

    /// Resolves a revision into a manifest. The default says `UNSUPPORTED`.
    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        let _ = (request, cancel);
        Err(PluginError::unsupported(
            "this backend does not resolve repositories",
        ))
    }

    /// Fetches a batch; one outcome per item. Use [`outcomes_for`] to fill missing ones.
    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome>;

    /// The extension point. The default answers `UNSUPPORTED` for every method.
    fn call(&self, method: &str, request_json: &str) -> Result<String, PluginError> {
        let _ = request_json;
        Err(PluginError::unsupported(format!(
            "unknown method `{method}`"
        )))
    }
}

/// Turns a panic payload into a `PANIC` error naming the plugin and the method.
pub fn panic_error(plugin: &str, method: &str, payload: &(dyn Any + Send)) -> PluginError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    PluginError::new(
        ErrorKind::PANIC,
        format!("plugin `{plugin}` panicked in {method}: {text}"),
    )
}

/// Runs `f`, turning a panic into a `PANIC` error.
pub fn guard<T>(
    plugin: &str,
    method: &str,
    f: impl FnOnce() -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(panic_error(plugin, method, payload.as_ref())),
    }
}

/// One outcome per item of `batch`, in order: what `fetch_one(index, item)` returns for each
/// (for a plugin that fetches one file at a time).
pub fn fetch_each(
    batch: &FetchBatch,
    mut fetch_one: impl FnMut(u32, &FetchItem) -> Result<FileDone, PluginError>,
) -> Vec<FileOutcome> {
    FileOutcome::in_order(
        (0..)
            .zip(batch.items.iter())
            .map(|(i, item)| fetch_one(i, item)),
    )
}

/// Completes `outcomes` so that every item of a batch of `len` has exactly one outcome: items
/// without one get `error`, duplicates and out-of-range indices are dropped, and the result is
/// sorted by index.
pub fn outcomes_for(
    len: usize,
    outcomes: Vec<FileOutcome>,
    error: &PluginError,
) -> Vec<FileOutcome> {
    let mut slots: Vec<Option<FileOutcome>> = (0..len).map(|_| None).collect();
    for outcome in outcomes {
        if let Some(slot) = slots.get_mut(outcome.index as usize)
            && slot.is_none()
        {
            *slot = Some(outcome);
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, slot)| slot.unwrap_or_else(|| FileOutcome::new(i as u32, Err(error.clone()))))
        .collect()
}

/// Parses a plugin's `[plugins.<name>]` table. Give `T` `#[serde(deny_unknown_fields)]` so that
/// typos are errors; the error names the table and the key.
pub fn parse_config<T: DeserializeOwned + Default>(
    plugin: &str,
    toml_text: &str,
) -> Result<T, PluginError> {
    if toml_text.trim().is_empty() {
        return Ok(T::default());
    }
    toml::from_str(toml_text).map_err(|e| {
        let detail = e.message().trim().to_owned();
        let key = toml_key_of(toml_text, e.span());
        let at = key.map(|k| format!(" (key `{k}`)")).unwrap_or_default();
        PluginError::new(
            ErrorKind::CONFIG,
            format!("invalid [plugins.{plugin}] table{at}: {detail}"),
        )
    })
}

fn toml_key_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<String> {
    let span = span?;
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let key = line.split('=').next()?.trim();
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

/// Parses the host settings JSON handed to `new_backend`.
pub fn parse_settings(json: &str) -> Result<HostSettings, PluginError> {
    if json.trim().is_empty() {
        return Ok(HostSettings::default());
    }
    serde_json::from_str(json)
        .map_err(|e| PluginError::new(ErrorKind::CONFIG, format!("invalid host settings: {e}")))
}

/// A tokio runtime for one backend instance: `workers` threads named `hubget-<plugin>`.
///
/// Each backend owns its own runtime (the host's runtime is invisible across the boundary).
/// Call `block_on` from the backend methods; the host never calls them on its async workers.
/// The returned [`Runtime`] shuts down in the background when dropped, so dropping a backend
/// never blocks or panics (see [`Runtime`]).
#[cfg(feature = "runtime")]
pub fn runtime(plugin: &str, workers: usize) -> Result<Runtime, PluginError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .thread_name(format!("hubget-{plugin}"))
        .enable_all()
        .build()
        .map(Runtime::new)
        .map_err(|e| {
            PluginError::new(
                ErrorKind::IO,
                format!("cannot start the {plugin} runtime: {e}"),
            )
        })
}

/// A backend's tokio runtime that is safe to drop anywhere.
///
/// Dropping a plain `tokio::runtime::Runtime` blocks on its tasks, and panics when it happens
/// inside an async context (the host may drop a backend from one of its tasks); in a plugin's
/// drop glue that panic would cross the FFI boundary, where abi_stable ends the process. This
/// wrapper calls `shutdown_background` instead. It derefs to the tokio runtime (`block_on`,
/// `spawn`, `handle`, `enter`).
#[cfg(feature = "runtime")]
#[derive(Debug)]
pub struct Runtime {
    /// `None` only while dropping.
    inner: Option<tokio::runtime::Runtime>,
}

#[cfg(feature = "runtime")]
impl Runtime {
    /// Wraps `runtime`.
    pub fn new(runtime: tokio::runtime::Runtime) -> Self {
        Self {
            inner: Some(runtime),
        }
    }
}

#[cfg(feature = "runtime")]
impl std::ops::Deref for Runtime {
    type Target = tokio::runtime::Runtime;

    fn deref(&self) -> &Self::Target {
        self.inner
            .as_ref()
            .expect("the runtime lives until it is dropped")
    }
}

#[cfg(feature = "runtime")]
impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.inner.take() {
            runtime.shutdown_background();
        }
    }
}

// ---- the log bridge ----

struct Bridge {
    log: LogFn,
}

static BRIDGE: OnceLock<Bridge> = OnceLock::new();

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        (self.log)(
            record.level() as u8,
            RStr::from_str(record.target()),
            RStr::from_str(&message),
        );
    }

    fn flush(&self) {}
}

fn level_filter(level: u8) -> log::LevelFilter {
    match level {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

fn install_bridge(plugin: &'static str, context: &HostContext) {
    let bridge = BRIDGE.get_or_init(|| Bridge { log: context.log });
    // A second `init` finds the logger already set: that is fine (init is idempotent).
    let _ = log::set_logger(bridge);
    log::set_max_level(level_filter(context.max_log_level));
    // The plugin's own std prints panics to stderr with its default hook; route them to the
    // host's log instead. The panic itself is still caught at the boundary.
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        std::panic::set_hook(Box::new(move |info| {
            log::debug!(target: plugin, "panic: {info}");
        }));
    });
}

// ---- the backend wrapper ----

/// Adapts a [`BackendPlugin`] to the ABI trait, catching panics in every method.
struct Guarded<P> {
    name: &'static str,
    inner: P,
}

impl<P: BackendPlugin> Backend for Guarded<P> {
    fn capabilities(&self) -> Capabilities {
        match catch_unwind(AssertUnwindSafe(|| self.inner.capabilities())) {
            Ok(caps) => caps,
            Err(payload) => {
                log::error!(
                    "{}",
                    panic_error(self.name, "capabilities", payload.as_ref())
                );
                Capabilities::new(&[], crate::types::Features::empty())
            }
        }
    }

    fn resolve(
        &self,
        request: ResolveRequest,
        cancel: CancelToken,
    ) -> RResult<Manifest, PluginError> {
        guard(self.name, "resolve", || {
            self.inner.resolve(&request, &cancel)
        })
        .into()
    }

    fn fetch(
        &self,
        batch: FetchBatch,
        progress: Progress,
        cancel: CancelToken,
    ) -> RVec<FileOutcome> {
        let len = batch.items.len();
        let result = guard(self.name, "fetch", || {
            Ok(self.inner.fetch(&batch, &progress, &cancel))
        });
        let (outcomes, error) = match result {
            Ok(outcomes) => (
                outcomes,
                PluginError::new(
                    ErrorKind::PROTOCOL,
                    format!("plugin `{}` returned no outcome for this file", self.name),
                ),
            ),
            Err(error) => (Vec::new(), error),
        };
        outcomes_for(len, outcomes, &error).into()
    }

    fn call(&self, method: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, PluginError> {
        guard(self.name, "call", || {
            self.inner
                .call(method.as_str(), request_json.as_str())
                .map(RString::from)
        })
        .into()
    }
}

#[doc(hidden)]
pub mod __private {
    //! Called by [`export_plugin!`](crate::export_plugin); not part of the public API.
    pub use abi_stable;

    use super::*;

    pub fn info(name: &str, version: &str, description: &str, panic_unwind: bool) -> PluginInfo {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            api_version: crate::API_VERSION.into(),
            panic_unwind,
            extra_json: RString::new(),
        }
    }

    pub fn init(name: &'static str, context: HostContext) -> RResult<(), PluginError> {
        guard(name, "init", || {
            install_bridge(name, &context);
            Ok(())
        })
        .into()
    }

    pub fn new_backend<P: BackendPlugin>(
        name: &'static str,
        settings_json: RStr<'_>,
        config_toml: RStr<'_>,
        constructor: fn(HostSettings, &str) -> Result<P, PluginError>,
    ) -> RResult<BackendBox, PluginError> {
        guard(name, "new_backend", || {
            let settings = parse_settings(settings_json.as_str())?;
            let inner = constructor(settings, config_toml.as_str())?;
            Ok(Backend_TO::from_value(
                Guarded { name, inner },
                abi_stable::sabi_trait::TD_Opaque,
            ))
        })
        .into()
    }
}

/// Exports a backend plugin: the root module, with every entry point guarded.
///
/// `constructor` is a `fn(HostSettings, &str) -> Result<impl BackendPlugin, PluginError>`
/// receiving the host settings and the plugin's TOML table.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, description: $description:expr, constructor: $constructor:path $(,)?) => {
        /// The library header abi_stable looks up (the name is abi_stable 0.11's mangled symbol).
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::sdk::__private::abi_stable::library::LibHeader = {
            extern "C" fn erased() -> $crate::sdk::__private::abi_stable::library::RootModuleResult
            {
                $crate::sdk::__private::abi_stable::library::__call_root_module_loader(
                    __hubget_root_module,
                )
            }
            // SAFETY: `erased` returns the module built by `__hubget_root_module`, whose type is
            // the one passed as the type parameter; this is what `#[export_root_module]` emits.
            unsafe {
                $crate::sdk::__private::abi_stable::library::LibHeader::from_constructor::<
                    $crate::PluginModRef,
                >(
                    erased,
                    $crate::sdk::__private::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };

        fn __hubget_root_module() -> $crate::PluginModRef {
            use $crate::sdk::__private::abi_stable::prefix_type::PrefixTypeTrait;
            $crate::PluginMod {
                info: __hubget_info,
                init: __hubget_init,
                new_backend: __hubget_new_backend,
            }
            .leak_into_prefix()
        }

        extern "C" fn __hubget_info() -> $crate::PluginInfo {
            $crate::sdk::__private::info(
                $name,
                env!("CARGO_PKG_VERSION"),
                $description,
                cfg!(panic = "unwind"),
            )
        }

        extern "C" fn __hubget_init(
            context: $crate::HostContext,
        ) -> $crate::sdk::__private::abi_stable::std_types::RResult<(), $crate::PluginError> {
            $crate::sdk::__private::init($name, context)
        }

        extern "C" fn __hubget_new_backend(
            settings_json: $crate::sdk::__private::abi_stable::std_types::RStr<'_>,
            config_toml: $crate::sdk::__private::abi_stable::std_types::RStr<'_>,
        ) -> $crate::sdk::__private::abi_stable::std_types::RResult<
            $crate::BackendBox,
            $crate::PluginError,
        > {
            $crate::sdk::__private::new_backend($name, settings_json, config_toml, $constructor)
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_symbol_matches_abi_stable() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }

    #[test]
    fn guard_turns_panics_into_errors() {
        let err = guard::<()>("p", "fetch", || panic!("boom")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::PANIC);
        assert!(
            err.message.contains("boom") && err.message.contains("fetch"),
            "{}",
            err.message
        );
    }

    #[test]
    fn outcomes_are_completed_and_deduplicated() {
        let ok = |i| FileOutcome {
            index: i,
            result: RResult::ROk(Default::default()),
        };
        let err = PluginError::new(ErrorKind::OTHER, "missing");
        let got = outcomes_for(3, vec![ok(2), ok(2), ok(7)], &err);
        assert_eq!(got.len(), 3);
        assert!(got[0].result.is_err() && got[1].result.is_err() && got[2].result.is_ok());
        assert_eq!(
            got.iter().map(|o| o.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
    }

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields)]
    struct Conf {
        #[allow(dead_code)]
        root: Option<String>,
    }

    #[test]
    fn config_errors_name_table_and_key() {
        let err = parse_config::<Conf>("mirror", "root = \"/x\"\nbogus = true\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::CONFIG);
        assert!(err.message.contains("[plugins.mirror]"), "{}", err.message);
        assert!(err.message.contains("bogus"), "{}", err.message);
        assert!(parse_config::<Conf>("mirror", "").is_ok());
    }

    #[cfg(feature = "runtime")]
    #[test]
    fn dropping_the_runtime_inside_another_runtime_does_not_panic() {
        let rt = runtime("test", 1).unwrap();
        // It works as a runtime (through Deref)...
        assert_eq!(rt.block_on(async { 7 }), 7);
        let handle = rt.handle().clone();
        assert_eq!(rt.block_on(handle.spawn(async { 8 })).unwrap(), 8);
        // ...and a drop inside an async context (a plain tokio runtime panics there) is fine.
        let host = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        host.block_on(async move { drop(rt) });
    }
}
