//! What the user sees: progress bars on stderr ([`bars`]), NDJSON events on stdout with `--json`
//! ([`json`]), and the final path line. The engine reports [`Event`]s to a [`Reporter`]; an
//! [`Output`] fans them out to whichever sinks are on.
//!
//! JSON events (one object per line, every one with `"schema": 1` and `"event"`):
//! `plan`, `file_start`, `progress` (at most ~4/s per file), `backend_retry` (at most ~1/s per
//! file), `rate_limited` (a wait for a server's rate-limit window), `retry`, `fallback`, `file_done`, `warning`, `error`, `done`. See [`Event`] for the
//! fields.

pub mod bars;
pub mod json;
pub mod retry_label;

/// `name` with control characters (C0, DEL, C1: terminal escape sequences, line breaks) shown as
/// `\u{..}` escapes: a name from a server never reaches the terminal raw.
pub fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub use bars::LogWriter;

use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

/// The version of the JSON event schema.
pub const SCHEMA_VERSION: u32 = 1;

/// One planned file, as shown in the `plan` event and `--dry-run`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlanFile {
    /// Repo path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `complete`, `linkable`, `shared_store`, `partial` or `missing`.
    pub status: &'static str,
    /// Bytes still to fetch.
    pub remaining: u64,
    /// Whether the file is Xet-backed.
    pub xet: bool,
    /// The backend that would be tried first (`cache` offline; null when none can serve it).
    pub backend: Option<String>,
}

/// A structured error inside events.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorInfo {
    /// Kind name (`network`, `integrity`, `not-found`, ...).
    pub kind: String,
    /// One line, redacted.
    pub message: String,
}

/// Everything the engine and the download command report.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The plan, before any transfer (also the whole output of `--dry-run`).
    Plan {
        /// `owner/name`.
        repo_id: String,
        /// `model`, `dataset`, `space`.
        repo_type: String,
        /// The revision asked for.
        revision: String,
        /// The commit it resolved to.
        commit: String,
        /// Which backend resolved it (`cache` when offline).
        resolved_by: String,
        /// Backends in the order they will be tried.
        backends: Vec<String>,
        /// Selected files.
        files: Vec<PlanFile>,
        /// Sum of sizes.
        total_bytes: u64,
        /// Bytes still to fetch.
        remaining_bytes: u64,
        /// Bytes of the files the cache's shared blob store should provide (not downloaded).
        shared_store_bytes: u64,
        /// Whether this is a dry run.
        dry_run: bool,
    },
    /// A backend starts on a file.
    FileStart {
        /// Repo path.
        path: String,
        /// Backend.
        backend: String,
        /// Size in bytes.
        size: u64,
        /// Resume offset.
        offset: u64,
    },
    /// Bytes of a file are on disk.
    Progress {
        /// Repo path.
        path: String,
        /// Backend.
        backend: String,
        /// Bytes on disk (resumed prefix included).
        bytes: u64,
        /// Size in bytes.
        total: u64,
    },
    /// A backend retries a request inside its call; the file's download goes on (its bytes so
    /// far stand), unlike [`Event::Retry`], which ends an attempt.
    BackendRetry {
        /// Repo path.
        path: String,
        /// Backend.
        backend: String,
        /// The backend's attempt about to run (2 for its first retry); null if it did not say.
        attempt: Option<u32>,
        /// The backend's attempt limit; null if it did not say.
        max_attempts: Option<u32>,
        /// The backend's wait before that attempt; null if it did not say.
        delay_ms: Option<u64>,
        /// The backend's message, redacted.
        message: String,
    },
    /// A backend waits for a server's rate-limit window to reset; the download goes on after
    /// it (a wait, never a failure, up to `--max-rate-limit-wait`).
    RateLimited {
        /// Repo path.
        path: String,
        /// Backend.
        backend: String,
        /// `scheme://host[:port]` of the server.
        origin: String,
        /// The quota's bucket (`api`, `resolvers`, ...).
        bucket: String,
        /// Requests left in the window.
        remaining: u64,
        /// The window's quota, when the server announced it.
        quota: Option<u64>,
        /// Milliseconds until the window resets (the wait).
        reset_in_ms: u64,
    },
    /// A failed attempt will be repeated on the same backend.
    Retry {
        /// Repo path.
        path: String,
        /// Backend.
        backend: String,
        /// Attempts so far.
        attempt: u32,
        /// Wait before the next attempt.
        delay_ms: u64,
        /// Why.
        error: ErrorInfo,
    },
    /// A file moves to the next backend.
    Fallback {
        /// Repo path.
        path: String,
        /// The backend that failed.
        from: String,
        /// The next backend, or null when none is left.
        to: Option<String>,
        /// Why.
        error: ErrorInfo,
    },
    /// A file is verified and in place.
    FileDone {
        /// Repo path.
        path: String,
        /// Backend that served it (`cache` when it was already there).
        backend: String,
        /// Where the bytes came from, as the backend said.
        source: String,
        /// File size.
        bytes: u64,
        /// Network bytes for this run.
        bytes_transferred: u64,
        /// sha256 of the content (empty when the file was already complete and not re-hashed).
        sha256: String,
        /// Seconds from start to verified.
        secs: f64,
        /// Final local path.
        local_path: String,
        /// The shared blob store entry the file was taken from (nothing downloaded), or null.
        reused_from: Option<String>,
        /// File bytes the backend took from chunks already on disk instead of the network.
        bytes_local: u64,
    },
    /// Something the user should know that is not an error.
    Warning {
        /// One line.
        message: String,
    },
    /// A file (or the whole command, with `path` null) failed.
    Error {
        /// Repo path, or null.
        path: Option<String>,
        /// Kind name.
        kind: String,
        /// One line, redacted.
        message: String,
        /// A hint, if any.
        hint: Option<String>,
    },
    /// The end; the last event.
    Done {
        /// The process exit code.
        exit_code: u8,
        /// Files in place.
        files_done: usize,
        /// Files that failed.
        files_failed: usize,
        /// Bytes of the files in place.
        bytes: u64,
        /// Network bytes of this run.
        bytes_transferred: u64,
        /// Files taken from the shared blob store instead of downloaded.
        files_reused: usize,
        /// Their bytes: what the shared blob store saved.
        bytes_reused: u64,
        /// Bytes taken from chunks already on disk (chunk reuse) instead of the network.
        bytes_local: u64,
        /// Wall time.
        secs: f64,
        /// The result path (also the last line of non-JSON output), if any.
        path: Option<String>,
    },
}

/// Receives events. Must be cheap and never block for long.
pub trait Reporter: Send + Sync {
    /// Records one event.
    fn emit(&self, event: Event);
}

/// A reporter that drops everything.
#[derive(Debug, Default)]
pub struct NullReporter;

impl Reporter for NullReporter {
    fn emit(&self, _event: Event) {}
}

/// A reporter that keeps every event (tests).
#[derive(Debug, Default)]
pub struct Collect(pub Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn emit(&self, event: Event) {
        self.0.lock().expect("collect").push(event);
    }
}

impl Collect {
    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().expect("collect").clone()
    }
}

/// The user-facing output: JSON on stdout and/or progress bars on stderr.
pub struct Output {
    json: Option<json::JsonWriter>,
    bars: Option<bars::Bars>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("json", &self.json.is_some())
            .field("bars", &self.bars.is_some())
            .finish()
    }
}

impl Output {
    /// JSON events when `json`; bars when `bars` (the caller checks TTY and `--quiet`).
    pub fn new(json: bool, bars: bool) -> Self {
        Self {
            json: json.then(json::JsonWriter::stdout),
            bars: bars.then(bars::Bars::new),
        }
    }

    /// Prints the final path as the last line of stdout (not in JSON mode).
    pub fn print_path(&self, path: &std::path::Path) {
        if self.json.is_none() {
            if let Some(b) = &self.bars {
                b.clear();
            }
            // Not `println!`: a closed stdout (`| head -0`) must not panic.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", path.display());
            let _ = out.flush();
        }
    }

    /// A line for the person at the terminal, on stderr (above the bars when they are shown):
    /// what hubget is doing about something they did, such as Ctrl-C.
    pub fn notice(&self, text: &str) {
        match &self.bars {
            Some(b) => b.println(text),
            None => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
                let _ = err.flush();
            }
        }
    }

    /// Whether JSON output is on.
    pub fn is_json(&self) -> bool {
        self.json.is_some()
    }

    /// Removes the bars (before printing errors).
    pub fn clear(&self) {
        if let Some(b) = &self.bars {
            b.clear();
        }
    }
}

impl Reporter for Output {
    fn emit(&self, event: Event) {
        if let Some(b) = &self.bars {
            b.on_event(&event);
        }
        if let Some(j) = &self.json {
            j.write(&event);
        }
    }
}
