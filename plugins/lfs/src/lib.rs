//! hubget's `lfs` backend plugin, the default transport: Hub metadata, the Git LFS batch API,
//! and fast ranged HTTP with resume.
//!
//! * `resolve`: revision → commit → recursive tree, through the shared Hub client
//!   ([`hubget_hub_http::HubApi::manifest`]).
//! * `fetch`: regular files through `resolve`; LFS and Xet-backed files (served as plain bytes
//!   over the LFS bridge) through one Git LFS batch request per fetch, then GETs of the hrefs
//!   split into ranges over several connections, written in place from the host's offset (see
//!   [`fetch`]). Progress events as bytes arrive, checkpoints (low watermark) for resume,
//!   cancellation within a second.
//! * The Hub token goes to the Hub origin only; a batch action's headers to its href only.
//! * Knobs: `[plugins.lfs]` ([`config::Config`]), else the host settings.
//!
//! Everything async runs on this backend's own tokio runtime.

pub mod config;
pub mod fetch;

use hubget_hub_http::{DownloadOptions, HttpClient, HubApi};
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::{
    CancelToken, Capabilities, Features, FetchBatch, FileOutcome, HostSettings, Manifest,
    PluginError, Progress, RepoType, ResolveRequest,
};

use crate::config::Config;

/// Files per fetch call the backend asks the host for (one batch request covers them all).
pub const MAX_BATCH_FILES: u32 = 100;

/// The `lfs` backend.
pub struct Backend {
    settings: HostSettings,
    config: Config,
    hub: HubApi,
    opts: DownloadOptions,
    // Dropped last: connections and in-flight tasks live on it.
    runtime: hubget_plugin_api::sdk::Runtime,
}

impl Backend {
    /// Creates the backend from the host settings and the `[plugins.lfs]` table.
    pub fn new(settings: HostSettings, config_toml: &str) -> Result<Self, PluginError> {
        let config = Config::parse(config_toml)?;
        let runtime = hubget_plugin_api::sdk::runtime("lfs", config.threads)?;
        // reqwest needs a runtime context only when requests run; build it inside anyway.
        let client = {
            let _guard = runtime.enter();
            HttpClient::new(&settings)?
        };
        let hub = HubApi::new(&settings.endpoint, settings.token.as_deref(), client)?;
        let mut opts = DownloadOptions::from_settings(&settings);
        opts.connections = config.connections(&settings);
        opts.range_size = config.range_size(&settings);
        log::debug!(
            "lfs backend: {} connections per file, {} byte ranges, batch API {}",
            opts.connections,
            opts.range_size,
            if config.use_batch_api { "on" } else { "off" }
        );
        Ok(Self {
            settings,
            config,
            hub,
            opts,
            runtime,
        })
    }
}

impl BackendPlugin for Backend {
    fn capabilities(&self) -> Capabilities {
        let features = Features::RESOLVE
            | Features::RESUME
            | Features::PARALLEL_RANGES
            | Features::NON_XET_FILES
            | Features::RATE_LIMIT;
        let extra = serde_json::json!({
            "connections": self.opts.connections,
            "range_size": self.opts.range_size,
            "batch_api": self.config.use_batch_api,
            "xet_files": "plain bytes over the LFS bridge",
            (hubget_plugin_api::protocol::RESOLVES_VIA): self.settings.endpoint,
        });
        Capabilities::new(&RepoType::ALL, features)
            .with_max_batch_files(MAX_BATCH_FILES)
            .with_extra(&extra)
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        if self.settings.offline {
            return Err(PluginError::offline("lfs"));
        }
        self.runtime
            .block_on(self.hub.manifest_for(request, cancel))
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        let results = if self.settings.offline {
            vec![Err(PluginError::offline("lfs")); batch.items.len()]
        } else {
            let fetcher = fetch::Fetcher {
                hub: &self.hub,
                opts: self.opts.clone(),
                use_batch_api: self.config.use_batch_api,
                concurrent_files: self.config.concurrent_files,
            };
            self.runtime
                .block_on(fetcher.fetch(batch, progress, cancel))
        };
        FileOutcome::in_order(results)
    }
}

hubget_plugin_api::export_plugin! {
    name: "lfs",
    description: "Hub files over HTTP: Git LFS batch API, parallel ranges, resume",
    constructor: Backend::new,
}
