//! hubget's `xet` backend plugin: Xet-backed files from Hugging Face's Xet CAS, no Python
//! (opt-in: `--backend xet`).
//!
//! * `resolve` uses the shared Hub client ([`hubget_hub_http::HubApi::manifest`]): the same
//!   manifest as the `lfs` backend; a redacted or malformed xet hash counts as absent.
//! * `fetch` gets a CAS token from `/api/{type}s/{repo}/xet-read-token/{commit}` (the Hub token
//!   goes to the Hub origin only), plans each Xet file against the chunks already on disk
//!   ([`reuse`]: copied locally, never fetched again), then fetches what is left itself: ranged
//!   reconstruction queries and xorb ranges ([`cas`]), decoded with xet-core's chunk codec and
//!   written in place as they arrive, segments in parallel ([`fetch`]). The token is renewed
//!   from the same Hub route before it expires.
//! * Files not stored in Xet (regular files, plain LFS files) are plain Hub files: they come
//!   from the Hub's `resolve` route through hub-http's ranged downloader, as Xet-enabled clients
//!   fetch them, so `--backend xet --no-fallback` works on any repository.
//! * Knobs live in `[plugins.xet]` ([`config::Config`]).
//!
//! Every request goes through hub-http's client: the host's proxy, CA bundle, timeouts, retry
//! policy and bandwidth cap apply to every Xet request.

pub mod cas;
pub mod concurrency;
pub mod config;
pub mod error;
pub mod fetch;
pub mod reuse;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use hubget_hub_http::{HttpClient, HubApi, XetToken, cancellable, is_xet_hash};
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, Features, FetchBatch, FileDone, FileOutcome,
    HostSettings, Manifest, PluginError, Progress, RepoType, ResolveRequest,
};

use crate::config::Config;
use crate::fetch::Job;

/// A CAS token is reused while it has at least this many seconds left.
const TOKEN_MIN_LIFETIME_SECS: u64 = 120;

/// The `xet` backend.
pub struct Backend {
    settings: HostSettings,
    hub: HubApi,
    /// CAS tokens, one per repository and revision, shared by every call.
    tokens: std::sync::Arc<token::Tokens>,
    /// Whether the CAS answered that it has no V2 reconstructions (V1 from then on).
    cas_v1_only: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tuning: fetch::Tuning,
    /// The chunk index next to the Hugging Face cache (None: reuse is off, or the host did not
    /// say where the cache is).
    index: Option<reuse::ChunkIndex>,
    /// Files this process fetched or is fetching (see [`Fetched`]).
    fetched: Mutex<Vec<Fetched>>,
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
        log::debug!("xet backend ready: {} threads", config.worker_threads());
        let index = settings
            .cache_dir
            .as_deref()
            .filter(|_| config.reuse)
            .map(reuse::ChunkIndex::new);
        Ok(Self {
            settings,
            tokens: std::sync::Arc::new(token::Tokens::new(hub.clone())),
            cas_v1_only: std::sync::Arc::default(),
            hub,
            tuning: config.tuning(),
            index,
            fetched: Mutex::new(Vec::new()),
            runtime,
        })
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// A CAS token for the repository at `revision`: the backend's, or one from the Hub.
    async fn token(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        cancel: &CancelToken,
    ) -> Result<XetToken, PluginError> {
        let key = token::key(repo_type, repo_id, revision);
        self.tokens
            .get(&key, TOKEN_MIN_LIFETIME_SECS, None, cancel)
            .await
    }

    async fn fetch_xet(
        &self,
        batch: &FetchBatch,
        jobs: Vec<Job>,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<(u32, Result<FileDone, PluginError>)> {
        let repo_id = batch.repo_id.as_str();
        let commit = batch.commit.as_str();
        let token = match cancellable(cancel, self.token(batch.repo_type, repo_id, commit, cancel))
            .await
            .and_then(|r| r)
        {
            Ok(t) => t,
            Err(e) => return jobs.iter().map(|j| (j.index, Err(e.clone()))).collect(),
        };
        let cas = cas::Cas::shared(
            self.hub.clone(),
            self.tokens.clone(),
            token::key(batch.repo_type, repo_id, commit),
            &token,
            self.cas_v1_only.clone(),
        );
        let Some(index) = &self.index else {
            return fetch::fetch(&cas, jobs, &self.tuning, progress, cancel).await;
        };
        let folder = batch.repo_type.cache_folder(repo_id);
        self.rebuild_repo_index(index, &folder, &cas, cancel).await;
        // The files' terms, asked together; a file's whole-file answer also serves its
        // download (no second query for the same bytes).
        let mut entries = HashMap::new();
        let mut known = HashMap::new();
        use futures_util::StreamExt;
        let asked = futures_util::stream::iter(&jobs)
            .map(|job| async {
                let found = self.terms_of(index, &cas, &job.hash, cancel).await;
                (job.hash.clone(), found)
            })
            .buffer_unordered(self.tuning.concurrency.max());
        for (hash, found) in asked.collect::<Vec<_>>().await {
            if let Some((entry, answer)) = found {
                entries.insert(hash.clone(), entry);
                if let Some(answer) = answer {
                    known.insert(hash, answer);
                }
            }
        }
        let jobs: Vec<Job> = jobs
            .into_iter()
            .map(|mut job| {
                job.known = known.get(&job.hash).cloned();
                job
            })
            .collect();
        // Files of the batch that share chunks go in order: a later one is planned after the
        // earlier one is on disk, so it copies instead of fetching the same chunks again.
        let mut results = Vec::new();
        for mut phase in phases(jobs, &entries) {
            let plans = self
                .plan_reuse(index, &entries, &mut phase, progress, cancel)
                .await;
            let done = fetch::fetch(&cas, phase, &self.tuning, progress, cancel).await;
            self.finish_reuse(plans, &done);
            results.extend(done);
        }
        results
    }

    /// The terms of `hash`: from the index, else from the CAS (and then indexed, the CAS's
    /// whole-file answer returned beside them).
    async fn terms_of(
        &self,
        index: &reuse::ChunkIndex,
        cas: &cas::Cas,
        hash: &str,
        cancel: &CancelToken,
    ) -> Option<(
        reuse::FileChunks,
        Option<std::sync::Arc<cas::Reconstruction>>,
    )> {
        if let Some(e) = index.load(hash) {
            return Some((e, None));
        }
        match reuse::reconstruction(cas, hash, cancel).await {
            Ok((e, answer)) => {
                index.save(hash, &e);
                Some((e, Some(std::sync::Arc::new(answer))))
            }
            Err(e) => {
                log::debug!("no reconstruction for {hash}: {e}");
                None
            }
        }
    }

    /// Indexes the cached Xet files of the repository that have no index entry yet (earlier
    /// revisions fetched by another backend or by another tool).
    async fn rebuild_repo_index(
        &self,
        index: &reuse::ChunkIndex,
        repo_folder: &str,
        cas: &cas::Cas,
        cancel: &CancelToken,
    ) {
        let known: std::collections::HashSet<String> = index.hashes().into_iter().collect();
        let missing: Vec<String> = index
            .repo_xet_hashes(repo_folder)
            .into_iter()
            .filter(|h| !known.contains(h))
            .take(MAX_REBUILDS)
            .collect();
        if missing.is_empty() {
            return;
        }
        // One batch query for them all (as xet-core asks), so the first byte is not held up
        // by one query per file; one at a time only on a CAS without the batch route.
        match cas.batch_terms(&missing, cancel).await {
            Ok(Some(found)) => {
                for (hash, terms) in found {
                    let hash = hash.to_ascii_lowercase();
                    if !missing.contains(&hash) {
                        continue;
                    }
                    match reuse::from_terms(&hash, terms) {
                        Ok(e) => index.save(&hash, &e),
                        Err(e) => log::debug!("{e}"),
                    }
                }
            }
            Ok(None) => {
                for h in missing {
                    self.terms_of(index, cas, &h, cancel).await;
                }
            }
            Err(e) => log::debug!("the reuse index is not rebuilt: {e}"),
        }
    }
}

/// A file this process fetched or is fetching: later files may take its chunks from its
/// partial file (or, once the host has landed it, from the shared blob store), and wait a
/// little for it when it is still in flight.
struct Fetched {
    hash: String,
    partial: PathBuf,
    entry: reuse::FileChunks,
    /// `Some(ok)` once the fetch ended.
    done: tokio::sync::watch::Receiver<Option<bool>>,
    /// The sources its plan used (dropped from the index if it is asked for again).
    sources: Vec<String>,
}

/// What one job's reuse plan did, for [`Backend::finish_reuse`].
struct Planned {
    index: u32,
    hash: String,
    entry: reuse::FileChunks,
    /// Whether `entry` is saved to the index when the file succeeds: not for a file asked for
    /// again (its own entry may be what made it fail).
    save: bool,
    done: tokio::sync::watch::Sender<Option<bool>>,
}

/// How long a file waits for an in-flight file it shares chunks with (the host's stall
/// watchdog sees no progress meanwhile; its default is 30 s).
const WAIT_FOR_INFLIGHT: std::time::Duration = std::time::Duration::from_secs(15);

/// At most this many cached files of the repository get their index rebuilt per batch.
const MAX_REBUILDS: usize = 64;

impl Backend {
    /// Plans every job of a phase: the chunks on disk it can take (copied into its partial
    /// file now) and the ranges left to fetch (`job.fetch`).
    async fn plan_reuse(
        &self,
        index: &reuse::ChunkIndex,
        entries: &HashMap<String, reuse::FileChunks>,
        jobs: &mut [Job],
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<Planned> {
        let mut planned = Vec::new();
        for job in jobs.iter_mut() {
            if cancel.is_cancelled() {
                break;
            }
            let Some(entry) = entries.get(&job.hash).cloned() else {
                continue;
            };
            if entry.size != job.size {
                log::warn!(
                    "{}: the CAS describes {} bytes, the manifest {}; not reusing chunks",
                    job.hash,
                    entry.size,
                    job.size
                );
                continue;
            }
            let again = self.forget_if_asked_again(index, &job.hash);
            let (tx, rx) = tokio::sync::watch::channel(None);
            let waits = self.register(job, &entry, rx);
            if again {
                log::info!(
                    "{}: asked for again in this run; fetching it without reusing chunks",
                    job.hash
                );
                // Its own entry may be the one that lied: dropped, and not saved again when
                // the fetch succeeds (the next run asks the CAS).
                index.drop_entry(&job.hash);
                planned.push(Planned {
                    index: job.index,
                    hash: job.hash.clone(),
                    entry,
                    save: false,
                    done: tx,
                });
                continue;
            }
            for mut w in waits {
                let _ = tokio::time::timeout(WAIT_FOR_INFLIGHT, w.wait_for(|d| d.is_some())).await;
            }
            let (map, sources) = self.sources_for(index, &job.hash, &entry);
            let copies = map.plan(&entry.terms, &job.fetch);
            log::debug!(
                "{}: {} chunk sources, {} local copies planned ({} bytes)",
                job.hash,
                map.sources.len(),
                copies.len(),
                copies.iter().map(|c| c.len).sum::<u64>()
            );
            if !copies.is_empty() {
                let (map, copies, path) = (map, copies, job.path.clone());
                let done = tokio::task::spawn_blocking(move || {
                    let (n, failed) = reuse::run_copies(&map, &copies, &path);
                    if !failed.is_empty() {
                        log::debug!("{} local copies failed; fetching those bytes", failed.len());
                    }
                    let ok: Vec<std::ops::Range<u64>> = copies
                        .iter()
                        .filter(|c| !failed.contains(c))
                        .map(|c| c.dst_offset..c.dst_offset + c.len)
                        .collect();
                    (n, ok)
                })
                .await;
                if let Ok((copied, ok)) = done
                    && copied > 0
                {
                    let covered = hubget_plugin_api::protocol::merge_ranges(ok);
                    job.fetch = job
                        .fetch
                        .iter()
                        .flat_map(|r| hubget_plugin_api::protocol::holes(r.start, r.end, &covered))
                        .collect();
                    progress.on_event(hubget_plugin_api::ProgressEvent::bytes(
                        job.index, copied, 0,
                    ));
                    job.local = copied;
                    log::info!(
                        "{}: {copied} of {} bytes taken from chunks on disk, {} to fetch",
                        job.hash,
                        job.size,
                        job.fetch.iter().map(|r| r.end - r.start).sum::<u64>()
                    );
                    if let Some(f) = self
                        .fetched
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .iter_mut()
                        .rev()
                        .find(|f| f.hash == job.hash)
                    {
                        f.sources = sources;
                    }
                }
            }
            planned.push(Planned {
                index: job.index,
                hash: job.hash.clone(),
                entry,
                save: true,
                done: tx,
            });
        }
        planned
    }

    /// When `hash` was fetched before in this process (it failed the host's verification, or was
    /// interrupted), drops the index entries of the sources its plan used and says so.
    fn forget_if_asked_again(&self, index: &reuse::ChunkIndex, hash: &str) -> bool {
        let fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        let Some(before) = fetched.iter().rev().find(|f| f.hash == hash) else {
            return false;
        };
        for s in &before.sources {
            log::info!("dropping the chunk index of {s}: a file built from it was asked for again");
            index.drop_entry(s);
        }
        true
    }

    /// Registers `job` as in flight; returns the in-flight files it shares xorbs with.
    fn register(
        &self,
        job: &Job,
        entry: &reuse::FileChunks,
        done: tokio::sync::watch::Receiver<Option<bool>>,
    ) -> Vec<tokio::sync::watch::Receiver<Option<bool>>> {
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        let waits = fetched
            .iter()
            .filter(|f| f.done.borrow().is_none() && f.hash != job.hash)
            .filter(|f| reuse::ChunkMap::shares_xorbs(&entry.terms, &f.entry))
            .map(|f| f.done.clone())
            .collect();
        fetched.push(Fetched {
            hash: job.hash.clone(),
            partial: job.path.clone(),
            entry: entry.clone(),
            done,
            sources: Vec::new(),
        });
        waits
    }

    /// The chunk sources for a file with `entry`: indexed files in the shared blob store, and
    /// files fetched earlier in this process, whose terms share xorbs with it (chunk lengths
    /// computed where they help). Returns the map and the source hashes.
    fn sources_for(
        &self,
        index: &reuse::ChunkIndex,
        hash: &str,
        entry: &reuse::FileChunks,
    ) -> (reuse::ChunkMap, Vec<String>) {
        let mut map = reuse::ChunkMap::default();
        let mut used = Vec::new();
        let finished: Vec<(String, PathBuf)> = self
            .fetched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|f| *f.done.borrow() == Some(true))
            .map(|f| (f.hash.clone(), f.partial.clone()))
            .collect();
        for h in index.hashes() {
            if h == hash {
                continue;
            }
            let Some(mut other) = index.load(&h) else {
                continue;
            };
            if !reuse::ChunkMap::shares_xorbs(&entry.terms, &other) {
                continue;
            }
            // A file of this run: its partial file, or the repo blob the host is landing it as
            // (`<etag>.hubget-partial` -> `<etag>`) before it moves into the shared store.
            let of_this_run = finished
                .iter()
                .filter(|(fh, _)| *fh == h)
                .flat_map(|(_, p)| {
                    let landed = p
                        .to_str()
                        .and_then(|s| s.strip_suffix(".hubget-partial"))
                        .map(PathBuf::from);
                    [Some(p.clone()), landed]
                })
                .flatten()
                .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() == other.size));
            let Some(path) = index.store_entry(&h, other.size).or(of_this_run) else {
                continue;
            };
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            if other.chunk_lens.is_none() && reuse::ChunkMap::needs_chunks(&entry.terms, &other) {
                other.chunk_lens = reuse::chunk_lens(&file, &other);
                if other.chunk_lens.is_some() && index.store_entry(&h, other.size).is_some() {
                    index.save(&h, &other);
                }
            }
            map.add(std::sync::Arc::new(file), &h, &other);
            used.push(h);
        }
        (map, used)
    }

    /// Records the end of each planned job: its index entry stays (it is a fact about its
    /// hash), and files waiting for it go on.
    fn finish_reuse(&self, plans: Vec<Planned>, results: &[(u32, Result<FileDone, PluginError>)]) {
        for p in plans {
            let ok = results.iter().any(|(i, r)| *i == p.index && r.is_ok());
            if let (Some(index), true, true) = (&self.index, ok, p.save) {
                index.save(&p.hash, &p.entry);
            }
            let _ = p.done.send(Some(ok));
        }
    }
}

impl Backend {
    /// Files that are not in Xet storage (regular files and plain LFS files) from the Hub's
    /// `resolve` route (the Hub token goes to the Hub only; redirects to a CDN do not carry it),
    /// with hub-http's ranged, resumable downloader.
    async fn fetch_plain(
        &self,
        batch: &FetchBatch,
        indices: &[u32],
        options: &hubget_plugin_api::protocol::FetchOptions,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<(u32, Result<FileDone, PluginError>)> {
        use hubget_hub_http::download::{
            DownloadOptions, ItemEvents, PartialTarget, download_to_partial,
        };
        let opts = DownloadOptions::from_settings(&self.settings);
        let one = |index: u32| {
            let opts = opts.clone();
            async move {
                let item = &batch.items[index as usize];
                progress.on_event(hubget_plugin_api::ProgressEvent::message(
                    index,
                    hubget_plugin_api::EventKind::STARTED,
                    "",
                ));
                let source = self.hub.item_source(batch, item)?;
                let opts =
                    opts.with_written(options.written_for(index, item.offset, item.file.size));
                let to = ItemEvents { progress, index };
                let events = |e| to.send(e);
                let target = PartialTarget::of(item, item.offset);
                let done =
                    download_to_partial(self.hub.client(), &source, target, &opts, &events, cancel)
                        .await
                        .map_err(|e| e.context(item.file.path.as_str()))?;
                let extra = serde_json::json!({ "via": "resolve" });
                Ok(FileDone::new(done.bytes_transferred, done.origin).with_extra(&extra))
            }
        };
        futures_util::future::join_all(indices.iter().map(|&i| async move { (i, one(i).await) }))
            .await
    }
}

/// Splits `jobs` into phases, in order: a job goes into the first phase after every earlier
/// job it shares a xorb with.
fn phases(jobs: Vec<Job>, entries: &HashMap<String, reuse::FileChunks>) -> Vec<Vec<Job>> {
    let mut phase_of: Vec<usize> = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        let mut phase = 0;
        if let Some(e) = entries.get(&job.hash) {
            for (k, earlier) in jobs[..i].iter().enumerate() {
                if let Some(o) = entries.get(&earlier.hash)
                    && earlier.hash != job.hash
                    && reuse::ChunkMap::shares_xorbs(&e.terms, o)
                {
                    phase = phase.max(phase_of[k] + 1);
                }
            }
        }
        phase_of.push(phase);
    }
    let mut out: Vec<Vec<Job>> = Vec::new();
    for (job, p) in jobs.into_iter().zip(phase_of) {
        if out.len() <= p {
            out.resize_with(p + 1, Vec::new);
        }
        out[p].push(job);
    }
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl BackendPlugin for Backend {
    fn capabilities(&self) -> Capabilities {
        let features = Features::RESOLVE
            | Features::RESUME
            | Features::XET
            | Features::NON_XET_FILES
            | Features::RATE_LIMIT;
        let extra = serde_json::json!({
            (hubget_plugin_api::protocol::RESOLVES_VIA): self.settings.endpoint,
        });
        Capabilities::new(&RepoType::ALL, features).with_extra(&extra)
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        if self.settings.offline {
            return Err(PluginError::offline("xet"));
        }
        self.runtime()
            .block_on(self.hub.manifest_for(request, cancel))
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        let mut outcomes = Vec::with_capacity(batch.items.len());
        let mut jobs = Vec::new();
        let mut plain = Vec::new();
        let options = hubget_plugin_api::protocol::FetchOptions::parse(batch.options_json.as_str());
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
                None if self.settings.offline => Some(PluginError::offline("xet")),
                None => {
                    // Not stored in Xet: a plain Hub file, fetched as Xet-enabled clients do.
                    plain.push(index);
                    None
                }
                Some(_) if self.settings.offline => Some(PluginError::offline("xet")),
                Some(_) if item.offset > item.file.size => Some(PluginError::new(
                    ErrorKind::OTHER,
                    format!(
                        "offset {} is past the end of {} ({} bytes)",
                        item.offset, item.file.path, item.file.size
                    ),
                )),
                Some(hash) => {
                    // Ranges an earlier run wrote past the offset are not fetched again.
                    let written = options.written_for(index, item.offset, item.file.size);
                    jobs.push(Job {
                        index,
                        hash,
                        size: item.file.size,
                        path: PathBuf::from(item.partial_path.as_str()),
                        offset: item.offset,
                        fetch: hubget_plugin_api::protocol::holes(
                            item.offset,
                            item.file.size,
                            &written,
                        ),
                        local: 0,
                        known: None,
                    });
                    None
                }
            };
            if let Some(e) = refusal {
                outcomes.push(FileOutcome::new(index, Err(e)));
            }
        }
        if !plain.is_empty() {
            let fetched = self
                .runtime()
                .block_on(self.fetch_plain(batch, &plain, &options, progress, cancel));
            outcomes.extend(fetched.into_iter().map(|(i, r)| FileOutcome::new(i, r)));
        }
        if jobs.is_empty() {
            outcomes.sort_by_key(|o| o.index);
            return outcomes;
        }
        if cancel.is_cancelled() {
            let cancelled = |j: &Job| FileOutcome::new(j.index, Err(PluginError::cancelled()));
            outcomes.extend(jobs.iter().map(cancelled));
            return outcomes;
        }
        let results = self
            .runtime()
            .block_on(self.fetch_xet(batch, jobs, progress, cancel));
        outcomes.extend(results.into_iter().map(|(i, r)| FileOutcome::new(i, r)));
        outcomes.sort_by_key(|o| o.index);
        outcomes
    }
}

hubget_plugin_api::export_plugin! {
    name: "xet",
    description: "Xet-backed files from the Xet CAS, only the chunks not on disk (opt-in; other files fall back)",
    constructor: Backend::new,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_cover_xet_and_plain_hub_files() {
        let backend = Backend::new(HostSettings::default(), "").unwrap();
        let caps = backend.capabilities();
        assert!(caps.features.contains(
            Features::XET | Features::RESUME | Features::RESOLVE | Features::NON_XET_FILES
        ));
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
