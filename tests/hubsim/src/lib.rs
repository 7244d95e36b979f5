//! hubsim: a faithful local Hugging Face Hub for hubget's tests and benchmarks.
//!
//! It serves, on 127.0.0.1 with ephemeral ports:
//! * a **Hub origin** (`resolve`, `/api/{models,datasets,spaces}/...` info, tree, paths-info,
//!   xet-read-token, refs, commits, the Git LFS batch API, Hub-style errors) plus control routes
//!   under `/_hubsim/` (counters, faults, info, stop/start the CAS);
//! * a **CDN origin** on another port (`/lfs/<sha256>`, `/xet-bridge/<xet hash>`, Range, no auth);
//! * a **Xet CAS**: Hugging Face's own `LocalTestServer` (xet-client `simulation`), filled through
//!   hf-xet's upload session, behind a Host-preserving proxy that counts, shapes and injects faults.
//!
//! Fixtures come from a declarative [`FixtureSpec`] (Rust or TOML) with seeded content. Start it
//! with [`HubSim::builder`] (async) or [`HubSim::start_blocking`] (plain `#[test]`s), or run the
//! `hubsim serve` binary. See `tests/hubsim/README.md`.

mod cas;
mod control;
mod fixture_store;
mod fixtures;
mod hub;
mod net;
pub mod python;
mod quota;
pub mod trained;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use control::{
    ActiveFault, Counters, Fault, FaultAction, Faults, Origin, PerOrigin, RequestRecord,
};
pub use fixtures::{
    Commit, CommitSpec, Content, FileEntry, FileSpec, FixtureSpec, Patch, Repo, RepoKind, RepoSpec,
    Storage,
};
pub use net::Shaping;
pub use quota::HubProfile;

/// The message of the Hub's 401 for a repository that does not exist or is not visible (the
/// real Hub's wording, which clients show).
pub const REPO_NOT_FOUND: &str = "Repository not found. If you are trying to access a private or gated repo, make sure you are authenticated.";

/// The token that unlocks private and gated repos by default.
pub const DEFAULT_TOKEN: &str = "hf_hubsim_secret_token";

/// Errors while starting hubsim.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The fixture spec is invalid.
    #[error("invalid fixture spec: {0}")]
    Spec(String),
    /// Socket or file I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Uploading fixtures to the CAS through hf-xet failed.
    #[error("xet upload: {0}")]
    Xet(String),
}

/// One file as the info file describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileInfo {
    /// Repo path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 hex of the content.
    pub sha256: String,
    /// Git blob sha1 (of the content for regular files, of the LFS pointer otherwise).
    pub git_oid: String,
    /// `regular`, `lfs` or `xet`.
    pub storage: Storage,
    /// Xet file hash, for Xet files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xet_hash: Option<String>,
}

/// One commit in the info file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommitInfo {
    /// 40-hex sha.
    pub sha: String,
    /// Title.
    pub message: String,
    /// Every file at this commit.
    pub files: Vec<FileInfo>,
}

/// One repo in the info file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepoInfo {
    /// `owner/name`.
    pub id: String,
    /// `model`, `dataset` or `space`.
    #[serde(rename = "type")]
    pub kind: RepoKind,
    /// Needs the token.
    pub private: bool,
    /// Downloads need the token.
    pub gated: bool,
    /// Commit `main` points to.
    pub head: String,
    /// Branch -> sha.
    pub branches: BTreeMap<String, String>,
    /// Tag -> sha.
    pub tags: BTreeMap<String, String>,
    /// `refs/pr/N` -> sha.
    pub prs: BTreeMap<String, String>,
    /// Files at `main`.
    pub files: Vec<FileInfo>,
    /// All commits, oldest first.
    pub commits: Vec<CommitInfo>,
}

impl RepoInfo {
    /// A file at `main`.
    pub fn file(&self, path: &str) -> Option<&FileInfo> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The bytes of all its files at the head.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// A commit by sha.
    pub fn commit(&self, sha: &str) -> Option<&CommitInfo> {
        self.commits.iter().find(|c| c.sha == sha)
    }
}

/// Everything a client needs: URLs, token and every fixture (the `--info` JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimInfo {
    /// Hub origin, use as `HF_ENDPOINT`.
    pub hub_url: String,
    /// CDN origin.
    pub cdn_url: String,
    /// CAS (proxy) URL, as returned in `casUrl`.
    pub cas_url: String,
    /// Control base URL (`<hub>/_hubsim`).
    pub control_url: String,
    /// Bearer token for private/gated repos.
    pub token: String,
    /// Tree API page size.
    pub tree_page_size: usize,
    /// Shaping in effect on CDN and CAS.
    pub shaping: Shaping,
    /// Fixtures.
    pub repos: Vec<RepoInfo>,
}

impl SimInfo {
    /// A repo by id (any type).
    pub fn repo(&self, id: &str) -> Option<&RepoInfo> {
        self.repos.iter().find(|r| r.id == id)
    }

    /// `path` at the head of repo `id`; panics when either is not a fixture.
    #[track_caller]
    pub fn file(&self, id: &str, path: &str) -> FileInfo {
        let repo = self
            .repo(id)
            .unwrap_or_else(|| panic!("no fixture repo {id}"));
        repo.file(path)
            .unwrap_or_else(|| panic!("no {path} in fixture repo {id}"))
            .clone()
    }
}

fn file_info(f: &FileEntry) -> FileInfo {
    FileInfo {
        path: f.path.clone(),
        size: f.size,
        sha256: f.sha256.clone(),
        git_oid: f.git_oid.clone(),
        storage: f.storage,
        xet_hash: f.xet_hash.clone(),
    }
}

fn repo_info(r: &Repo) -> RepoInfo {
    RepoInfo {
        id: r.id.clone(),
        kind: r.kind,
        private: r.private,
        gated: r.gated,
        head: r.head().sha.clone(),
        branches: r.branches.clone(),
        tags: r.tags.clone(),
        prs: r
            .prs
            .iter()
            .map(|(n, s)| (format!("refs/pr/{n}"), s.clone()))
            .collect(),
        files: r.head().files.values().map(file_info).collect(),
        commits: r
            .commits
            .iter()
            .map(|c| CommitInfo {
                sha: c.sha.clone(),
                message: c.message.clone(),
                files: c.files.values().map(file_info).collect(),
            })
            .collect(),
    }
}

/// Builder for [`HubSim`].
#[derive(Debug, Clone)]
pub struct HubSimBuilder {
    spec: FixtureSpec,
    shaping: Shaping,
    tree_page_size: usize,
    token: String,
    hub_profile: Option<HubProfile>,
    hub_latency_ms: u64,
    coarse_trim: u64,
    fixture_store: Option<std::path::PathBuf>,
}

impl HubSimBuilder {
    /// Where the CAS's contents are kept per fixture spec and copied from, instead of being
    /// uploaded again for every hubsim (see the `fixture_store` module); `None`: upload into an
    /// in-memory CAS. Default: `HUBSIM_FIXTURE_STORE` (`off` for none), else
    /// `target/hubsim-fixtures`.
    pub fn fixture_store(mut self, root: Option<std::path::PathBuf>) -> Self {
        self.fixture_store = root;
        self
    }

    /// The CAS trims coarsely, as the Xet spec allows: a ranged reconstruction's first term
    /// starts `bytes` (rounded out to whole chunks by the CAS) before the range asked for.
    pub fn coarse_trim(mut self, bytes: u64) -> Self {
        self.coarse_trim = bytes;
        self
    }

    /// Meter the Hub's requests as the Hub does ([`HubProfile`]): quotas per bucket and window,
    /// the `RateLimit` header fields on every response, 429s without `Retry-After`.
    pub fn hub_profile(mut self, profile: HubProfile) -> Self {
        self.hub_profile = Some(profile);
        self
    }

    /// Added before each Hub API response, in milliseconds (the real Hub is remote).
    pub fn hub_latency_ms(mut self, ms: u64) -> Self {
        self.hub_latency_ms = ms;
        self
    }

    /// Fixtures to serve (default: [`FixtureSpec::default_set`] with an 8 MiB `acme/big`).
    pub fn fixtures(mut self, spec: FixtureSpec) -> Self {
        self.spec = spec;
        self
    }

    /// Bandwidth/latency shaping for the CDN and the CAS.
    pub fn shape(mut self, shaping: Shaping) -> Self {
        self.shaping = shaping;
        self
    }

    /// Tree API page size (default 100; the real Hub uses 1000, 50 with `expand`).
    pub fn tree_page_size(mut self, n: usize) -> Self {
        self.tree_page_size = n.max(1);
        self
    }

    /// Token for private/gated repos (default [`DEFAULT_TOKEN`]).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Build the fixtures, start the CAS, upload, start the three origins.
    /// Must run inside a multi-thread tokio runtime.
    pub async fn start(self) -> Result<HubSim, Error> {
        let (mut store, jobs) = fixtures::materialize(&self.spec)?;
        let (cas_server, hashes, tmp) =
            fixture_store::cas_with_fixtures(&self.spec, jobs, self.fixture_store.as_deref())
                .await?;
        store.set_xet_hashes(&hashes);

        let hub_l = TcpListener::bind("127.0.0.1:0").await?;
        let cdn_l = TcpListener::bind("127.0.0.1:0").await?;
        let cas_l = TcpListener::bind("127.0.0.1:0").await?;
        let url = |l: &TcpListener| -> Result<String, Error> {
            Ok(format!("http://{}", l.local_addr()?))
        };
        let (hub_url, cdn_url, cas_url) = (url(&hub_l)?, url(&cdn_l)?, url(&cas_l)?);

        let repos: Vec<RepoInfo> = store.repos.values().map(repo_info).collect();
        let info = SimInfo {
            hub_url: hub_url.clone(),
            cdn_url: cdn_url.clone(),
            cas_url: cas_url.clone(),
            control_url: format!("{hub_url}/_hubsim"),
            token: self.token.clone(),
            tree_page_size: self.tree_page_size,
            shaping: self.shaping.clone(),
            repos,
        };
        let state = Arc::new(hub::HubState {
            store,
            hub_url,
            cdn_url,
            cas_url,
            token: self.token.clone(),
            tree_page_size: self.tree_page_size,
        });
        let counters = control::CounterTable::default();
        let faults = Faults::default();
        let total = self.shaping.rate_total.map(net::Bucket::new);
        let latency = Duration::from_millis(self.shaping.latency_ms);
        let shaped_ctx = |origin, router| {
            Arc::new(net::OriginCtx {
                origin,
                router,
                counters: counters.clone(),
                faults: faults.clone(),
                per_conn: self.shaping.rate_per_conn,
                total: total.clone(),
                latency,
                control: None,
                quota: None,
            })
        };
        let cas_ctx = shaped_ctx(
            Origin::Cas,
            cas::proxy_router(cas_server.http_endpoint(), self.coarse_trim)?,
        );
        let cdn_ctx = shaped_ctx(Origin::Cdn, hub::cdn_router(state.clone()));
        let cas_addr = cas_l.local_addr()?;
        let cas_origin = net::spawn_origin(cas_l, cas_ctx.clone()).await?;
        let cdn = net::spawn_origin(cdn_l, cdn_ctx).await?;
        let cas = Arc::new(CasControl {
            ctx: cas_ctx,
            addr: cas_addr,
            server: Mutex::new(Some(cas_origin)),
        });
        let control_state = Arc::new(ControlState {
            counters: counters.clone(),
            faults: faults.clone(),
            info: info.clone(),
            cas: cas.clone(),
        });
        let hub_ctx = Arc::new(net::OriginCtx {
            origin: Origin::Hub,
            router: hub::hub_router(state.clone()),
            counters: counters.clone(),
            faults: faults.clone(),
            per_conn: None,
            total: None,
            latency: Duration::from_millis(self.hub_latency_ms),
            control: Some(control_router(control_state)),
            quota: self
                .hub_profile
                .clone()
                .map(|p| Arc::new(quota::QuotaState::new(p))),
        });
        let hub = net::spawn_origin(hub_l, hub_ctx).await?;
        Ok(HubSim {
            info,
            state,
            counters,
            faults,
            cas,
            _hub: hub,
            _cdn: cdn,
            _cas_server: cas_server,
            _tmp: tmp,
        })
    }
}

struct CasControl {
    ctx: Arc<net::OriginCtx>,
    addr: SocketAddr,
    server: Mutex<Option<net::OriginServer>>,
}

impl CasControl {
    fn stop(&self) {
        if let Some(s) = self.server.lock().expect("cas lock").take() {
            s.stop();
        }
    }

    async fn start(&self) -> Result<(), Error> {
        if self.server.lock().expect("cas lock").is_some() {
            return Ok(());
        }
        let l = TcpListener::bind(self.addr).await?;
        let s = net::spawn_origin(l, self.ctx.clone()).await?;
        *self.server.lock().expect("cas lock") = Some(s);
        Ok(())
    }
}

/// A running simulator. Dropping it stops every server.
pub struct HubSim {
    info: SimInfo,
    state: Arc<hub::HubState>,
    counters: control::CounterTable,
    faults: Faults,
    cas: Arc<CasControl>,
    _hub: net::OriginServer,
    _cdn: net::OriginServer,
    _cas_server: xet_client::cas_client::simulation::LocalTestServer,
    _tmp: tempfile::TempDir,
}

impl std::fmt::Debug for HubSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSim")
            .field("hub_url", &self.info.hub_url)
            .finish_non_exhaustive()
    }
}

impl HubSim {
    /// A builder with the default fixture set, no shaping, tree pages of 100.
    pub fn builder() -> HubSimBuilder {
        HubSimBuilder {
            spec: FixtureSpec::default_set(8),
            shaping: Shaping::default(),
            tree_page_size: 100,
            token: DEFAULT_TOKEN.to_string(),
            hub_profile: None,
            hub_latency_ms: 0,
            coarse_trim: 0,
            fixture_store: fixture_store::default_root(),
        }
    }

    /// Start from synchronous code: the returned handle owns a multi-thread tokio runtime
    /// that runs the servers; dropping it shuts everything down. Do not call from async code.
    pub fn start_blocking(builder: HubSimBuilder) -> Result<HubSimHandle, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("hubsim")
            .build()?;
        let sim = rt.block_on(builder.start())?;
        Ok(HubSimHandle {
            sim: Some(sim),
            rt: Some(rt),
        })
    }

    /// Hub origin URL (`HF_ENDPOINT`).
    pub fn hub_url(&self) -> &str {
        &self.info.hub_url
    }

    /// CDN origin URL.
    pub fn cdn_url(&self) -> &str {
        &self.info.cdn_url
    }

    /// CAS URL (the proxy; what `casUrl` says).
    pub fn cas_url(&self) -> &str {
        &self.info.cas_url
    }

    /// Token for private/gated repos.
    pub fn token(&self) -> &str {
        &self.info.token
    }

    /// URLs and every fixture (the same JSON the binary writes with `--info`).
    pub fn info(&self) -> &SimInfo {
        &self.info
    }

    /// The bytes of `path` at the head of repo `id`, as the servers serve them; panics when
    /// either is not a fixture.
    #[track_caller]
    pub fn content(&self, id: &str, path: &str) -> bytes::Bytes {
        let repo = self.state.store.repos.values().find(|r| r.id == id);
        let repo = repo.unwrap_or_else(|| panic!("no fixture repo {id}"));
        let file = repo.head().files.get(path);
        file.unwrap_or_else(|| panic!("no {path} in fixture repo {id}"))
            .data
            .clone()
    }

    /// The fault table.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.counters.snapshot()
    }

    /// Zero the counters and clear the request log.
    pub fn reset_counters(&self) {
        self.counters.reset();
    }

    /// Stop the CAS: its port refuses connections and open connections are dropped.
    pub fn stop_cas(&self) {
        self.cas.stop();
    }

    /// Start the CAS again on the same port (after [`HubSim::stop_cas`]).
    pub async fn start_cas(&self) -> Result<(), Error> {
        self.cas.start().await
    }
}

/// A [`HubSim`] with its own runtime, for synchronous tests (derefs to [`HubSim`]).
pub struct HubSimHandle {
    sim: Option<HubSim>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for HubSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HubSimHandle").field(&self.sim).finish()
    }
}

impl std::ops::Deref for HubSimHandle {
    type Target = HubSim;
    fn deref(&self) -> &HubSim {
        self.sim.as_ref().expect("running")
    }
}

impl HubSimHandle {
    /// [`HubSim::start_cas`], blocking.
    pub fn start_cas_blocking(&self) -> Result<(), Error> {
        let rt = self.rt.as_ref().expect("running");
        rt.block_on(self.sim.as_ref().expect("running").start_cas())
    }

    /// The runtime the servers run on (to spawn async helpers in tests).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("running")
    }
}

impl Drop for HubSimHandle {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let sim = self.sim.take();
            rt.block_on(async move { drop(sim) });
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

struct ControlState {
    counters: control::CounterTable,
    faults: Faults,
    info: SimInfo,
    cas: Arc<CasControl>,
}

type Ctl = State<Arc<ControlState>>;

fn control_router(state: Arc<ControlState>) -> Router {
    Router::new()
        .route(
            "/_hubsim/info",
            get(|State(s): Ctl| async move { axum::Json(s.info.clone()) }),
        )
        .route(
            "/_hubsim/counters",
            get(|State(s): Ctl| async move { axum::Json(s.counters.snapshot()) }),
        )
        .route(
            "/_hubsim/reset-counters",
            post(no_content(|s| s.counters.reset())),
        )
        .route(
            "/_hubsim/faults",
            get(|State(s): Ctl| async move { axum::Json(s.faults.list()) })
                .post(|State(s): Ctl, body: axum::body::Bytes| async move { add_faults(&s, &body) })
                .delete(no_content(|s| s.faults.clear())),
        )
        .route("/_hubsim/stop-cas", post(no_content(|s| s.cas.stop())))
        .route(
            "/_hubsim/start-cas",
            post(|State(s): Ctl| async move {
                match s.cas.start().await {
                    Ok(()) => StatusCode::NO_CONTENT.into_response(),
                    Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                }
            }),
        )
        .with_state(state)
}

/// A control handler that does `action` and answers `204 No Content`.
fn no_content(
    action: fn(&ControlState),
) -> impl Fn(Ctl) -> std::future::Ready<StatusCode> + Clone + Send + Sync + 'static {
    move |State(s): Ctl| {
        action(&s);
        std::future::ready(StatusCode::NO_CONTENT)
    }
}

/// `POST /_hubsim/faults` with one [`Fault`] or an array; answers `{"ids":[..]}`.
fn add_faults(s: &ControlState, body: &[u8]) -> axum::response::Response {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Fault),
        Many(Vec<Fault>),
    }
    match serde_json::from_slice::<OneOrMany>(body) {
        Ok(f) => {
            let list = match f {
                OneOrMany::One(f) => vec![f],
                OneOrMany::Many(v) => v,
            };
            let ids: Vec<u64> = list.into_iter().map(|f| s.faults.add(f)).collect();
            axum::Json(serde_json::json!({ "ids": ids })).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad fault JSON: {e}")).into_response(),
    }
}
