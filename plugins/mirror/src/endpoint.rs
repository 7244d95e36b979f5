//! Endpoint mirrors: Hub-compatible servers (an in-house Hub proxy, Artifactory, olah, a public
//! mirror) tried in order, with health tracking and failover per request.
//!
//! Every request goes to the first **healthy** endpoint. A connection failure, a timeout, a 5xx
//! or a 429 marks that endpoint down for `cooldown_secs` (logged at `info`) and the request moves
//! on to the next one; a download continues from the bytes already written. When every endpoint
//! is down they are all tried anyway, in order (a cool-down never fails a run by itself). An
//! endpoint that answers again is marked up (logged). `NOT_FOUND` and `AUTH` answers move on to
//! the next endpoint without marking anything down (a mirror may not carry every repository).
//! The downloader's own retries are sent to the host as `RETRY` events.
//!
//! The Hub token goes to an endpoint only with `send_hub_token = true`, or when the endpoint is
//! the Hub itself (the same origin as the host's endpoint, e.g. the Hub listed last as the
//! fallback of a mirror list); an endpoint's own `token` is sent instead when set. Either is bound to the endpoint's origin: a redirect to a
//! CDN never carries it (hub-http's redirect loop).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hubget_hub_http::download::{DownloadOptions, ItemEvents};
use hubget_hub_http::{HttpClient, HubApi, redact_url};
use hubget_plugin_api::protocol::FetchOptions;
use hubget_plugin_api::std_types::RString;
use hubget_plugin_api::{
    CancelToken, ErrorKind, FetchBatch, FetchItem, FileDone, HostSettings, Manifest, PluginError,
    Progress,
};

use crate::config::EndpointSpec;
use crate::transfer::Leg;

/// One configured endpoint and its health.
#[derive(Debug)]
pub struct Endpoint {
    /// The base URL without credentials or query, for logs and `FileDone::source`.
    pub label: String,
    api: HubApi,
    opts: DownloadOptions,
    down_until: Mutex<Option<Instant>>,
}

impl Endpoint {
    /// Whether the endpoint is in its cool-down.
    pub fn is_down(&self) -> bool {
        self.down_until
            .lock()
            .map(|d| d.is_some_and(|t| Instant::now() < t))
            .unwrap_or(false)
    }

    /// The Hub API client of this endpoint.
    pub fn api(&self) -> &HubApi {
        &self.api
    }

    /// How downloads from this endpoint are split and retried.
    pub fn download_options(&self) -> &DownloadOptions {
        &self.opts
    }
}

/// Whether two base URLs share scheme, host and port (an endpoint that *is* the Hub gets the
/// Hub token like the Hub does).
fn same_origin_str(a: &str, b: &str) -> bool {
    use hubget_hub_http::reqwest::Url;
    match (Url::parse(a.trim()), Url::parse(b.trim())) {
        (Ok(a), Ok(b)) => hubget_hub_http::same_origin(&a, &b),
        _ => false,
    }
}

/// Whether an error says the endpoint is unhealthy (rather than "not here" or "not allowed").
pub fn is_health_error(e: &PluginError) -> bool {
    matches!(
        e.kind,
        ErrorKind::NETWORK | ErrorKind::TIMEOUT | ErrorKind::SERVER | ErrorKind::RATE_LIMITED
    )
}

/// The endpoints, in order, with their health and a runtime to drive them.
pub struct Pool {
    endpoints: Vec<Endpoint>,
    cooldown: Duration,
    runtime: hubget_plugin_api::sdk::Runtime,
    settings: HostSettings,
}

impl Pool {
    /// Builds one HTTP client per endpoint (its own timeout; one attempt each when there are
    /// several endpoints, so that failover is immediate) and the token rule.
    pub fn new(
        settings: &HostSettings,
        specs: &[EndpointSpec],
        cooldown: Duration,
    ) -> Result<Self, PluginError> {
        let mut endpoints = Vec::with_capacity(specs.len());
        for spec in specs {
            let table = spec.table();
            let mut s = settings.clone();
            if let Some(t) = table.timeout_secs {
                s.read_timeout_secs = t.max(1);
                s.connect_timeout_secs = s.connect_timeout_secs.min(t.max(1));
            }
            if specs.len() > 1 {
                s.max_attempts = 1;
            }
            let client = HttpClient::new(&s)?;
            let opts = DownloadOptions::from_settings(&s);
            let is_hub = same_origin_str(&table.url, &settings.endpoint);
            let token = match (&table.token, table.send_hub_token || is_hub) {
                (Some(own), _) => Some(own.as_str()),
                (None, true) => settings.token.as_deref(),
                (None, false) => None,
            };
            let api = HubApi::new(&table.url, token, client)
                .map_err(|e| e.context("[plugins.mirror] endpoints"))?;
            let label = redact_url(api.endpoint()).trim_end_matches('/').to_owned();
            endpoints.push(Endpoint {
                label,
                api,
                opts,
                down_until: Mutex::new(None),
            });
        }
        let runtime = hubget_plugin_api::sdk::runtime(crate::NAME, 2)?;
        Ok(Self {
            endpoints,
            cooldown,
            runtime,
            settings: settings.clone(),
        })
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The host settings the pool was built with.
    pub fn settings(&self) -> &HostSettings {
        &self.settings
    }

    /// The runtime that drives the endpoints' requests.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Healthy endpoints in order, then those in their cool-down, in order.
    pub fn candidates(&self) -> Vec<&Endpoint> {
        let (up, down): (Vec<&Endpoint>, Vec<&Endpoint>) =
            self.endpoints.iter().partition(|e| !e.is_down());
        up.into_iter().chain(down).collect()
    }

    /// Records a failure: a health error starts the endpoint's cool-down.
    pub fn record_failure(&self, endpoint: &Endpoint, error: &PluginError) {
        if !is_health_error(error) {
            log::debug!("mirror endpoint {}: {}", endpoint.label, error.message);
            return;
        }
        let Ok(mut down) = endpoint.down_until.lock() else {
            return;
        };
        let was_down = down.is_some_and(|t| Instant::now() < t);
        *down = Some(Instant::now() + self.cooldown);
        if !was_down {
            log::info!(
                "mirror endpoint {} marked down for {}s: {}",
                endpoint.label,
                self.cooldown.as_secs(),
                error.message
            );
        }
    }

    /// Records a success: an endpoint that was marked down is up again.
    pub fn record_success(&self, endpoint: &Endpoint) {
        let Ok(mut down) = endpoint.down_until.lock() else {
            return;
        };
        if down.take().is_some() {
            log::info!("mirror endpoint {} is up again", endpoint.label);
        }
    }

    /// Resolves through the first endpoint that answers.
    pub fn resolve(
        &self,
        repo_type: hubget_plugin_api::RepoType,
        repo_id: &str,
        revision: &str,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        let mut last: Option<PluginError> = None;
        for endpoint in self.candidates() {
            cancel.check()?;
            let got = self
                .runtime
                .block_on(endpoint.api.manifest(repo_type, repo_id, revision, cancel));
            match got {
                Ok(mut manifest) => {
                    self.record_success(endpoint);
                    log::info!(
                        "resolved {repo_id}@{revision} to {} through mirror endpoint {} ({} files)",
                        manifest.commit,
                        endpoint.label,
                        manifest.files.len()
                    );
                    let extra = serde_json::json!({ "mirror_endpoint": endpoint.label });
                    manifest.extra_json = RString::from(extra.to_string());
                    return Ok(manifest);
                }
                Err(e) if e.kind == ErrorKind::CANCELLED => return Err(e),
                Err(e) => {
                    self.record_failure(endpoint, &e);
                    last = Some(e.context(format!("mirror endpoint {}", endpoint.label)));
                }
            }
        }
        Err(last.unwrap_or_else(|| PluginError::new(ErrorKind::NOT_FOUND, "no mirror endpoint")))
    }

    /// Fetches one file through the endpoints, continuing on the next endpoint from the bytes
    /// already written when one fails. `Ok` names the endpoint that finished the file.
    pub fn fetch(
        &self,
        batch: &FetchBatch,
        index: u32,
        item: &FetchItem,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Result<FileDone, PluginError> {
        let mut offset = item.offset;
        // Ranges an earlier run wrote (the host's `written_ranges` option): not fetched again.
        let written = FetchOptions::parse(batch.options_json.as_str()).written_for(
            index,
            item.offset,
            item.file.size,
        );
        let mut balance = 0i64;
        let mut network = 0u64;
        let mut served_by: Vec<String> = Vec::new();
        let mut last: Option<PluginError> = None;
        for endpoint in self.candidates() {
            cancel.check()?;
            let source = endpoint.api.item_source(batch, item)?;
            crate::dir::announce(
                progress,
                index,
                format!("downloading from mirror endpoint {}", endpoint.label),
            );
            let leg = Leg {
                api: &endpoint.api,
                opts: &endpoint.opts,
                source,
                offset,
                already: &written,
                balance,
            };
            let to = ItemEvents { progress, index };
            let attempt = crate::transfer::download(self.runtime(), leg, item, to, cancel);
            offset = attempt.written.max(offset);
            balance = attempt.balance;
            network += attempt.network_bytes;
            if attempt.network_bytes > 0 {
                served_by.push(endpoint.label.clone());
            }
            match attempt.result {
                Ok(()) => {
                    self.record_success(endpoint);
                    if served_by.last() != Some(&endpoint.label) {
                        served_by.push(endpoint.label.clone());
                    }
                    let extra = serde_json::json!({ "endpoints": served_by });
                    let source = endpoint.label.as_str();
                    return Ok(FileDone::new(network, source).with_extra(&extra));
                }
                Err(e) if e.kind == ErrorKind::CANCELLED => return Err(e),
                Err(e) => {
                    self.record_failure(endpoint, &e);
                    if is_health_error(&e) && offset > item.offset {
                        log::info!(
                            "{}: continuing from byte {offset} on the next mirror endpoint",
                            item.file.path
                        );
                    }
                    last = Some(e.context(format!("mirror endpoint {}", endpoint.label)));
                }
            }
        }
        Err(last.unwrap_or_else(|| PluginError::new(ErrorKind::NOT_FOUND, "no mirror endpoint")))
    }
}
