//! Test support for backend plugins (feature `testing`): what a unit test of a [`BackendPlugin`]
//! needs to call `fetch` the way the host does and to check what the plugin reported, with no
//! abi_stable knowledge.
//!
//! ```toml
//! [dev-dependencies]
//! hubget-plugin-api = { version = "1", features = ["testing"] }
//! ```
//!
//! ```no_run
//! use hubget_plugin_api::testing::{BatchBuilder, RecordingProgress, file};
//! use hubget_plugin_api::sdk::BackendPlugin;
//! # fn backend() -> Box<dyn BackendPlugin> { unimplemented!() }
//! use hubget_plugin_api::CancelToken;
//!
//! let work = std::env::temp_dir();
//! // One file of 11 bytes whose first 5 the host already has.
//! let batch = BatchBuilder::new("acme/tiny", &"a".repeat(40), &work)
//!     .item(file("greeting.txt", 11), b"hello")
//!     .build();
//! let progress = RecordingProgress::new();
//! let outcomes = backend().fetch(&batch, &progress.progress(), &CancelToken::new());
//! hubget_plugin_api::testing::assert_one_outcome_per_item(&batch, &outcomes);
//! assert_eq!(progress.bytes(0), 6);
//! assert_eq!(std::fs::read(batch.items[0].partial_path.as_str()).unwrap(), b"hello world");
//! ```
//!
//! [`BackendPlugin`]: crate::sdk::BackendPlugin

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, ROption, RResult, RString, RVec};

use crate::interface::{Progress, ProgressSink, ProgressSink_TO};
use crate::protocol::{FetchOptions, RangeWritten, RetryNote, merge_ranges};
use crate::sdk::BackendPlugin;
use crate::types::{
    CancelToken, EventKind, FetchBatch, FetchItem, FileDone, FileOutcome, ManifestFile,
    PluginError, ProgressEvent, RepoType,
};

/// A progress sink that records every event; clones share the record.
#[derive(Clone, Default)]
pub struct RecordingProgress {
    events: Arc<Mutex<Vec<ProgressEvent>>>,
}

struct Sink(Arc<Mutex<Vec<ProgressEvent>>>);

impl ProgressSink for Sink {
    fn on_event(&self, event: ProgressEvent) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
    }
}

impl RecordingProgress {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle to pass to `fetch` (every event lands in this record).
    pub fn progress(&self) -> Progress {
        ProgressSink_TO::from_ptr(RArc::new(Sink(self.events.clone())), TD_Opaque)
    }

    /// Every event so far, in order.
    pub fn events(&self) -> Vec<ProgressEvent> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Item `index`'s events of one kind, in order.
    pub fn events_of(&self, index: u32, kind: EventKind) -> Vec<ProgressEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.index == index && e.kind == kind)
            .collect()
    }

    /// The kinds of item `index`'s events, in order.
    pub fn kinds(&self, index: u32) -> Vec<EventKind> {
        self.events()
            .into_iter()
            .filter(|e| e.index == index)
            .map(|e| e.kind)
            .collect()
    }

    /// The file bytes item `index` reported written (sum of `BYTES` deltas).
    pub fn bytes(&self, index: u32) -> u64 {
        self.events_of(index, EventKind::BYTES)
            .iter()
            .map(|e| e.bytes)
            .sum()
    }

    /// The network bytes item `index` reported (sum of `BYTES` events' `network_bytes`).
    pub fn network_bytes(&self, index: u32) -> u64 {
        self.events_of(index, EventKind::BYTES)
            .iter()
            .map(|e| e.network_bytes)
            .sum()
    }

    /// Item `index`'s `CHECKPOINT` values, in order.
    pub fn checkpoints(&self, index: u32) -> Vec<u64> {
        self.events_of(index, EventKind::CHECKPOINT)
            .iter()
            .map(|e| e.bytes)
            .collect()
    }

    /// The highest `CHECKPOINT` of item `index`, if any.
    pub fn checkpoint(&self, index: u32) -> Option<u64> {
        self.events_of(index, EventKind::CHECKPOINT)
            .iter()
            .map(|e| e.bytes)
            .max()
    }

    /// The ranges item `index` reported written (`RANGE_WRITTEN`), merged.
    pub fn ranges_written(&self, index: u32) -> Vec<Range<u64>> {
        merge_ranges(
            self.events_of(index, EventKind::RANGE_WRITTEN)
                .iter()
                .filter_map(|e| RangeWritten::parse(&e.message).map(RangeWritten::range))
                .collect(),
        )
    }

    /// The retries item `index` reported, decoded.
    pub fn retries(&self, index: u32) -> Vec<RetryNote> {
        self.events_of(index, EventKind::RETRY)
            .iter()
            .map(|e| RetryNote::parse(&e.message))
            .collect()
    }
}

/// A manifest entry with a path and a size (no hashes: set `git_oid`, `sha256` or `xet_hash`
/// with struct update syntax when the plugin reads them).
pub fn file(path: &str, size: u64) -> ManifestFile {
    ManifestFile {
        path: path.into(),
        size,
        git_oid: RString::new(),
        sha256: ROption::RNone,
        xet_hash: ROption::RNone,
    }
}

/// An item to fetch into `partial`, which already holds the file's first `offset` bytes.
pub fn item(file: &ManifestFile, partial: &Path, offset: u64) -> FetchItem {
    FetchItem {
        file: file.clone(),
        partial_path: partial.display().to_string().into(),
        offset,
    }
}

/// A batch of model `repo_id` at `commit` (revision `main`) holding `items`, without options.
pub fn batch(repo_id: &str, commit: &str, items: Vec<FetchItem>) -> FetchBatch {
    FetchBatch {
        repo_type: RepoType::MODEL,
        repo_id: repo_id.into(),
        commit: commit.into(),
        revision: "main".into(),
        items: RVec::from(items),
        options_json: RString::new(),
    }
}

/// Builds a [`FetchBatch`] the way the host prepares one: each item's partial file exists in a
/// work directory and holds the bytes the host already has.
pub struct BatchBuilder {
    batch: FetchBatch,
    work: PathBuf,
    options: FetchOptions,
}

impl BatchBuilder {
    /// A batch of model `repo_id` at `commit` (revision `main`), with partial files in `work`.
    pub fn new(repo_id: &str, commit: &str, work: &Path) -> Self {
        Self {
            batch: batch(repo_id, commit, Vec::new()),
            work: work.to_path_buf(),
            options: FetchOptions::default(),
        }
    }

    /// The repository type.
    pub fn repo_type(mut self, repo_type: RepoType) -> Self {
        self.batch.repo_type = repo_type;
        self
    }

    /// The revision the user asked for.
    pub fn revision(mut self, revision: &str) -> Self {
        self.batch.revision = revision.into();
        self
    }

    /// Adds an item whose partial file holds `prefix` (so `offset` is its length). The partial
    /// file is `<work>/<index>.partial`, created or replaced.
    pub fn item(mut self, file: ManifestFile, prefix: &[u8]) -> Self {
        let partial = self
            .work
            .join(format!("{}.partial", self.batch.items.len()));
        std::fs::write(&partial, prefix).expect("write the partial file");
        let offset = prefix.len() as u64;
        self.batch.items.push(item(&file, &partial, offset));
        self
    }

    /// Tells the plugin that these ranges of item `index` are already written (as the host does
    /// after `RANGE_WRITTEN` events of an earlier attempt).
    pub fn written_ranges(mut self, index: u32, ranges: Vec<Range<u64>>) -> Self {
        self.options.written_ranges.insert(index, ranges);
        self
    }

    /// The batch.
    pub fn build(mut self) -> FetchBatch {
        self.batch.options_json = self.options.to_json().into();
        self.batch
    }
}

/// `plugin.fetch(batch)` with a progress sink nobody reads and a token nobody cancels.
pub fn fetch_unobserved(plugin: &impl BackendPlugin, batch: &FetchBatch) -> Vec<FileOutcome> {
    plugin.fetch(
        batch,
        &RecordingProgress::new().progress(),
        &CancelToken::new(),
    )
}

/// A token that cancels itself after `delay` (from a helper thread).
pub fn cancel_after(delay: Duration) -> CancelToken {
    let token = CancelToken::new();
    let t = token.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        t.cancel();
    });
    token
}

/// The item's [`FileDone`]; panics with the error when the item failed.
pub fn done(outcome: &FileOutcome) -> &FileDone {
    match &outcome.result {
        RResult::ROk(done) => done,
        RResult::RErr(e) => panic!("item {} failed: {e}", outcome.index),
    }
}

/// The item's error; panics when the item succeeded.
pub fn error(outcome: &FileOutcome) -> &PluginError {
    match &outcome.result {
        RResult::ROk(_) => panic!("item {} succeeded", outcome.index),
        RResult::RErr(e) => e,
    }
}

/// Asserts what the host relies on: exactly one outcome per item, matched by index.
pub fn assert_one_outcome_per_item(batch: &FetchBatch, outcomes: &[FileOutcome]) {
    let mut indices: Vec<u32> = outcomes.iter().map(|o| o.index).collect();
    indices.sort_unstable();
    let want: Vec<u32> = (0..batch.items.len() as u32).collect();
    assert_eq!(indices, want, "one outcome per item, matched by index");
}
