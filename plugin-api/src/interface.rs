//! The root module every plugin exports and the `Backend` trait object it hands out.

use abi_stable::library::RootModule;
use abi_stable::sabi_trait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RArc, RBox, RResult, RStr, RString, RVec};
use abi_stable::{StableAbi, declare_root_module_statics, package_version_strings};

use crate::types::{
    CancelToken, Capabilities, FetchBatch, FileOutcome, HostContext, Manifest, PluginError,
    PluginInfo, ProgressEvent, ResolveRequest,
};

/// Receives progress events from a backend. Implemented by the host.
///
/// Calls must be cheap: the host only records the event. Never add methods to this trait in 1.x.
#[sabi_trait]
pub trait ProgressSink: Send + Sync {
    /// Records one event.
    #[sabi(last_prefix_field)]
    fn on_event(&self, event: ProgressEvent);
}

/// A shareable handle to the host's [`ProgressSink`]; clone it into worker tasks.
pub type Progress = ProgressSink_TO<'static, RArc<()>>;

/// A transport backend. All methods block; the host calls them on its own blocking threads,
/// possibly from several threads at once.
#[sabi_trait]
pub trait Backend: Send + Sync {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Resolves a repository revision into one commit and its files.
    /// Backends without [`Features::RESOLVE`](crate::Features::RESOLVE) return `UNSUPPORTED`.
    fn resolve(
        &self,
        request: ResolveRequest,
        cancel: CancelToken,
    ) -> RResult<Manifest, PluginError>;

    /// Fetches a batch of files into the partial files the host named.
    /// Returns exactly one outcome per item (matched by `index`).
    fn fetch(
        &self,
        batch: FetchBatch,
        progress: Progress,
        cancel: CancelToken,
    ) -> RVec<FileOutcome>;

    /// Extension point: `method` with a JSON request, answering JSON.
    /// Unknown methods answer [`ErrorKind::UNSUPPORTED`](crate::ErrorKind::UNSUPPORTED).
    #[sabi(last_prefix_field)]
    fn call(&self, method: RStr<'_>, request_json: RStr<'_>) -> RResult<RString, PluginError>;
}

/// An owned backend trait object, as returned by [`PluginMod::new_backend`].
pub type BackendBox = Backend_TO<'static, RBox<()>>;

/// The root module of a plugin library: three functions, frozen for 1.x.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Static facts about the plugin. Never fails, never panics.
    pub info: extern "C" fn() -> PluginInfo,
    /// Installs the log bridge. Idempotent: the host may call it more than once.
    pub init: extern "C" fn(context: HostContext) -> RResult<(), PluginError>,
    /// Creates a backend from the host settings (JSON, see [`HostSettings`](crate::HostSettings))
    /// and the plugin's own `[plugins.<name>]` table (TOML text, possibly empty).
    #[sabi(last_prefix_field)]
    pub new_backend: extern "C" fn(
        settings_json: RStr<'_>,
        config_toml: RStr<'_>,
    ) -> RResult<BackendBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "hubget_plugin";
    const NAME: &'static str = "hubget backend plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
