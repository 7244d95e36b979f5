//! hubget's `xet` backend plugin: Xet-backed files through Hugging Face's `hf-xet` crate, no
//! Python (opt-in: `--backend xet`).
//!
//! * `resolve` uses the shared Hub client ([`hubget_hub_http::HubApi::manifest`]): the same
//!   manifest as the `lfs` backend; a redacted or malformed xet hash counts as absent.
//! * `fetch` gets a CAS token from `/api/{type}s/{repo}/xet-read-token/{commit}` (the Hub token
//!   goes to the Hub origin only), then downloads the batch's Xet files through hf-xet: small
//!   ones in one file download group, large and resumed ones as parallel ranged streams of one
//!   stream group (see [`fetch`]). hf-xet refreshes the CAS token itself before it expires,
//!   from the same route. A file without a xet hash gets `UNSUPPORTED`, so the host hands that
//!   file alone to the next backend.
//! * Knobs live in `[plugins.xet]` ([`config::Config`]); telemetry is off unless turned on.
//!
//! hf-xet runs on this plugin's own tokio runtime (the session wraps its handle), and keeps its
//! small session/staging directories under `~/.cache/hubget/xet` (see [`config::Config::cache_root`]),
//! never in the user's Hugging Face cache. hf-xet's HTTP client honours the usual proxy
//! environment variables but not the host's explicit `proxy`/`ca_bundle` settings.

pub mod config;
pub mod error;
pub mod fetch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hubget_hub_http::{HttpClient, HubApi, XetToken, cancellable, is_xet_hash};
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::std_types::{RResult, RString, RVec};
use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, Features, FetchBatch, FileOutcome, HostSettings,
    Manifest, PluginError, Progress, RepoType, ResolveRequest,
};
use xet::xet_session::{HeaderMap, HeaderValue, XetSession, XetSessionBuilder, header};

use crate::config::Config;
use crate::fetch::{CasAccess, Job};

/// A CAS token is reused while it has at least this many seconds left.
const TOKEN_MIN_LIFETIME_SECS: u64 = 120;

/// The `xet` backend.
pub struct Backend {
    settings: HostSettings,
    hub: HubApi,
    session: XetSession,
    tokens: Mutex<HashMap<(u32, String, String), XetToken>>,
    tuning: fetch::Tuning,
    /// The plugin's own runtime (the SDK's: it shuts down in the background when dropped).
    runtime: hubget_plugin_api::sdk::Runtime,
}

impl Backend {
    /// Creates the backend from the host settings and the `[plugins.xet]` table.
    pub fn new(settings: HostSettings, config_toml: &str) -> Result<Self, PluginError> {
        let config = Config::parse(config_toml)?;
        let runtime = hubget_plugin_api::sdk::runtime("xet", config.worker_threads())?;
        let client = HttpClient::new(&settings)?;
        let hub = HubApi::new(&settings.endpoint, settings.token.as_deref(), client)?;
        let session = XetSessionBuilder::new_with_config(config.to_xet_config(&settings))
            .with_cache_dir(config.cache_root())
            .with_tokio_handle(runtime.handle().clone())
            .build()
            .map_err(|e| error::from_xet("starting the hf-xet session", &e))?;
        log::debug!(
            "xet backend ready: cache dir {}, {} threads",
            config.cache_root().display(),
            config.worker_threads()
        );
        Ok(Self {
            settings,
            hub,
            session,
            tokens: Mutex::new(HashMap::new()),
            tuning: config.tuning(),
            runtime,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    fn offline_error() -> PluginError {
        PluginError::unsupported("offline mode: the xet backend needs the network")
    }

    /// A CAS token for the repository at `revision`, from the cache or the Hub.
    async fn token(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        cancel: &CancelToken,
    ) -> Result<XetToken, PluginError> {
        let key = (repo_type.0, repo_id.to_owned(), revision.to_owned());
        let now = unix_now();
        if let Some(t) = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && t.exp > now + TOKEN_MIN_LIFETIME_SECS
        {
            return Ok(t.clone());
        }
        let token = self
            .hub
            .xet_read_token(repo_type, repo_id, revision, cancel)
            .await
            .map_err(|e| e.context("getting a Xet CAS token"))?;
        if token.cas_url.trim().is_empty() || token.access_token.is_empty() {
            return Err(PluginError::new(
                ErrorKind::PROTOCOL,
                "the xet-read-token answer has no casUrl or accessToken",
            ));
        }
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, token.clone());
        Ok(token)
    }

    /// The token URL and Hub headers hf-xet uses to refresh the CAS token.
    fn refresh(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
    ) -> (Option<String>, HeaderMap) {
        let mut headers = HeaderMap::new();
        if let Ok(ua) = HeaderValue::from_str(&self.settings.user_agent) {
            headers.insert(header::USER_AGENT, ua);
        }
        // The refresh URL is on the Hub origin: the only place the Hub token may go.
        if let Some(token) = self.settings.token.as_deref().map(str::trim)
            && !token.is_empty()
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let url = self
            .hub
            .xet_read_token_url(repo_type, repo_id, revision)
            .ok()
            .map(|u| u.to_string());
        (url, headers)
    }

    async fn fetch_xet(
        &self,
        batch: &FetchBatch,
        jobs: Vec<Job>,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<(u32, Result<hubget_plugin_api::FileDone, PluginError>)> {
        let repo_id = batch.repo_id.as_str();
        let commit = batch.commit.as_str();
        let token = match cancellable(cancel, self.token(batch.repo_type, repo_id, commit, cancel))
            .await
            .and_then(|r| r)
        {
            Ok(t) => t,
            Err(e) => return jobs.iter().map(|j| (j.index, Err(e.clone()))).collect(),
        };
        let (refresh_url, refresh_headers) = self.refresh(batch.repo_type, repo_id, commit);
        let access = CasAccess {
            cas_url: token.cas_url.trim_end_matches('/').to_owned(),
            access_token: token.access_token,
            exp: token.exp,
            refresh_url,
            refresh_headers,
        };
        fetch::fetch(&self.session, &access, jobs, self.tuning, progress, cancel).await
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BackendPlugin for Backend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            repo_types: RVec::from(vec![RepoType::MODEL, RepoType::DATASET, RepoType::SPACE]),
            features: Features::RESOLVE | Features::RESUME | Features::XET,
            max_batch_files: 0,
            extra_json: RString::new(),
        }
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        if self.settings.offline {
            return Err(Self::offline_error());
        }
        self.runtime().block_on(async {
            self.hub
                .manifest(
                    request.repo_type,
                    request.repo_id.as_str(),
                    request.revision.as_str(),
                    cancel,
                )
                .await
        })
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        let mut outcomes = Vec::with_capacity(batch.items.len());
        let mut jobs = Vec::new();
        for (i, item) in batch.items.iter().enumerate() {
            let index = i as u32;
            let hash = item
                .file
                .xet_hash
                .as_ref()
                .map(|h| h.as_str().to_owned())
                .into_option()
                .filter(|h| is_xet_hash(h));
            let refusal = match hash {
                None => Some(PluginError::unsupported(format!(
                    "{} has no Xet hash: the xet backend fetches only Xet-backed files",
                    item.file.path
                ))),
                Some(_) if self.settings.offline => Some(Self::offline_error()),
                Some(_) if item.offset > item.file.size => Some(PluginError::new(
                    ErrorKind::OTHER,
                    format!(
                        "offset {} is past the end of {} ({} bytes)",
                        item.offset, item.file.path, item.file.size
                    ),
                )),
                Some(hash) => {
                    jobs.push(Job {
                        index,
                        hash,
                        size: item.file.size,
                        path: PathBuf::from(item.partial_path.as_str()),
                        offset: item.offset,
                    });
                    None
                }
            };
            if let Some(e) = refusal {
                outcomes.push(FileOutcome {
                    index,
                    result: RResult::RErr(e),
                });
            }
        }
        if jobs.is_empty() {
            return outcomes;
        }
        if cancel.is_cancelled() {
            outcomes.extend(jobs.iter().map(|j| FileOutcome {
                index: j.index,
                result: RResult::RErr(PluginError::cancelled()),
            }));
            return outcomes;
        }
        let results = self
            .runtime()
            .block_on(self.fetch_xet(batch, jobs, progress, cancel));
        outcomes.extend(results.into_iter().map(|(index, result)| FileOutcome {
            index,
            result: result.into(),
        }));
        outcomes.sort_by_key(|o| o.index);
        outcomes
    }
}

fn new(settings: HostSettings, config: &str) -> Result<Backend, PluginError> {
    Backend::new(settings, config)
}

hubget_plugin_api::export_plugin! {
    name: "xet",
    description: "Xet-backed files through Hugging Face's hf-xet (opt-in; other files fall back)",
    constructor: new,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_request_goes_to_the_hub_with_the_hub_token() {
        let settings = HostSettings {
            endpoint: "http://127.0.0.1:9/".into(),
            token: Some("hf_secret".into()),
            user_agent: "hubget/test".into(),
            ..HostSettings::default()
        };
        let backend = Backend::new(settings, "").unwrap();
        let (url, headers) = backend.refresh(RepoType::DATASET, "acme/data", "refs/pr/1");
        assert_eq!(
            url.as_deref(),
            Some("http://127.0.0.1:9/api/datasets/acme/data/xet-read-token/refs%2Fpr%2F1")
        );
        assert_eq!(headers[header::AUTHORIZATION], "Bearer hf_secret");
        assert!(headers[header::AUTHORIZATION].is_sensitive());
        assert_eq!(headers[header::USER_AGENT], "hubget/test");

        let anonymous = Backend::new(HostSettings::default(), "").unwrap();
        let (_, headers) = anonymous.refresh(RepoType::MODEL, "a/b", "main");
        assert!(!headers.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn capabilities_are_xet_only() {
        let backend = Backend::new(HostSettings::default(), "").unwrap();
        let caps = backend.capabilities();
        assert!(
            caps.features
                .contains(Features::XET | Features::RESUME | Features::RESOLVE)
        );
        assert!(!caps.features.contains(Features::NON_XET_FILES));
    }

    #[test]
    fn dropping_inside_an_async_context_does_not_panic() {
        let backend = Backend::new(HostSettings::default(), "").unwrap();
        let host = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        host.block_on(async move { drop(backend) });
    }
}
