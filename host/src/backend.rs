//! [`BackendHandle`]: a cloneable, async handle to one backend instance of a plugin.
//!
//! Plugin methods block. Every call runs on a **dedicated std thread** (never on a tokio worker
//! and never on `spawn_blocking`, whose pool would wait for stuck threads at shutdown); the
//! result comes back over a oneshot channel. If the caller drops the future (a stall watchdog
//! gave up, Ctrl-C), the thread is left to finish on its own and the process can still exit.
//! If the thread dies, the call fails with a `PANIC` error instead of hanging.
//!
//! An isolated plugin's handle sends the same calls to its helper process instead
//! ([`crate::isolation::client::Helper`]); the engine cannot tell the two apart.
//!
//! [`progress_channel`] builds the [`Progress`] sink a `fetch` needs; the host's sink never
//! panics (a panic there would cross the FFI boundary and end the process).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RStr};
use hubget_plugin_api::{
    BackendBox, CancelToken, Capabilities, ErrorKind, FetchBatch, FileOutcome, Manifest,
    PluginError, Progress, ProgressEvent, ProgressSink, ProgressSink_TO, ResolveRequest,
};
use tokio::sync::{mpsc, oneshot};

use crate::isolation::client::Helper;

struct Inner {
    name: String,
    backend: Imp,
    capabilities: Capabilities,
}

/// Where the backend runs.
enum Imp {
    /// In this process, through the v1 ABI.
    InProcess(Arc<BackendBox>),
    /// In a helper process.
    Isolated(Arc<Helper>),
}

/// A backend instance created by a plugin's `new_backend`. Cheap to clone; all clones share the
/// instance. Calls may run concurrently (the plugin interface requires `Send + Sync`).
#[derive(Clone)]
pub struct BackendHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BackendHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendHandle")
            .field("name", &self.inner.name)
            .field("capabilities", &self.inner.capabilities)
            .finish()
    }
}

impl BackendHandle {
    /// Wraps a backend object; asks it for its capabilities once (cached).
    pub fn new(name: impl Into<String>, backend: BackendBox) -> Self {
        let capabilities = backend.capabilities();
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                backend: Imp::InProcess(Arc::new(backend)),
                capabilities,
            }),
        }
    }

    /// A backend served by an isolated plugin's helper, started with `capabilities`.
    pub fn isolated(
        name: impl Into<String>,
        capabilities: Capabilities,
        helper: Arc<Helper>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name: name.into(),
                backend: Imp::Isolated(helper),
                capabilities,
            }),
        }
    }

    /// The plugin name (`lfs`, `xet`, ...).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The capabilities reported when the backend was created.
    pub fn capabilities(&self) -> &Capabilities {
        &self.inner.capabilities
    }

    /// Resolves a repository revision into a manifest, on a dedicated thread.
    pub async fn resolve(
        &self,
        req: ResolveRequest,
        cancel: CancelToken,
    ) -> Result<Manifest, PluginError> {
        match &self.inner.backend {
            Imp::Isolated(helper) => helper.resolve(req, cancel).await,
            Imp::InProcess(b) => {
                let b = Arc::clone(b);
                self.run("resolve", move || b.resolve(req, cancel).into_result())
                    .await?
            }
        }
    }

    /// Fetches a batch on a dedicated thread. Always returns exactly one outcome per item, in
    /// index order (missing ones become errors, duplicates are dropped).
    pub async fn fetch(
        &self,
        batch: FetchBatch,
        progress: Progress,
        cancel: CancelToken,
    ) -> Vec<FileOutcome> {
        let len = batch.items.len();
        let result = match &self.inner.backend {
            Imp::Isolated(helper) => helper.fetch(batch, progress, cancel).await,
            Imp::InProcess(b) => {
                let b = Arc::clone(b);
                self.run("fetch", move || b.fetch(batch, progress, cancel).into_vec())
                    .await
            }
        };
        let name = self.name();
        match result {
            Ok(outcomes) => hubget_plugin_api::sdk::outcomes_for(
                len,
                outcomes,
                &PluginError::new(
                    ErrorKind::PROTOCOL,
                    format!("backend `{name}` returned no outcome for this file"),
                ),
            ),
            Err(error) => hubget_plugin_api::sdk::outcomes_for(len, Vec::new(), &error),
        }
    }

    /// Calls the extension point `method` with a JSON request, on a dedicated thread.
    pub async fn call(&self, method: &str, json: &str) -> Result<String, PluginError> {
        let b = match &self.inner.backend {
            Imp::Isolated(helper) => return helper.call(method, json).await,
            Imp::InProcess(b) => Arc::clone(b),
        };
        let method_owned = method.to_owned();
        let json = json.to_owned();
        self.run("call", move || {
            b.call(RStr::from_str(&method_owned), RStr::from_str(&json))
                .into_result()
                .map(String::from)
        })
        .await?
    }

    /// Runs `f` on a new thread and waits for its result without blocking the async runtime.
    async fn run<T: Send + 'static>(
        &self,
        method: &'static str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PluginError> {
        let (tx, rx) = oneshot::channel();
        let name = self.name();
        std::thread::Builder::new()
            .name(format!("hubget-{name}-{method}"))
            .spawn(move || {
                // The receiver may be gone (the call was abandoned): nothing to do then.
                let _ = tx.send(f());
            })
            .map_err(|e| {
                PluginError::new(
                    ErrorKind::OTHER,
                    format!("cannot start a thread for backend `{name}`: {e}"),
                )
            })?;
        rx.await.map_err(|_| {
            PluginError::new(
                ErrorKind::PANIC,
                format!("backend `{name}`: the thread running {method} died"),
            )
        })
    }
}

/// The host's [`ProgressSink`]: forwards events into an unbounded channel. Never panics and
/// never blocks; events sent after the receiver is gone are dropped.
#[derive(Debug)]
pub struct ChannelSink {
    tx: mpsc::UnboundedSender<ProgressEvent>,
}

impl ProgressSink for ChannelSink {
    fn on_event(&self, event: ProgressEvent) {
        // A panic here would cross the FFI boundary and abort the process: contain everything.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let _ = self.tx.send(event);
        }));
    }
}

/// A [`ProgressSink`] that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullSink;

impl ProgressSink for NullSink {
    fn on_event(&self, _event: ProgressEvent) {}
}

/// Wraps a host sink into the [`Progress`] object a `fetch` takes. The sink must not panic.
pub fn progress_from<S: ProgressSink + 'static>(sink: S) -> Progress {
    ProgressSink_TO::from_ptr(RArc::new(sink), TD_Opaque)
}

/// A [`Progress`] that forwards events to the returned receiver.
pub fn progress_channel() -> (Progress, mpsc::UnboundedReceiver<ProgressEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (progress_from(ChannelSink { tx }), rx)
}

/// A [`Progress`] that ignores events.
pub fn null_progress() -> Progress {
    progress_from(NullSink)
}

/// Another handle to the same sink (`Progress` has no `Clone`; this bumps the refcount).
pub fn clone_progress(progress: &Progress) -> Progress {
    ProgressSink_TO::from_sabi(progress.obj.shallow_clone())
}

/// Converts an abi_stable result into a std one (for callers holding raw `RResult`s).
pub fn into_result<T, E>(r: RResult<T, E>) -> Result<T, E> {
    r.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::{RString, RVec};
    use hubget_plugin_api::{Backend, Backend_TO, Features, FileDone, RepoType};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// An in-process backend for unit tests.
    struct Fake {
        active: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl Backend for Fake {
        fn capabilities(&self) -> Capabilities {
            Capabilities::new(&[RepoType::MODEL], Features::RESOLVE)
        }
        fn resolve(
            &self,
            request: ResolveRequest,
            cancel: CancelToken,
        ) -> RResult<Manifest, PluginError> {
            if request.repo_id.as_str() == "hang" {
                // Ignores cancellation on purpose for a while.
                std::thread::sleep(Duration::from_secs(5));
            }
            if cancel.is_cancelled() {
                return RResult::RErr(PluginError::cancelled());
            }
            RResult::ROk(Manifest::new("0".repeat(40), Vec::new()))
        }
        fn fetch(
            &self,
            batch: FetchBatch,
            progress: Progress,
            _cancel: CancelToken,
        ) -> RVec<FileOutcome> {
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(200));
            self.active.fetch_sub(1, Ordering::SeqCst);
            progress.on_event(ProgressEvent::bytes(0, 1, 1));
            // Only the first item gets an outcome, twice: the handle must fix that up.
            let ok = || FileOutcome {
                index: 0,
                result: RResult::ROk(FileDone::default()),
            };
            let _ = batch;
            RVec::from(vec![ok(), ok()])
        }
        fn call(&self, method: RStr<'_>, json: RStr<'_>) -> RResult<RString, PluginError> {
            RResult::ROk(RString::from(format!("{}:{}", method, json)))
        }
    }

    fn handle() -> (BackendHandle, Arc<AtomicUsize>) {
        let peak = Arc::new(AtomicUsize::new(0));
        let fake = Fake {
            active: Arc::new(AtomicUsize::new(0)),
            peak: Arc::clone(&peak),
        };
        (
            BackendHandle::new("fake", Backend_TO::from_value(fake, TD_Opaque)),
            peak,
        )
    }

    fn batch(n: usize) -> FetchBatch {
        let item = hubget_plugin_api::FetchItem {
            file: hubget_plugin_api::ManifestFile {
                path: "a".into(),
                size: 1,
                git_oid: "x".into(),
                sha256: abi_stable::std_types::ROption::RNone,
                xet_hash: abi_stable::std_types::ROption::RNone,
            },
            partial_path: "/nonexistent".into(),
            offset: 0,
        };
        FetchBatch {
            repo_type: RepoType::MODEL,
            repo_id: "o/n".into(),
            commit: "0".repeat(40).into(),
            revision: "main".into(),
            items: (0..n).map(|_| item.clone()).collect(),
            options_json: RString::new(),
        }
    }

    #[tokio::test]
    async fn fetch_outcomes_are_normalised_and_calls_run_concurrently() {
        let (h, peak) = handle();
        let (progress, mut rx) = progress_channel();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let h = h.clone();
            let p = clone_progress(&progress);
            tasks.push(tokio::spawn(async move {
                h.fetch(batch(3), p, CancelToken::new()).await
            }));
        }
        for t in tasks {
            let outcomes = t.await.unwrap();
            assert_eq!(outcomes.len(), 3);
            assert!(outcomes[0].result.is_ok());
            assert!(outcomes[1].result.is_err() && outcomes[2].result.is_err());
        }
        assert_eq!(
            peak.load(Ordering::SeqCst),
            4,
            "4 calls were in flight at once"
        );
        let mut events = 0;
        while rx.try_recv().is_ok() {
            events += 1;
        }
        assert_eq!(events, 4);
        assert_eq!(h.call("m", "{}").await.unwrap(), "m:{}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_call_that_ignores_cancel_can_be_abandoned() {
        let (h, _) = handle();
        let req = ResolveRequest {
            repo_type: RepoType::MODEL,
            repo_id: "hang".into(),
            revision: "main".into(),
            options_json: RString::new(),
        };
        let started = Instant::now();
        let timed_out = tokio::time::timeout(
            Duration::from_millis(100),
            h.resolve(req, CancelToken::new()),
        )
        .await;
        assert!(timed_out.is_err());
        // Even on a single-threaded runtime, the stuck call did not block us.
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
