//! Test plugin `faulty`: a backend whose behaviour comes entirely from its `[plugins.faulty]`
//! table, for testing how the host copes with misbehaving plugins. Never shipped: the library is
//! `libtest_plugin_faulty.so`, and tests copy it into a temp plugin dir as
//! `libhubget_faulty.so`.
//!
//! Keys (all optional; unknown keys are rejected, which tests the CONFIG error path):
//!
//! | key | effect |
//! |---|---|
//! | `panic_in = "new_backend" \| "resolve" \| "fetch" \| "call"` | panics there (the SDK turns it into a `PANIC` error) |
//! | `hang_in_new_backend_ms = N` | `new_backend` sleeps N ms (a plugin that hangs while starting) |
//! | `log = "text"` | logs `text` at info in `new_backend` and at warn in every `fetch` (tests the log bridge) |
//! | `sleep_ms = N` | `fetch` sleeps N ms per item before writing, checking the cancel token every 10 ms |
//! | `ignore_cancel = true` | with `sleep_ms`: does not check the cancel token (an abandoned call) |
//! | `features = ["resolve", "resume", ...]` | the capability feature names (see `Features::names`); default `["resolve", "resume", "non-xet-files"]` |
//! | `repo_types = ["model", ...]` | served repo types; default all three |
//! | `commit = "<40 hex>"` | the commit `resolve` answers; default `"f" * 40` |
//! | `[plugins.faulty.files]` `"path" = "content"` | the files `resolve` lists (size and git blob sha1 of the content, no sha256: "regular" files) and `fetch` writes |
//! | `fail_fetch = "kind"` | every fetched item fails with this error kind name (`network`, `not-found`, ...) |
//! | `barrier = N` | each `fetch` waits (up to 10 s) until N `fetch` calls have been in flight at once (per loaded copy of the library), else fails with `TIMEOUT` (proves concurrency without timing) |
//!
//! | `crash_in_fetch = "segfault" \| "abort" \| "stack_overflow" \| "alloc"` | `fetch` writes the first `crash_after` items (default 0), then dies that way (`alloc`: allocates and touches memory without bound); isolation tests only: in process it takes hubget down |
//! | `max_batch_files = N` | the capability of that name (files per `fetch` call) |
//! | `crash_after = N` | with `crash_in_fetch`: how many items of the batch are written first |
//! | `try_read = "path"`, `try_write = "path"` | `new_backend` tries to read / create the file and logs the outcome at warn (`faulty: read <path>: allowed` or `refused (<error>)`) — what the sandbox lets it do |
//!
//! `call("echo", json)` answers `json`. The engine's tests may add keys (stall, corruption);
//! keep each key independent and document it here.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hubget_plugin_api::sdk::{BackendPlugin, parse_config};
use hubget_plugin_api::std_types::RString;
use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, Features, FetchBatch, FileDone, FileOutcome,
    HostSettings, Manifest, ManifestFile, PluginError, Progress, ProgressEvent, RepoType,
    ResolveRequest,
};
use serde::Deserialize;

/// The `[plugins.faulty]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    panic_in: Option<String>,
    /// `new_backend` sleeps this long (a plugin that deadlocks while starting).
    #[serde(default)]
    hang_in_new_backend_ms: u64,
    log: Option<String>,
    #[serde(default)]
    sleep_ms: u64,
    #[serde(default)]
    ignore_cancel: bool,
    features: Option<Vec<String>>,
    repo_types: Option<Vec<String>>,
    commit: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    fail_fetch: Option<String>,
    barrier: Option<usize>,
    crash_in_fetch: Option<String>,
    max_batch_files: Option<u32>,
    #[serde(default)]
    crash_after: usize,
    try_read: Option<String>,
    try_write: Option<String>,
}

/// `fetch` calls in flight (per loaded copy of the library).
static IN_FETCH: AtomicUsize = AtomicUsize::new(0);
/// The most `fetch` calls ever in flight at once.
static PEAK_IN_FETCH: AtomicUsize = AtomicUsize::new(0);

/// Counts a `fetch` call in flight while alive.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        let now = IN_FETCH.fetch_add(1, Ordering::SeqCst) + 1;
        PEAK_IN_FETCH.fetch_max(now, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FETCH.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The faulty backend.
struct Faulty {
    config: Config,
}

/// The git blob id of `content`: sha1 of `blob <len>\0<content>`.
fn git_blob_sha1(content: &[u8]) -> String {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", content.len()).as_bytes());
    hasher.update(content);
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn kind_named(name: &str) -> ErrorKind {
    (0..64)
        .map(ErrorKind)
        .find(|k| k.name() == name)
        .unwrap_or(ErrorKind::OTHER)
}

impl Faulty {
    fn panics_in(&self, method: &str) -> bool {
        self.config.panic_in.as_deref() == Some(method)
    }

    /// Sleeps `sleep_ms`, returning `Err(CANCELLED)` if the token is set meanwhile.
    fn sleep(&self, cancel: &CancelToken) -> Result<(), PluginError> {
        let until = Instant::now() + Duration::from_millis(self.config.sleep_ms);
        while Instant::now() < until {
            if !self.config.ignore_cancel {
                cancel.check()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn fetch_one(
        &self,
        index: u32,
        item: &hubget_plugin_api::FetchItem,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Result<FileDone, PluginError> {
        progress.on_event(ProgressEvent::message(
            index,
            hubget_plugin_api::EventKind::STARTED,
            "",
        ));
        self.sleep(cancel)?;
        if let Some(kind) = &self.config.fail_fetch {
            return Err(PluginError::new(
                kind_named(kind),
                format!("faulty: configured failure for {}", item.file.path),
            ));
        }
        let content = self
            .config
            .files
            .get(item.file.path.as_str())
            .ok_or_else(|| {
                PluginError::new(
                    ErrorKind::NOT_FOUND,
                    format!("faulty: no file {}", item.file.path),
                )
            })?;
        let bytes = content.as_bytes();
        let offset = (item.offset as usize).min(bytes.len());
        let io = |e: std::io::Error| {
            PluginError::new(
                ErrorKind::IO,
                format!("faulty: writing {}: {e}", item.partial_path),
            )
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(item.partial_path.as_str())
            .map_err(io)?;
        file.seek(SeekFrom::Start(offset as u64)).map_err(io)?;
        file.write_all(&bytes[offset..]).map_err(io)?;
        let written = (bytes.len() - offset) as u64;
        progress.on_event(ProgressEvent::bytes(index, written, written));
        Ok(FileDone::new(written, "faulty"))
    }
}

impl BackendPlugin for Faulty {
    fn capabilities(&self) -> Capabilities {
        let features = match &self.config.features {
            Some(names) => names
                .iter()
                .filter_map(|n| {
                    (0..64)
                        .map(|b| Features(1 << b))
                        .find(|f| f.names() == [n.as_str()])
                })
                .fold(Features::empty(), Features::with),
            None => Features::RESOLVE | Features::RESUME | Features::NON_XET_FILES,
        };
        let repo_types = match &self.config.repo_types {
            Some(names) => names.iter().filter_map(|n| RepoType::parse(n)).collect(),
            None => vec![RepoType::MODEL, RepoType::DATASET, RepoType::SPACE],
        };
        let caps = Capabilities::new(&repo_types, features);
        match self.config.max_batch_files {
            Some(n) => caps.with_max_batch_files(n),
            None => caps,
        }
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        if self.panics_in("resolve") {
            panic!("faulty: deliberate panic in resolve of {}", request.repo_id);
        }
        cancel.check()?;
        let commit = self.config.commit.clone().unwrap_or_else(|| "f".repeat(40));
        let files = self
            .config
            .files
            .iter()
            .map(|(path, content)| ManifestFile {
                path: path.as_str().into(),
                size: content.len() as u64,
                git_oid: RString::from(git_blob_sha1(content.as_bytes())),
                sha256: hubget_plugin_api::std_types::ROption::RNone,
                xet_hash: hubget_plugin_api::std_types::ROption::RNone,
            });
        Ok(Manifest::new(commit, files.collect()))
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        if let Some(text) = &self.config.log {
            log::warn!("fetch: {text}");
        }
        if self.panics_in("fetch") {
            panic!(
                "faulty: deliberate panic in fetch ({} items)",
                batch.items.len()
            );
        }
        let _in_flight = InFlight::enter();
        if let Some(n) = self.config.barrier {
            let deadline = Instant::now() + Duration::from_secs(10);
            // Every caller stays in flight until the peak reaches n, so reaching it means n
            // calls overlapped.
            while PEAK_IN_FETCH.load(Ordering::SeqCst) < n {
                if Instant::now() > deadline {
                    let error = PluginError::new(
                        ErrorKind::TIMEOUT,
                        format!(
                            "faulty: at most {} of {n} fetch calls were in flight at once",
                            PEAK_IN_FETCH.load(Ordering::SeqCst)
                        ),
                    );
                    return hubget_plugin_api::sdk::outcomes_for(
                        batch.items.len(),
                        Vec::new(),
                        &error,
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if let Some(how) = &self.config.crash_in_fetch {
            for (i, item) in batch.items.iter().enumerate().take(self.config.crash_after) {
                let _ = self.fetch_one(i as u32, item, progress, cancel);
            }
            crash(how);
        }
        hubget_plugin_api::sdk::fetch_each(batch, |i, item| {
            self.fetch_one(i, item, progress, cancel)
        })
    }

    fn call(&self, method: &str, request_json: &str) -> Result<String, PluginError> {
        if self.panics_in("call") {
            panic!("faulty: deliberate panic in call({method})");
        }
        match method {
            "echo" => Ok(request_json.to_owned()),
            other => Err(PluginError::unsupported(format!(
                "unknown method `{other}`"
            ))),
        }
    }
}

/// Dies the way `how` says.
fn crash(how: &str) -> ! {
    match how {
        "segfault" => {
            // SAFETY: none; a deliberate invalid write (the test wants SIGSEGV).
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            unreachable!("the write above faults")
        }
        "stack_overflow" => {
            fn deeper(n: u64) -> u64 {
                let pad = std::hint::black_box([n; 512]);
                // Never false at run time; the compiler cannot know that.
                if std::hint::black_box(n) == u64::MAX {
                    return pad[0];
                }
                pad[0] + deeper(n + 1) + pad[511]
            }
            let n = deeper(0);
            panic!("no overflow after {n}")
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 64 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        _ => std::process::abort(),
    }
}

/// Tries to read or write `path`; logs what happened.
fn probe(what: &str, path: &str) {
    let result = match what {
        "read" => std::fs::read(path).map(drop),
        _ => std::fs::write(path, b"written by the faulty plugin"),
    };
    match result {
        Ok(()) => log::warn!("faulty: {what} {path}: allowed"),
        Err(e) => log::warn!("faulty: {what} {path}: refused ({e})"),
    }
}

fn new(_settings: HostSettings, config: &str) -> Result<Faulty, PluginError> {
    let config: Config = parse_config("faulty", config)?;
    if let Some(path) = &config.try_read {
        probe("read", path);
    }
    if let Some(path) = &config.try_write {
        probe("write", path);
    }
    if let Some(text) = &config.log {
        log::info!("new_backend: {text}");
    }
    if config.panic_in.as_deref() == Some("new_backend") {
        panic!("faulty: deliberate panic in new_backend");
    }
    if config.hang_in_new_backend_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(
            config.hang_in_new_backend_ms,
        ));
    }
    Ok(Faulty { config })
}

hubget_plugin_api::export_plugin! {
    name: "faulty",
    description: "test-only backend that misbehaves on request",
    constructor: new,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_ids_match_git() {
        // `printf hello | git hash-object --stdin`
        assert_eq!(
            git_blob_sha1(b"hello"),
            "b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"
        );
    }

    #[test]
    fn unknown_keys_are_config_errors() {
        let err = new(HostSettings::default(), "bogus = 1\n")
            .err()
            .expect("error");
        assert_eq!(err.kind, ErrorKind::CONFIG);
        assert!(err.message.contains("[plugins.faulty]") && err.message.contains("bogus"));
    }
}
