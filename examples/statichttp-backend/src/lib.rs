//! `statichttp`: an example third-party hubget backend for a source that is **not** the Hub.
//!
//! A team publishes repositories as plain files on any static HTTP server (nginx, a bucket's
//! website endpoint, `python -m http.server` behind a proxy that understands `Range`):
//!
//! ```text
//! <base_url>/<repo_id>/<revision>/index.json          {"files": [{"path", "size", "sha256"}]}
//! <base_url>/<repo_id>/<revision>/files/<path>        the files
//! ```
//!
//! ```toml
//! [plugins.statichttp]
//! base_url = "https://models.example.internal/hub"    # without it the backend is inert
//! ```
//!
//! What it shows (see `docs/plugin-authors.md`, "Sources without git"):
//! - **A commit for a source without git.** The host names snapshot folders by a 40-hex commit.
//!   This backend derives one from the content of the index (a digest of every path, size and
//!   sha256), so two revisions with the same files share a snapshot and a changed file makes a
//!   new one. A constant (forty zeros) would put every revision in one folder.
//! - **sha256 instead of a git oid.** `git_oid` stays empty; the host verifies the sha256 and
//!   names the blob after it.
//! - **Cancellable blocking I/O.** Each file is opened and read through
//!   [`stream_to_partial`](hubget_plugin_api::sdk::stream_to_partial), so a hung server costs
//!   at most ~100 ms after the host cancels, not the whole batch.
//! - **Who retries.** One request per file per call: on a failure the backend returns a
//!   retryable error, and the host retries the call from the last checkpoint, then falls back.
//! - **Inert until configured.** `new` accepts an empty table (so `hubget plugins` lists the
//!   backend); `resolve` and `fetch` say what to set.
//! - **No credentials.** The Hub token is for the Hub origin only: this backend never sends it.

use std::io::Read;

use hubget_plugin_api::sdk::{BackendPlugin, fetch_each, parse_config, stream_to_partial};
use hubget_plugin_api::std_types::{ROption, RString};
use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, EventKind, Features, FetchBatch, FileDone, FileOutcome,
    HostSettings, Manifest, ManifestFile, PluginError, Progress, ProgressEvent, RepoType,
    ResolveRequest,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The `[plugins.statichttp]` table. Unknown keys are errors (the SDK names the table and key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Where repositories are published (no trailing `/` needed).
    base_url: Option<String>,
}

/// The backend.
pub struct StaticHttp {
    base_url: Option<String>,
    agent: ureq::Agent,
    offline: bool,
}

/// One entry of `index.json`.
#[derive(Debug, Deserialize)]
struct IndexFile {
    path: String,
    size: u64,
    sha256: String,
}

#[derive(Debug, Deserialize)]
struct Index {
    files: Vec<IndexFile>,
}

/// The largest index read (a hostile server cannot make us buffer without bound).
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

impl StaticHttp {
    /// Creates the backend from the host settings and the `[plugins.statichttp]` table.
    pub fn new(settings: HostSettings, config_toml: &str) -> Result<Self, PluginError> {
        let config: Config = parse_config("statichttp", config_toml)?;
        let base_url = config
            .base_url
            .map(|u| u.trim().trim_end_matches('/').to_owned());
        if let Some(url) = &base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(PluginError::new(
                ErrorKind::CONFIG,
                format!(
                    "invalid [plugins.statichttp] table (key `base_url`): `{url}` is not an http(s) URL"
                ),
            ));
        }
        let agent = ureq::Agent::config_builder()
            .user_agent(settings.user_agent.as_str())
            .timeout_connect(Some(std::time::Duration::from_secs(
                settings.connect_timeout_secs.max(1),
            )))
            // Statuses are ours to classify.
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Self {
            base_url,
            agent,
            offline: settings.offline,
        })
    }

    fn base(&self) -> Result<&str, PluginError> {
        if self.offline {
            return Err(PluginError::unsupported(
                "offline mode: statichttp needs the network",
            ));
        }
        self.base_url.as_deref().ok_or_else(|| {
            PluginError::new(
                ErrorKind::CONFIG,
                "set `base_url` in the [plugins.statichttp] table to the server that publishes the repositories",
            )
        })
    }

    fn revision_url(&self, repo_id: &str, revision: &str) -> Result<String, PluginError> {
        Ok(format!(
            "{}/{}/{}",
            self.base()?,
            encode_path(repo_id),
            encode_path(revision)
        ))
    }

    /// GET `url` (with `Range: bytes=<offset>-` when `offset > 0`), classified.
    fn get(
        agent: &ureq::Agent,
        url: &str,
        offset: u64,
    ) -> Result<ureq::http::Response<ureq::Body>, PluginError> {
        let mut request = agent.get(url);
        if offset > 0 {
            request = request.header("Range", format!("bytes={offset}-"));
        }
        let response = request.call().map_err(|e| {
            PluginError::new(ErrorKind::NETWORK, format!("GET {url}: {e}")).retryable(true)
        })?;
        let status = response.status().as_u16();
        let kind = match status {
            200..=299 => return Ok(response),
            401 | 403 => ErrorKind::AUTH,
            404 | 410 => ErrorKind::NOT_FOUND,
            429 => ErrorKind::RATE_LIMITED,
            500..=599 => ErrorKind::SERVER,
            _ => ErrorKind::PROTOCOL,
        };
        let retryable = matches!(status, 429 | 500..=599);
        Err(PluginError::new(kind, format!("GET {url}: {status}"))
            .with_status(status)
            .retryable(retryable))
    }
}

/// The commit for a listing: 40 hex digits of a sha256 over every path, size and sha256 in path
/// order. Content-addressed, so the same files always get the same snapshot folder.
fn commit_of(files: &[IndexFile]) -> String {
    let mut sorted: Vec<&IndexFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hasher = Sha256::new();
    for f in sorted {
        hasher.update(format!(
            "{}\0{}\0{}\n",
            f.path,
            f.size,
            f.sha256.to_ascii_lowercase()
        ));
    }
    hex(&hasher.finalize())[..40].to_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes each `/`-separated segment (only unreserved characters pass).
fn encode_path(s: &str) -> String {
    s.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Skips the first `n` bytes of a reader (a server that ignored `Range` answered 200).
struct Skip<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Skip<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.n > 0 {
            let want = buf.len().min(self.n as usize);
            let got = self.inner.read(&mut buf[..want])?;
            if got == 0 {
                return Ok(0);
            }
            self.n -= got as u64;
        }
        self.inner.read(buf)
    }
}

impl BackendPlugin for StaticHttp {
    fn capabilities(&self) -> Capabilities {
        let repo_types = [RepoType::MODEL, RepoType::DATASET, RepoType::SPACE];
        Capabilities::new(
            &repo_types,
            Features::RESOLVE | Features::RESUME | Features::NON_XET_FILES,
        )
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        cancel.check()?;
        let url = format!(
            "{}/index.json",
            self.revision_url(&request.repo_id, &request.revision)?
        );
        let mut response = Self::get(&self.agent, &url, 0)?;
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_INDEX_BYTES)
            .read_to_vec()
            .map_err(|e| {
                PluginError::new(ErrorKind::NETWORK, format!("GET {url}: {e}")).retryable(true)
            })?;
        let index: Index = serde_json::from_slice(&body).map_err(|e| {
            PluginError::new(
                ErrorKind::PROTOCOL,
                format!("GET {url}: not a valid index: {e}"),
            )
        })?;
        for f in &index.files {
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PluginError::new(
                    ErrorKind::PROTOCOL,
                    format!("GET {url}: `{}` has no valid sha256", f.path),
                ));
            }
        }
        let commit = commit_of(&index.files);
        log::info!(
            "{} files of {}@{} (snapshot {commit})",
            index.files.len(),
            request.repo_id,
            request.revision
        );
        // Paths are untrusted: the host validates them before anything is written.
        let files = index
            .files
            .into_iter()
            .map(|f| ManifestFile {
                path: f.path.into(),
                size: f.size,
                // No git here: the host verifies the sha256 and names the blob after it.
                git_oid: RString::new(),
                sha256: ROption::RSome(f.sha256.to_ascii_lowercase().into()),
                xet_hash: ROption::RNone,
            })
            .collect::<Vec<_>>();
        Ok(Manifest::new(commit, files))
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        // One outcome per item, whatever happens.
        fetch_each(batch, |index, _| {
            self.fetch_one(batch, index, progress, cancel)
        })
    }
}

impl StaticHttp {
    fn fetch_one(
        &self,
        batch: &FetchBatch,
        index: u32,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Result<FileDone, PluginError> {
        let base = self.revision_url(&batch.repo_id, &batch.revision)?;
        let item = &batch.items[index as usize];
        let url = format!("{base}/files/{}", encode_path(&item.file.path));
        progress.on_event(ProgressEvent::message(
            index,
            EventKind::STARTED,
            format!("from {url}"),
        ));
        let (agent, offset, open_url) = (self.agent.clone(), item.offset, url.clone());
        let written = stream_to_partial(
            move || {
                let response = Self::get(&agent, &open_url, offset)?;
                let skip = if response.status().as_u16() == 206 {
                    0
                } else {
                    offset
                };
                Ok(Skip {
                    inner: response.into_body().into_reader(),
                    n: skip,
                })
            },
            item,
            index,
            progress,
            cancel,
        )
        .map_err(|e| {
            if e.message.starts_with("GET ") {
                e
            } else {
                e.context(format!("GET {url}"))
            }
        })?;
        Ok(FileDone::new(written, url))
    }
}

hubget_plugin_api::export_plugin! {
    name: "statichttp",
    description: "example third-party backend: repositories published on a static HTTP server",
    constructor: StaticHttp::new,
}
