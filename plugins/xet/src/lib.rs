//! hubget's `xet` backend plugin: Xet reconstruction through hf-xet (opt-in).
//!
//! Transport is not implemented yet: the backend loads, reports honest capabilities (no
//! features) and answers every request with `UNSUPPORTED`, so the host falls back.

use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::std_types::{RResult, RString, RVec};
use hubget_plugin_api::{
    CancelToken, Capabilities, Features, FetchBatch, FileOutcome, HostSettings, PluginError,
    Progress, RepoType,
};

/// The `xet` backend.
pub struct Backend;

impl BackendPlugin for Backend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            repo_types: RVec::from(vec![RepoType::MODEL, RepoType::DATASET, RepoType::SPACE]),
            features: Features::empty(),
            max_batch_files: 0,
            extra_json: RString::new(),
        }
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        _progress: &Progress,
        _cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        (0..batch.items.len() as u32)
            .map(|index| FileOutcome {
                index,
                result: RResult::RErr(PluginError::unsupported("the xet backend cannot fetch yet")),
            })
            .collect()
    }
}

fn new(_settings: HostSettings, _config: &str) -> Result<Backend, PluginError> {
    Ok(Backend)
}

hubget_plugin_api::export_plugin! {
    name: "xet",
    description: "Xet reconstruction through hf-xet (opt-in)",
    constructor: new,
}
