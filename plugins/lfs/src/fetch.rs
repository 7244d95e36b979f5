//! `fetch`: regular files through `resolve`, LFS and Xet-backed files through one Git LFS
//! batch request per fetch, then ranged parallel GETs into the host's partial files.
//!
//! * Regular files (no sha256): `GET {ep}/{prefix}{repo}/resolve/{commit}/{path}` with the Hub
//!   token; the Hub answers 200 itself (a redirect is followed, the token stays on the Hub).
//! * LFS and Xet-backed files (a sha256): the batch API's `actions.download` href with the
//!   action's headers (sent to that href's origin only). An href that expired, or expires
//!   within [`EXPIRY_MARGIN`], is refreshed with a one-object batch request before use, and once
//!   more if the CDN refuses it mid-download (401/403); the download then continues from the
//!   last checkpoint. If the endpoint has no batch API (404/405/501 for the whole request,
//!   e.g. a plain mirror), those files go through `resolve` as well.
//! * Up to `concurrent_files` files at a time, each over up to `connections` ranges.
//! * Every retry inside the downloader (and every href refresh) is sent to the host as a
//!   `RETRY` event whose message names the redacted request, the reason, the wait and the
//!   attempt (`"GET <cdn>/lfs/<sha>: 503 Service Unavailable; retrying in 200 ms (attempt
//!   2/5)"`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hubget_hub_http::{
    DownloadOptions, Event, HubApi, ItemEvents, LfsDownload, LfsObject, PartialTarget, Source,
    download_to_partial,
};
use hubget_plugin_api::protocol::{FetchOptions, RetryNote};
use hubget_plugin_api::{
    CancelToken, ErrorKind, EventKind, FetchBatch, FetchItem, FileDone, PluginError, Progress,
    ProgressEvent,
};

/// An href this close to expiry is refreshed before use.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// How one file is fetched.
#[derive(Clone, Debug)]
enum Route {
    /// Through `resolve` (regular files; LFS files when the batch API is off or missing).
    Resolve,
    /// Through a batch action.
    Batch(LfsDownload),
    /// The batch API refused this object.
    Failed(PluginError),
}

/// What [`Fetcher::fetch`] needs from the backend.
pub struct Fetcher<'a> {
    /// The Hub client.
    pub hub: &'a HubApi,
    /// Download shape.
    pub opts: DownloadOptions,
    /// Whether to use the batch API for LFS/Xet-backed files.
    pub use_batch_api: bool,
    /// Files at a time.
    pub concurrent_files: usize,
}

fn is_lfs(item: &FetchItem) -> bool {
    item.file.sha256.is_some()
}

fn sha256(item: &FetchItem) -> String {
    item.file
        .sha256
        .as_ref()
        .map(|s| s.as_str().to_ascii_lowercase())
        .into_option()
        .unwrap_or_default()
}

/// Whether a failed batch request means "this endpoint has no batch API".
fn batch_api_missing(e: &PluginError) -> bool {
    matches!(e.http_status, 404 | 405 | 501) && !e.message.contains("RepoNotFound")
}

impl Fetcher<'_> {
    /// Fetches every item of `batch`; one result per item, in order.
    pub async fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<Result<FileDone, PluginError>> {
        let routes = self.routes(batch, cancel).await;
        let jobs = batch
            .items
            .iter()
            .zip(routes)
            .enumerate()
            .map(|(i, (item, route))| {
                self.fetch_one(batch, i as u32, item, route, progress, cancel)
            });
        let mut results: Vec<(u32, Result<FileDone, PluginError>)> =
            futures_util::stream::iter(jobs)
                .buffer_unordered(self.concurrent_files.max(1))
                .collect()
                .await;
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// One batch request for every LFS/Xet-backed item; how each item is fetched.
    async fn routes(&self, batch: &FetchBatch, cancel: &CancelToken) -> Vec<Route> {
        let mut routes: Vec<Route> = vec![Route::Resolve; batch.items.len()];
        if !self.use_batch_api {
            return routes;
        }
        let mut objects: Vec<LfsObject> = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for item in batch.items.iter().filter(|i| is_lfs(i)) {
            let oid = sha256(item);
            seen.entry(oid.clone()).or_insert_with(|| {
                objects.push(LfsObject {
                    oid,
                    size: item.file.size,
                });
                objects.len() - 1
            });
        }
        if objects.is_empty() {
            return routes;
        }
        let answer = self
            .hub
            .lfs_batch(
                batch.repo_type,
                batch.repo_id.as_str(),
                &objects,
                Some(batch.revision.as_str()).filter(|r| !r.is_empty()),
                cancel,
            )
            .await;
        match answer {
            Ok(results) => {
                for (item, route) in batch.items.iter().zip(routes.iter_mut()) {
                    if is_lfs(item) {
                        *route = match &results[seen[&sha256(item)]] {
                            Ok(d) => Route::Batch(d.clone()),
                            Err(e) => Route::Failed(e.clone()),
                        };
                    }
                }
            }
            Err(e) if batch_api_missing(&e) => {
                log::info!(
                    "no Git LFS batch API at this endpoint ({}); using resolve URLs",
                    e.message
                );
            }
            Err(e) => {
                let e = e.context("Git LFS batch request");
                for (item, route) in batch.items.iter().zip(routes.iter_mut()) {
                    if is_lfs(item) {
                        *route = Route::Failed(e.clone());
                    }
                }
            }
        }
        routes
    }

    /// A fresh action for one object (its href expired or was refused).
    async fn refresh(
        &self,
        batch: &FetchBatch,
        item: &FetchItem,
        cancel: &CancelToken,
    ) -> Result<LfsDownload, PluginError> {
        let object = LfsObject {
            oid: sha256(item),
            size: item.file.size,
        };
        let mut results = self
            .hub
            .lfs_batch(
                batch.repo_type,
                batch.repo_id.as_str(),
                std::slice::from_ref(&object),
                Some(batch.revision.as_str()).filter(|r| !r.is_empty()),
                cancel,
            )
            .await?;
        results.pop().unwrap_or_else(|| {
            Err(PluginError::new(
                ErrorKind::PROTOCOL,
                "empty batch response",
            ))
        })
    }

    async fn fetch_one(
        &self,
        batch: &FetchBatch,
        index: u32,
        item: &FetchItem,
        route: Route,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> (u32, Result<FileDone, PluginError>) {
        let result = self
            .fetch_item(batch, index, item, route, progress, cancel)
            .await;
        (
            index,
            result.map_err(|e| e.context(item.file.path.as_str())),
        )
    }

    async fn fetch_item(
        &self,
        batch: &FetchBatch,
        index: u32,
        item: &FetchItem,
        mut route: Route,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Result<FileDone, PluginError> {
        cancel.check()?;
        progress.on_event(ProgressEvent::message(index, EventKind::STARTED, ""));
        let already = FetchOptions::parse(batch.options_json.as_str()).written_for(
            index,
            item.offset,
            item.file.size,
        );
        let opts = self.opts.clone().with_written(already);
        let to = ItemEvents { progress, index };
        let mut offset = item.offset;
        let written = AtomicU64::new(offset);
        let mut total_net = 0u64;
        let mut refreshes = 0;
        loop {
            let (source, via) = match &route {
                Route::Failed(e) => return Err(e.clone()),
                Route::Resolve => (self.hub.item_source(batch, item)?, "resolve"),
                Route::Batch(action) => {
                    if action
                        .expires_at
                        .is_some_and(|t| t <= Instant::now() + EXPIRY_MARGIN)
                        && refreshes < 2
                    {
                        refreshes += 1;
                        route = Route::Batch(self.refresh(batch, item, cancel).await?);
                        continue;
                    }
                    let source = Source {
                        url: action.href.clone(),
                        headers: action.headers.clone(),
                        // Only ever sent if the href is on the Hub's own origin.
                        credential: self.hub.credential().cloned(),
                    };
                    (source, "batch")
                }
            };
            let events = |event: Event| {
                if let Event::Checkpoint(n) = event {
                    written.fetch_max(n, Ordering::AcqRel);
                }
                to.send(event);
            };
            let target = PartialTarget::of(item, offset);
            let result =
                download_to_partial(self.hub.client(), &source, target, &opts, &events, cancel)
                    .await;
            match result {
                Ok(done) => {
                    total_net += done.bytes_transferred;
                    let extra = serde_json::json!({ "via": via });
                    return Ok(FileDone::new(total_net, done.origin).with_extra(&extra));
                }
                // A signed href that stopped working: ask again once, continue from the prefix.
                Err(e)
                    if matches!(route, Route::Batch(_))
                        && matches!(e.http_status, 401 | 403)
                        && refreshes < 2 =>
                {
                    refreshes += 1;
                    let note = RetryNote::reason_only(format!(
                        "refreshing the download URL after: {}",
                        e.message
                    ));
                    progress.on_event(note.event(index));
                    route = Route::Batch(self.refresh(batch, item, cancel).await?);
                    offset = written.load(Ordering::Acquire).max(offset);
                }
                Err(e) => return Err(e),
            }
        }
    }
}
