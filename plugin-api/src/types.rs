//! The data that crosses the plugin boundary. Every type here is part of the frozen v1 layout.
//!
//! Every type that crosses the boundary as data also has a serde form (kinds as their numbers),
//! the one codec an isolated plugin's helper process speaks to the host with.
//!
//! Kinds are `#[repr(transparent)]` `u32` newtypes with associated constants, never Rust enums:
//! adding a variant to an exhaustive enum changes its layout and breaks loading in both
//! directions. Code that matches on a kind must keep a fallback arm for values it does not know.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use abi_stable::StableAbi;
use abi_stable::std_types::{RArc, ROption, RStr, RString, RVec};

/// What went wrong, as an open-ended code. Unknown values are treated like [`ErrorKind::OTHER`].
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ErrorKind(pub u32);

impl ErrorKind {
    /// Anything not covered below.
    pub const OTHER: Self = Self(0);
    /// The repository, revision or file does not exist (or is not held by this backend).
    pub const NOT_FOUND: Self = Self(1);
    /// Authentication is missing or was refused (401, 403, gated repository).
    pub const AUTH: Self = Self(2);
    /// Connection failure, reset, DNS, TLS.
    pub const NETWORK: Self = Self(3);
    /// A time limit ran out.
    pub const TIMEOUT: Self = Self(4);
    /// The host's cancel token was set; the backend stopped.
    pub const CANCELLED: Self = Self(5);
    /// The plugin panicked; the SDK caught it at the boundary.
    pub const PANIC: Self = Self(6);
    /// The plugin's configuration table or the host settings are invalid.
    pub const CONFIG: Self = Self(7);
    /// This backend cannot do what was asked (a method, a repo type, a file without a xet hash).
    pub const UNSUPPORTED: Self = Self(8);
    /// Local I/O failed (disk full, permissions).
    pub const IO: Self = Self(9);
    /// The server answered something that breaks the protocol.
    pub const PROTOCOL: Self = Self(10);
    /// The server asked us to slow down (429); see `retry_after_ms`.
    pub const RATE_LIMITED: Self = Self(11);
    /// Bytes did not match what was expected (size or hash).
    pub const INTEGRITY: Self = Self(12);
    /// The server failed (5xx).
    pub const SERVER: Self = Self(13);

    /// A short lowercase name for messages and JSON; `kind-<n>` for values this build does not know.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        let s = match self {
            Self::OTHER => "other",
            Self::NOT_FOUND => "not-found",
            Self::AUTH => "auth",
            Self::NETWORK => "network",
            Self::TIMEOUT => "timeout",
            Self::CANCELLED => "cancelled",
            Self::PANIC => "panic",
            Self::CONFIG => "config",
            Self::UNSUPPORTED => "unsupported",
            Self::IO => "io",
            Self::PROTOCOL => "protocol",
            Self::RATE_LIMITED => "rate-limited",
            Self::INTEGRITY => "integrity",
            Self::SERVER => "server",
            Self(n) => return format!("kind-{n}").into(),
        };
        s.into()
    }
}

impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A structured error from a plugin. Messages must never contain tokens or signed URLs.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginError {
    /// The class of failure; the host decides retry and fallback from it.
    pub kind: ErrorKind,
    /// One line for humans, with context (`GET <url>: 503 Service Unavailable`).
    pub message: RString,
    /// Whether the same call may succeed if repeated later.
    pub retryable: bool,
    /// The HTTP status behind the error, or 0.
    pub http_status: u16,
    /// How long the server asked us to wait (Retry-After), in milliseconds, or 0.
    pub retry_after_ms: u64,
    /// Extra machine-readable detail as a JSON object, or empty.
    pub detail_json: RString,
}

impl PluginError {
    /// An error of `kind` with `message`; not retryable, no status.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
            retryable: false,
            http_status: 0,
            retry_after_ms: 0,
            detail_json: RString::new(),
        }
    }

    /// Shorthand for [`ErrorKind::UNSUPPORTED`].
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, message)
    }

    /// The error of a network backend asked to work in offline mode (`UNSUPPORTED`, so the host
    /// moves on to the next backend).
    pub fn offline(backend: &str) -> Self {
        Self::unsupported(format!(
            "offline mode: the {backend} backend needs the network"
        ))
    }

    /// Shorthand for [`ErrorKind::CANCELLED`].
    pub fn cancelled() -> Self {
        Self::new(ErrorKind::CANCELLED, "cancelled by the host")
    }

    /// Marks the error as retryable.
    #[must_use]
    pub fn retryable(mut self, yes: bool) -> Self {
        self.retryable = yes;
        self
    }

    /// Records the HTTP status behind the error.
    #[must_use]
    pub fn with_status(mut self, status: u16) -> Self {
        self.http_status = status;
        self
    }

    /// Records the server's Retry-After, in milliseconds.
    #[must_use]
    pub fn with_retry_after_ms(mut self, ms: u64) -> Self {
        self.retry_after_ms = ms;
        self
    }

    /// Prefixes the message with context: `"<context>: <message>"`.
    #[must_use]
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = RString::from(format!("{context}: {}", self.message));
        self
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for PluginError {}

/// The type of a Hub repository.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RepoType(pub u32);

impl RepoType {
    /// A model repository (`/api/models`, no URL prefix).
    pub const MODEL: Self = Self(0);
    /// A dataset repository (`/api/datasets`, URL prefix `datasets/`).
    pub const DATASET: Self = Self(1);
    /// A Space (`/api/spaces`, URL prefix `spaces/`).
    pub const SPACE: Self = Self(2);
    /// A kernel repository (`/api/kernels`, URL prefix `kernels/`; since 1.1). Older hosts and
    /// plugins see an unknown type: list it in `Capabilities::repo_types` only if you serve it.
    pub const KERNEL: Self = Self(3);
    /// Every type this version knows, in order.
    pub const ALL: [Self; 4] = [Self::MODEL, Self::DATASET, Self::SPACE, Self::KERNEL];

    /// `model`, `dataset`, `space`, `kernel`, or `repo-type-<n>` for unknown values.
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Self::MODEL => "model".into(),
            Self::DATASET => "dataset".into(),
            Self::SPACE => "space".into(),
            Self::KERNEL => "kernel".into(),
            Self(n) => format!("repo-type-{n}").into(),
        }
    }

    /// The plural used in API paths and cache folder names: `models`, `datasets`, `spaces`,
    /// `kernels`.
    pub fn plural(self) -> Option<&'static str> {
        match self {
            Self::MODEL => Some("models"),
            Self::DATASET => Some("datasets"),
            Self::SPACE => Some("spaces"),
            Self::KERNEL => Some("kernels"),
            _ => None,
        }
    }

    /// huggingface_hub's folder name for a repository of this type (its `repo_folder_name`):
    /// `models--org--name`, the same in the cache, a directory mirror and an object-store export.
    /// A type this interface version does not know folds to `models`.
    pub fn cache_folder(self, repo_id: &str) -> String {
        std::iter::once(self.plural().unwrap_or("models"))
            .chain(repo_id.split('/'))
            .collect::<Vec<_>>()
            .join("--")
    }

    /// The prefix of `resolve` URLs: `""`, `datasets/`, `spaces/`, `kernels/`.
    pub fn url_prefix(self) -> Option<&'static str> {
        match self {
            Self::MODEL => Some(""),
            Self::DATASET => Some("datasets/"),
            Self::SPACE => Some("spaces/"),
            Self::KERNEL => Some("kernels/"),
            _ => None,
        }
    }

    /// Parses `model`, `dataset`, `space`, `kernel` (and their plurals).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "model" | "models" => Some(Self::MODEL),
            "dataset" | "datasets" => Some(Self::DATASET),
            "space" | "spaces" => Some(Self::SPACE),
            "kernel" | "kernels" => Some(Self::KERNEL),
            _ => None,
        }
    }
}

impl fmt::Debug for RepoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for RepoType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Optional abilities of a backend, as bit flags. Unknown bits are ignored by the host.
#[repr(transparent)]
#[derive(
    StableAbi, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Features(pub u64);

impl Features {
    /// `resolve` works: the backend can turn a repo + revision into a manifest.
    pub const RESOLVE: Self = Self(1);
    /// `fetch` honours `FetchItem::offset` (writes only the bytes from the offset on).
    pub const RESUME: Self = Self(1 << 1);
    /// Files are fetched as several ranges in parallel.
    pub const PARALLEL_RANGES: Self = Self(1 << 2);
    /// Xet-backed files are fetched through Xet reconstruction (needs a xet hash).
    pub const XET: Self = Self(1 << 3);
    /// Files without a xet hash can be fetched.
    pub const NON_XET_FILES: Self = Self(1 << 4);
    /// The backend reads local directories only (no network).
    pub const LOCAL: Self = Self(1 << 5);
    /// Honours `HostSettings::limit_rate` (the bandwidth cap) for everything it downloads.
    pub const RATE_LIMIT: Self = Self(1 << 6);

    /// No features.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Names of the known bits that are set, for display.
    pub fn names(self) -> Vec<&'static str> {
        const NAMES: [(Features, &str); 7] = [
            (Features::RESOLVE, "resolve"),
            (Features::RESUME, "resume"),
            (Features::PARALLEL_RANGES, "parallel-ranges"),
            (Features::XET, "xet"),
            (Features::NON_XET_FILES, "non-xet-files"),
            (Features::LOCAL, "local"),
            (Features::RATE_LIMIT, "rate-limit"),
        ];
        NAMES
            .iter()
            .filter(|(bit, _)| self.contains(*bit))
            .map(|(_, name)| *name)
            .collect()
    }
}

impl std::ops::BitOr for Features {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({:?})", self.names())
    }
}

/// What a backend can do. Growth goes into `features` bits and `extra_json`, never new fields.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// The repository types this backend serves.
    pub repo_types: RVec<RepoType>,
    /// Optional abilities.
    pub features: Features,
    /// How many files one `fetch` call should carry at most (0: no preference).
    pub max_batch_files: u32,
    /// Anything else, as a JSON object (or empty).
    pub extra_json: RString,
}

impl Capabilities {
    /// Serves `repo_types` with `features`; no batch size preference, no extra facts.
    pub fn new(repo_types: &[RepoType], features: Features) -> Self {
        Self {
            repo_types: RVec::from(repo_types.to_vec()),
            features,
            max_batch_files: 0,
            extra_json: RString::new(),
        }
    }

    /// Asks for at most `n` files per `fetch` call.
    pub fn with_max_batch_files(mut self, n: u32) -> Self {
        self.max_batch_files = n;
        self
    }

    /// Adds facts for `hubget plugins` and the host (a JSON object).
    pub fn with_extra(mut self, extra: &serde_json::Value) -> Self {
        self.extra_json = extra.to_string().into();
        self
    }
}

/// Static facts about a plugin, read before any backend is created.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    /// The backend name users type (`--backend NAME`, `[plugins.NAME]`): lowercase, `[a-z0-9_-]`.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// One line saying what the backend does.
    pub description: RString,
    /// The `hubget-plugin-api` version the plugin was compiled against.
    pub api_version: RString,
    /// Whether the plugin was built with `panic = "unwind"`. The host refuses `false`: with
    /// `panic = "abort"` any panic in the plugin kills the whole process.
    pub panic_unwind: bool,
    /// Anything else, as a JSON object (or empty).
    pub extra_json: RString,
}

/// Log callback type: `(level, target, message)`, level as in [`log::Level`] (1 = error .. 5 = trace).
pub type LogFn = extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>);

/// What the host hands a plugin at `init`.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct HostContext {
    /// The host's version, for messages.
    pub host_version: RString,
    /// What the host supports beyond v1.0, as a JSON object (or empty); a plugin must not rely
    /// on a feature the host did not advertise here.
    pub features_json: RString,
    /// The most verbose level the host will print (0 = off .. 5 = trace).
    pub max_log_level: u8,
    /// Receives the plugin's log records (`level, target, message`); safe to call from any thread.
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
}

/// A request to resolve a repository revision into a manifest.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ResolveRequest {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// `owner/name`.
    pub repo_id: RString,
    /// A branch, tag, `refs/pr/N` or a 40-hex commit sha.
    pub revision: RString,
    /// Options as a JSON object (or empty). No key is defined yet; backends ignore unknown keys.
    pub options_json: RString,
}

/// One file of a repository at one commit.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestFile {
    /// The path inside the repository, `/`-separated. Untrusted: the host validates it.
    pub path: RString,
    /// Size in bytes.
    pub size: u64,
    /// The git object id (sha1 of the blob, or of the LFS pointer for LFS files).
    pub git_oid: RString,
    /// The sha256 of the content, for LFS and Xet-backed files.
    pub sha256: ROption<RString>,
    /// The Xet file hash, for Xet-backed files.
    pub xet_hash: ROption<RString>,
}

/// A repository revision resolved to one commit and its files.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The 40-hex commit sha every file belongs to.
    pub commit: RString,
    /// Every file of the revision.
    pub files: RVec<ManifestFile>,
    /// Anything else, as a JSON object (or empty).
    pub extra_json: RString,
}

impl Manifest {
    /// A manifest of `files` at `commit`, with no extra facts.
    pub fn new(commit: impl Into<RString>, files: Vec<ManifestFile>) -> Self {
        Self {
            commit: commit.into(),
            files: RVec::from(files),
            extra_json: RString::new(),
        }
    }

    /// Adds facts for the host's report (a JSON object).
    pub fn with_extra(mut self, extra: &serde_json::Value) -> Self {
        self.extra_json = extra.to_string().into();
        self
    }

    /// The file at `path`, if the revision has one.
    pub fn file(&self, path: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.path.as_str() == path)
    }
}

/// Whether `s` is a full commit id: 40 hex digits (a branch or tag name is not).
pub fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One file to fetch, with the partial file the host prepared.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FetchItem {
    /// The file, as resolved.
    pub file: ManifestFile,
    /// Absolute path of the partial file. It exists and holds `offset` good bytes; the backend
    /// writes bytes `offset..file.size` at their positions and must not truncate the file.
    pub partial_path: RString,
    /// Where to start: the bytes before it are already on disk and verified by the host.
    pub offset: u64,
}

/// A batch of files of one repository at one commit, fetched by one call.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FetchBatch {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// `owner/name`.
    pub repo_id: RString,
    /// The commit sha from the manifest.
    pub commit: RString,
    /// The revision the user asked for (a branch, tag or sha), for backends that need it.
    pub revision: RString,
    /// The files.
    pub items: RVec<FetchItem>,
    /// Options as a JSON object (or empty), read and written only through
    /// [`protocol::FetchOptions`](crate::protocol::FetchOptions): `written_ranges` (per item, the
    /// ranges of its partial file already written past `offset`; a backend may skip them, one
    /// that ignores them rewrites from `offset`, which stays correct). Unknown keys are ignored.
    pub options_json: RString,
}

/// What happened to one file of a batch.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct FileOutcome {
    /// Index of the item in `FetchBatch::items`.
    pub index: u32,
    /// Success, or why this file failed.
    #[serde(with = "result_codec")]
    pub result: abi_stable::std_types::RResult<FileDone, PluginError>,
}

/// The serde form of an `RResult` (`{"ok": ..}` or `{"err": ..}`), for the process boundary of
/// isolated plugins.
mod result_codec {
    use abi_stable::std_types::RResult;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Wire<T, E> {
        Ok(T),
        Err(E),
    }

    pub fn serialize<T: Serialize + Clone, E: Serialize + Clone, S: Serializer>(
        r: &RResult<T, E>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match r {
            RResult::ROk(v) => Wire::<&T, &E>::Ok(v).serialize(s),
            RResult::RErr(e) => Wire::<&T, &E>::Err(e).serialize(s),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, E: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<RResult<T, E>, D::Error> {
        Ok(match Wire::<T, E>::deserialize(d)? {
            Wire::Ok(v) => RResult::ROk(v),
            Wire::Err(e) => RResult::RErr(e),
        })
    }
}

impl FileOutcome {
    /// The outcome of item `index`.
    pub fn new(index: u32, result: Result<FileDone, PluginError>) -> Self {
        Self {
            index,
            result: result.into(),
        }
    }

    /// One outcome per item, the `i`-th result for item `i`.
    pub fn in_order(results: impl IntoIterator<Item = Result<FileDone, PluginError>>) -> Vec<Self> {
        (0..).zip(results).map(|(i, r)| Self::new(i, r)).collect()
    }
}

/// A file that a backend finished writing (the host still verifies it).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct FileDone {
    /// Bytes received from the network for this file (compressed, deduplicated or resumed
    /// transfers make this differ from the file size).
    pub bytes_transferred: u64,
    /// Where the bytes came from, for reports (an endpoint origin, a directory), or empty.
    pub source: RString,
    /// Anything else, as a JSON object (or empty).
    pub extra_json: RString,
}

impl FileDone {
    /// `bytes_transferred` bytes received from `source` (an endpoint, a directory, or empty).
    pub fn new(bytes_transferred: u64, source: impl Into<RString>) -> Self {
        Self {
            bytes_transferred,
            source: source.into(),
            extra_json: RString::new(),
        }
    }

    /// Adds facts for the host's report (a JSON object).
    pub fn with_extra(mut self, extra: &serde_json::Value) -> Self {
        self.extra_json = extra.to_string().into();
        self
    }
}

/// The kind of a progress event.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct EventKind(pub u32);

impl EventKind {
    /// The backend started working on the item.
    pub const STARTED: Self = Self(0);
    /// New bytes were written to the partial file (`bytes` is the delta).
    pub const BYTES: Self = Self(1);
    /// A retry inside the backend (`message` says why).
    pub const RETRY: Self = Self(2);
    /// Free-form information (`message`), such as which endpoint serves the file.
    pub const INFO: Self = Self(3);
    /// A resume checkpoint: `bytes` is an **absolute** count; every byte of the partial file
    /// before it is written. Sequential writers send it as they go; parallel writers send their
    /// low watermark. The host persists it, so an interrupted run resumes from there. A backend
    /// that never sends it resumes from the last offset the host knew.
    pub const CHECKPOINT: Self = Self(4);
    /// A range of the partial file is fully written; `message` is JSON `{"start":S,"end":E}`
    /// (absolute offsets, end exclusive). Backends that write out of order send it as each range
    /// completes; the host persists the set so an interrupted run fetches only the holes.
    pub const RANGE_WRITTEN: Self = Self(5);
}

impl fmt::Debug for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::STARTED => f.write_str("started"),
            Self::BYTES => f.write_str("bytes"),
            Self::RETRY => f.write_str("retry"),
            Self::INFO => f.write_str("info"),
            Self::CHECKPOINT => f.write_str("checkpoint"),
            Self::RANGE_WRITTEN => f.write_str("range-written"),
            Self(n) => write!(f, "event-{n}"),
        }
    }
}

/// A progress event for one item of a batch.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProgressEvent {
    /// Index of the item in `FetchBatch::items`.
    pub index: u32,
    /// What happened.
    pub kind: EventKind,
    /// For `BYTES`: file bytes newly written since the previous event of this item.
    pub bytes: u64,
    /// For `BYTES`: network bytes received since the previous event (0 if unknown).
    pub network_bytes: u64,
    /// Text for `RETRY` (a [`protocol::RetryNote`](crate::protocol::RetryNote)),
    /// `RANGE_WRITTEN` (a [`protocol::RangeWritten`](crate::protocol::RangeWritten)), `INFO` and
    /// `STARTED` (free text); empty for `BYTES` and `CHECKPOINT`.
    pub message: RString,
}

impl ProgressEvent {
    /// A `BYTES` event.
    pub fn bytes(index: u32, bytes: u64, network_bytes: u64) -> Self {
        Self {
            index,
            kind: EventKind::BYTES,
            bytes,
            network_bytes,
            message: RString::new(),
        }
    }

    /// A `CHECKPOINT` event: bytes `0..written` of the partial file are on disk.
    pub fn checkpoint(index: u32, written: u64) -> Self {
        Self {
            index,
            kind: EventKind::CHECKPOINT,
            bytes: written,
            network_bytes: 0,
            message: RString::new(),
        }
    }

    /// A `RANGE_WRITTEN` event: bytes `start..end` of the partial file are on disk. The one
    /// encoder of this payload (`{"start":S,"end":E}`); [`protocol::RangeWritten`] decodes it.
    ///
    /// [`protocol::RangeWritten`]: crate::protocol::RangeWritten
    pub fn range_written(index: u32, start: u64, end: u64) -> Self {
        Self::message(
            index,
            EventKind::RANGE_WRITTEN,
            format!("{{\"start\":{start},\"end\":{end}}}"),
        )
    }

    /// An event of `kind` carrying a message.
    pub fn message(index: u32, kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            index,
            kind,
            bytes: 0,
            network_bytes: 0,
            message: RString::from(message.into()),
        }
    }
}

/// A flag the host sets to stop a call. Backends check it between reads and return
/// [`ErrorKind::CANCELLED`] within about a second of it being set.
#[repr(transparent)]
#[derive(StableAbi, Clone, Default)]
pub struct CancelToken {
    flag: RArc<AtomicBool>,
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag; every clone sees it.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// `Err(CANCELLED)` if the flag is set.
    pub fn check(&self) -> Result<(), PluginError> {
        if self.is_cancelled() {
            Err(PluginError::cancelled())
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_shas_are_recognised() {
        assert!(is_commit_sha(&"a".repeat(40)));
        assert!(is_commit_sha(&"A0".repeat(20)));
        assert!(!is_commit_sha("main"));
        assert!(!is_commit_sha(&"a".repeat(39)));
        assert!(!is_commit_sha(&"g".repeat(40)));
    }

    #[test]
    fn cache_folders_are_huggingface_hubs() {
        assert_eq!(RepoType::MODEL.cache_folder("gpt2"), "models--gpt2");
        assert_eq!(
            RepoType::DATASET.cache_folder("acme/tiny"),
            "datasets--acme--tiny"
        );
        assert_eq!(RepoType::KERNEL.cache_folder("a/b"), "kernels--a--b");
        assert_eq!(RepoType(9).cache_folder("a/b"), "models--a--b");
    }
}
