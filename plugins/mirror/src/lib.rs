//! hubget's `mirror` backend plugin: Hub-compatible mirror endpoints with failover, and
//! directory mirrors.
//!
//! # Configuration (`[plugins.mirror]`, see [`config`])
//!
//! ```toml
//! [plugins.mirror]
//! endpoints = ["https://hf-mirror.example", { url = "https://proxy.internal", timeout_secs = 300,
//!              send_hub_token = false, token = "..." }]
//! dirs = ["/shared/team-cache/hub"]
//! cooldown_secs = 30             # how long a failed endpoint is skipped
//! resolve_from_dirs = "offline"  # "offline" | "always" | "never"
//! resolve_from_endpoints = true  # false: endpoints serve bytes only
//! ```
//!
//! With neither `endpoints` nor `dirs` the backend loads, advertises no features, and answers
//! `UNSUPPORTED` to `resolve` and `NOT_FOUND` to every file, so the default order
//! `lfs, xet, mirror` stays harmless.
//!
//! # Fetch
//!
//! Each file is looked for in the directory mirrors first (no network: `blobs/<sha256>` or
//! `blobs/<git oid>` of the manifest, else the snapshot entry), copied from the host's offset
//! (a `FICLONE` reflink for a whole file where the filesystem can, else `copy_file_range` through
//! `std::io::copy`); then through the endpoints, in order, skipping those marked down. A file no
//! mirror holds is `NOT_FOUND`, so the host hands it to the next backend. `FileDone::source` names
//! the directory or the endpoint origin that served the file.
//!
//! # Which manifest the host trusts: the resolve policy of directory mirrors
//!
//! The host verifies every file against the manifest of the first backend that resolves, so a
//! manifest must be trustworthy. A directory mirror's manifest is built from the snapshot's
//! symlinks: each blob name is a hash the writer of that cache computed (`sha256` for 64-hex
//! names, the git blob oid for 40-hex names), so the host still catches a corrupted blob.
//! But a cache does not know everything:
//! * the git oid of an LFS/Xet file (the sha1 of its pointer) is not in the cache: left empty,
//!   with the sha256 set; the Xet hash is unknown: `None` (the xet backend cannot take such
//!   files; this backend and lfs can);
//! * `refs/main` is as old as the last download into that cache (stale);
//! * a snapshot downloaded in part lists only part of the revision (a partial manifest).
//!
//! Therefore a directory mirror resolves only when the host runs **offline**
//! (`resolve_from_dirs = "offline"`, the default) — the cache is then the best answer, as in
//! `HF_HUB_OFFLINE=1` — and otherwise declines with `UNSUPPORTED`, so the host resolves through
//! the next backend against the Hub and the directory still serves the bytes (by hash, which
//! also finds files unchanged since an older commit). hubget's own offline mode plans from its
//! own cache without asking any backend, so with hubget the default acts like `"never"`; it
//! matters for hosts that pass `offline` on. Air-gapped sites that do not set offline mode
//! choose `"always"` and accept stale refs and partial snapshots; `"never"` makes directories
//! serve bytes only. A 40-hex revision is never stale, but may still be partial, so it follows
//! the same rule. A revision the directories do not hold is `NOT_FOUND`.
//!
//! Endpoint mirrors resolve like the Hub (they are Hub-compatible servers) and come first when
//! both are configured: a mirror placed first in the order is then trusted for metadata too
//! (its manifest's hashes are what the host checks). Users who trust only the Hub's metadata set
//! `resolve_from_endpoints = false`: the mirror declines with `UNSUPPORTED`, the next backend
//! (lfs) resolves against the Hub, and the mirror's bytes are checked against the Hub's hashes.
//!
//! # Endpoints, health and tokens
//!
//! See [`endpoint`]: per request, the first healthy endpoint; a connection failure, timeout,
//! 5xx or 429 marks an endpoint down for `cooldown_secs` (logged at `info`, as is its
//! recovery) and the request moves on, a download continuing from the bytes already on disk.
//! The Hub token goes to a mirror only with `send_hub_token = true` (or when the mirror is the
//! Hub's own origin); an endpoint's `token` is its own. With several endpoints each request is
//! tried once per endpoint (failover instead of retries); a single endpoint gets the host's
//! `max_attempts`. `timeout_secs` sets an endpoint's read timeout (the host's by default; cold
//! proxies may need long ones).

pub mod config;
pub mod dir;
pub mod endpoint;
pub mod error;
pub mod transfer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hubget_plugin_api::sdk::{BackendPlugin, parse_config};
use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, Features, FetchBatch, FetchItem, FileDone, FileOutcome,
    HostSettings, Manifest, PluginError, Progress, RepoType, ResolveRequest,
};

use crate::config::{Config, DirResolve};
use crate::dir::DirMirror;
use crate::endpoint::Pool;
use crate::error::MirrorError;

/// The plugin's name, as in `[plugins.mirror]`.
pub const NAME: &str = "mirror";

/// Files of one batch worked on at once.
const FILE_WORKERS: usize = 4;

/// The `mirror` backend.
pub struct Mirror {
    settings: HostSettings,
    dirs: Vec<DirMirror>,
    resolve_from_dirs: DirResolve,
    resolve_from_endpoints: bool,
    pool: Option<Pool>,
}

impl Mirror {
    /// Builds the backend from the host settings and the `[plugins.mirror]` table.
    pub fn new(settings: HostSettings, config_toml: &str) -> Result<Self, PluginError> {
        let config: Config = parse_config(NAME, config_toml)?;
        for dir in config.dirs.iter().filter(|d| !d.is_dir()) {
            // Not an error: a shared filesystem may be unmounted for a while; files fall back.
            log::warn!(
                "directory mirror {} is not a directory (yet); it serves nothing until it is",
                dir.display()
            );
        }
        let dirs = config.dirs.iter().cloned().map(DirMirror::new).collect();
        let pool = if config.endpoints.is_empty() {
            None
        } else {
            Some(Pool::new(
                &settings,
                &config.endpoints,
                Duration::from_secs(config.cooldown_secs),
            )?)
        };
        Ok(Self {
            settings,
            dirs,
            resolve_from_dirs: config.resolve_from_dirs,
            resolve_from_endpoints: config.resolve_from_endpoints,
            pool,
        })
    }

    /// The endpoint pool, unless none is configured or the host runs offline.
    fn online_pool(&self) -> Option<&Pool> {
        self.pool.as_ref().filter(|_| !self.settings.offline)
    }

    fn dirs_may_resolve(&self) -> bool {
        match self.resolve_from_dirs {
            DirResolve::Always => true,
            DirResolve::Offline => self.settings.offline,
            DirResolve::Never => false,
        }
    }

    fn resolve_inner(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        let (repo_type, repo_id, revision) = (
            request.repo_type,
            request.repo_id.as_str(),
            request.revision.as_str(),
        );
        if self.dirs.is_empty() && self.pool.is_none() {
            return Err(MirrorError::NotConfigured(
                "no mirror is configured ([plugins.mirror] endpoints or dirs)".into(),
            )
            .into());
        }
        let mut endpoint_error = None;
        if let Some(pool) = self.online_pool().filter(|_| self.resolve_from_endpoints) {
            match pool.resolve(repo_type, repo_id, revision, cancel) {
                Ok(manifest) => return Ok(manifest),
                Err(e) if e.kind == ErrorKind::CANCELLED => return Err(e),
                Err(e) => endpoint_error = Some(e),
            }
        } else if self.dirs.is_empty() {
            let why = if self.settings.offline {
                "offline: mirror endpoints are not used".to_owned()
            } else {
                format!(
                    "resolve_from_endpoints = false: another backend resolves \
                     {repo_id}@{revision}, the mirror endpoints serve the files"
                )
            };
            return Err(MirrorError::NotConfigured(why).into());
        }
        if self.dirs.is_empty() {
            return Err(endpoint_error.unwrap_or_else(|| {
                PluginError::new(ErrorKind::NOT_FOUND, "no mirror endpoint answered")
            }));
        }
        if !self.dirs_may_resolve() {
            // A decline, not a miss: UNSUPPORTED lets the host move on quietly.
            return Err(endpoint_error.unwrap_or_else(|| {
                MirrorError::NotConfigured(format!(
                    "directory mirrors resolve only offline or with resolve_from_dirs = \"always\" \
                     (now {:?}); another backend resolves {repo_id}@{revision}, the mirror still \
                     serves the files",
                    self.resolve_from_dirs
                ))
                .into()
            }));
        }
        let mut last = None;
        for dir in &self.dirs {
            match dir.resolve(repo_type, repo_id, revision) {
                Ok(manifest) => {
                    log::info!(
                        "resolved {repo_id}@{revision} to {} from directory mirror {} ({} files)",
                        manifest.commit,
                        dir.root().display(),
                        manifest.files.len()
                    );
                    return Ok(manifest);
                }
                Err(e) => {
                    log::debug!("{e}");
                    last = Some(e);
                }
            }
        }
        Err(endpoint_error.unwrap_or_else(|| {
            last.unwrap_or_else(|| MirrorError::NotFound("no directory mirror".into()))
                .into()
        }))
    }

    /// Fetches one item: directory mirrors first, then endpoints (unless offline).
    fn fetch_one(
        &self,
        batch: &FetchBatch,
        index: u32,
        item: &FetchItem,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Result<FileDone, PluginError> {
        if cancel.is_cancelled() {
            return Err(MirrorError::Cancelled.into());
        }
        let (repo_type, repo_id, commit) = (
            batch.repo_type,
            batch.repo_id.as_str(),
            batch.commit.as_str(),
        );
        let path = item.file.path.as_str();
        let mut last = None;
        for dir in &self.dirs {
            let src = match dir.locate(repo_type, repo_id, commit, &item.file) {
                Ok(Some(src)) => src,
                Ok(None) => continue,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let source = dir.root().display().to_string();
            dir::announce(
                progress,
                index,
                format!("copying from directory mirror {source}"),
            );
            match dir::copy_into(&src, item, index, progress, cancel) {
                Ok(method) => {
                    log::debug!("{path}: {} from {}", method.name(), src.display());
                    let copied = item.file.size.saturating_sub(item.offset);
                    let extra =
                        serde_json::json!({ "method": method.name(), "copied_bytes": copied });
                    return Ok(FileDone::new(0, source).with_extra(&extra));
                }
                Err(MirrorError::Cancelled) => return Err(MirrorError::Cancelled.into()),
                Err(e) => {
                    log::warn!("directory mirror {source}: {e}");
                    last = Some(e);
                }
            }
        }
        if let Some(pool) = self.online_pool() {
            return pool.fetch(batch, index, item, progress, cancel);
        }
        if self.dirs.is_empty() {
            let why = if self.pool.is_some() {
                "offline: mirror endpoints are not used"
            } else {
                "no mirror is configured ([plugins.mirror] endpoints or dirs)"
            };
            return Err(MirrorError::NotFound(format!("{why}; cannot fetch {path}")).into());
        }
        Err(last
            .unwrap_or_else(|| {
                MirrorError::NotFound(format!(
                    "no directory mirror holds {path} of {repo_id}@{commit}"
                ))
            })
            .into())
    }
}

impl BackendPlugin for Mirror {
    fn capabilities(&self) -> Capabilities {
        let mut features = Features::empty();
        if !self.dirs.is_empty() || self.pool.is_some() {
            // Endpoint downloads honour the bandwidth cap; directory copies use no network.
            features = features | Features::RESUME | Features::NON_XET_FILES | Features::RATE_LIMIT;
        }
        let endpoints_resolve = self.pool.is_some() && self.resolve_from_endpoints;
        let dirs_resolve = !self.dirs.is_empty() && self.resolve_from_dirs != DirResolve::Never;
        if endpoints_resolve || dirs_resolve {
            features = features | Features::RESOLVE;
        }
        if self.pool.is_none() && !self.dirs.is_empty() {
            features = features | Features::LOCAL;
        }
        if self.pool.is_some() && self.settings.connections_per_file > 1 {
            features = features | Features::PARALLEL_RANGES;
        }
        let endpoints: Vec<&str> = self
            .pool
            .iter()
            .flat_map(|p| p.endpoints().iter().map(|e| e.label.as_str()))
            .collect();
        let extra = serde_json::json!({
            "endpoints": endpoints,
            "dirs": self.dirs.len(),
            "resolve_from_dirs": format!("{:?}", self.resolve_from_dirs).to_lowercase(),
            "resolve_from_endpoints": self.resolve_from_endpoints,
        });
        Capabilities::new(&RepoType::ALL, features).with_extra(&extra)
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        cancel.check()?;
        self.resolve_inner(request, cancel)
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        let items: &[FetchItem] = &batch.items;
        let next = AtomicUsize::new(0);
        let workers = FILE_WORKERS.min(items.len()).max(1);
        let mut outcomes: Vec<FileOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(item) = items.get(i) else { break };
                            let index = i as u32;
                            let result = self.fetch_one(batch, index, item, progress, cancel);
                            done.push(FileOutcome::new(index, result));
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        outcomes.sort_by_key(|o| o.index);
        outcomes
    }
}

hubget_plugin_api::export_plugin! {
    name: "mirror",
    description: "Hub-compatible mirror endpoints with failover, and directory mirrors",
    constructor: Mirror::new,
}
