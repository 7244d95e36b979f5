//! Engine tests with in-process fake backends (no plugin, no network).

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use abi_stable::std_types::ROption;
use hubget_plugin_api::{
    Capabilities, EventKind, FetchBatch, FileDone, FileOutcome, Manifest, Progress, ProgressEvent,
    RepoType, ResolveRequest,
};

use super::*;
use crate::output::Collect;
use crate::plan::{PlanRequest, build_plan};
use crate::resume::ResumeState;
use crate::transport::BoxFuture;
use crate::verify::{git_blob_sha1, sha256_hex};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Serve,
    Flip,
    Truncate,
    Fail(ErrorKind, u64),
    /// Never returns, ignores cancellation.
    Hang,
    /// Writes nothing until cancelled, then returns CANCELLED.
    StallPolite,
    /// Writes a quarter of the file from the offset, checkpoints it, then fails (network).
    Quarter,
    /// Writes the last quarter of the file (out of order), reports it with `RANGE_WRITTEN`,
    /// then fails (network).
    TailRange,
    /// Reports `retries` backend retries ("retrying in `wait_ms` ms", with the token and a
    /// signed URL in the message), waits that long after each without writing, then serves.
    RetryThenServe {
        retries: u32,
        wait_ms: u64,
    },
    /// Fails a request every 50 ms and reports "retrying in 10 ms", never writing, until
    /// cancelled.
    RetryForever,
    /// Panics inside the call's future (a bug in a transport, not a plugin panic).
    Panic,
    /// Writes 16 bytes from the offset, checkpoints them, then fails (network): a server that
    /// keeps a download "making progress" a few bytes at a time.
    Trickle,
    /// Reports network bytes and never a file byte until cancelled: a server that streams
    /// bytes that never complete anything (a chunk that never ends).
    WireOnly,
}

/// The token the engine is told to redact (in backend messages of these tests).
const TOKEN: &str = "hf_test_token_0123456789";

fn retry_message(attempt: u32, max: u32, wait_ms: u64) -> String {
    format!(
        "GET http://cdn.test/lfs/ab12?X-Amz-Signature=s3cr3t: 503 Service Unavailable ({TOKEN}); retrying in {wait_ms} ms (attempt {attempt}/{max})"
    )
}

struct Fake {
    name: String,
    caps: Capabilities,
    content: HashMap<String, Vec<u8>>,
    mode: StdMutex<HashMap<String, Vec<Mode>>>,
    default: Mode,
    calls: AtomicUsize,
    batches: StdMutex<Vec<usize>>,
    offsets: StdMutex<Vec<(String, u64)>>,
    /// `options_json` of every call.
    options: StdMutex<Vec<String>>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// Each call sleeps this long before working (to make calls overlap).
    delay: StdMutex<Duration>,
    /// What `resolve` answers: `None` refuses (unsupported), `Some(None)` hangs, ignoring
    /// cancellation.
    resolves: Option<Option<Manifest>>,
}

impl Fake {
    fn new(name: &str, content: &HashMap<String, Vec<u8>>, default: Mode) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            caps: Capabilities::new(
                &[RepoType::MODEL],
                Features::NON_XET_FILES | Features::RESUME,
            ),
            content: content.clone(),
            mode: StdMutex::new(HashMap::new()),
            default,
            calls: AtomicUsize::new(0),
            batches: StdMutex::new(Vec::new()),
            offsets: StdMutex::new(Vec::new()),
            options: StdMutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            delay: StdMutex::new(Duration::ZERO),
            resolves: None,
        })
    }

    /// A backend that resolves to `answer`, or hangs in resolve when there is none.
    fn resolver(name: &str, answer: Option<Manifest>) -> Arc<Self> {
        let mut fake = Arc::into_inner(Self::new(name, &HashMap::new(), Mode::Serve)).unwrap();
        fake.caps.features = Features::RESOLVE;
        fake.resolves = Some(answer);
        Arc::new(fake)
    }

    /// Modes for the next calls on `path` (then the default).
    fn script(&self, path: &str, modes: Vec<Mode>) {
        self.mode.lock().unwrap().insert(path.into(), modes);
    }

    fn next_mode(&self, path: &str) -> Mode {
        let mut m = self.mode.lock().unwrap();
        match m.get_mut(path) {
            Some(v) if !v.is_empty() => v.remove(0),
            _ => self.default,
        }
    }
}

impl Transport for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn resolve(
        &self,
        _req: ResolveRequest,
        _cancel: CancelToken,
    ) -> BoxFuture<'_, Result<Manifest, PluginError>> {
        Box::pin(async move {
            match &self.resolves {
                None => Err(PluginError::unsupported("no")),
                Some(Some(m)) => Ok(m.clone()),
                Some(None) => std::future::pending().await,
            }
        })
    }
    fn fetch(
        &self,
        batch: FetchBatch,
        progress: Progress,
        cancel: CancelToken,
    ) -> BoxFuture<'_, Vec<FileOutcome>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.batches.lock().unwrap().push(batch.items.len());
            self.options
                .lock()
                .unwrap()
                .push(batch.options_json.to_string());
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            let delay = *self.delay.lock().unwrap();
            tokio::time::sleep(delay).await;
            let mut out = Vec::new();
            for (i, item) in batch.items.iter().enumerate() {
                let path = item.file.path.to_string();
                self.offsets
                    .lock()
                    .unwrap()
                    .push((path.clone(), item.offset));
                let mode = self.next_mode(&path);
                if let Mode::RetryThenServe { retries, wait_ms } = mode {
                    for k in 0..retries {
                        progress.on_event(ProgressEvent::message(
                            i as u32,
                            EventKind::RETRY,
                            retry_message(k + 2, retries + 1, wait_ms),
                        ));
                        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    }
                }
                let result = match mode {
                    Mode::Hang => std::future::pending().await,
                    Mode::Panic => panic!("a transport bug"),
                    Mode::RetryForever => {
                        while !cancel.is_cancelled() {
                            tokio::time::sleep(Duration::from_millis(40)).await;
                            progress.on_event(ProgressEvent::message(
                                i as u32,
                                EventKind::RETRY,
                                retry_message(2, 5, 10),
                            ));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(PluginError::cancelled())
                    }
                    Mode::StallPolite => {
                        while !cancel.is_cancelled() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(PluginError::cancelled())
                    }
                    Mode::WireOnly => {
                        while !cancel.is_cancelled() {
                            progress.on_event(ProgressEvent::bytes(i as u32, 0, 100));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(PluginError::cancelled())
                    }
                    Mode::Quarter | Mode::Trickle => {
                        let data = &self.content[&path];
                        let start = item.offset as usize;
                        let step = if mode == Mode::Trickle {
                            16
                        } else {
                            data.len() / 4
                        };
                        let end = (start + step).min(data.len());
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(item.partial_path.as_str())
                            .unwrap();
                        f.seek(SeekFrom::Start(item.offset)).unwrap();
                        f.write_all(&data[start..end]).unwrap();
                        let n = (end - start) as u64;
                        progress.on_event(ProgressEvent::bytes(i as u32, n, n));
                        progress.on_event(ProgressEvent::checkpoint(i as u32, end as u64));
                        // Let the engine persist the checkpoint before failing.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        Err(PluginError::new(ErrorKind::NETWORK, "connection reset"))
                    }
                    Mode::TailRange => {
                        let data = &self.content[&path];
                        let start = data.len() - data.len() / 4;
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(item.partial_path.as_str())
                            .unwrap();
                        std::os::unix::fs::FileExt::write_all_at(&f, &data[start..], start as u64)
                            .unwrap();
                        let n = (data.len() - start) as u64;
                        progress.on_event(ProgressEvent::bytes(i as u32, n, n));
                        progress.on_event(ProgressEvent::range_written(
                            i as u32,
                            start as u64,
                            data.len() as u64,
                        ));
                        // Let the engine persist the range before failing.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        Err(PluginError::new(ErrorKind::NETWORK, "connection reset"))
                    }
                    Mode::Fail(kind, retry_after) => {
                        Err(PluginError::new(kind, format!("scripted {kind}"))
                            .with_retry_after_ms(retry_after))
                    }
                    Mode::Serve | Mode::Flip | Mode::Truncate | Mode::RetryThenServe { .. } => {
                        let mut data = self.content[&path].clone();
                        if mode == Mode::Flip {
                            let mid = data.len() / 2;
                            data[mid] ^= 0x40;
                        }
                        if mode == Mode::Truncate {
                            data.truncate(data.len() / 2);
                        }
                        let mut f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(item.partial_path.as_str())
                            .unwrap();
                        f.seek(SeekFrom::Start(item.offset)).unwrap();
                        let rest = &data[(item.offset as usize).min(data.len())..];
                        for chunk in rest.chunks(64 * 1024) {
                            f.write_all(chunk).unwrap();
                            progress.on_event(ProgressEvent::bytes(
                                i as u32,
                                chunk.len() as u64,
                                chunk.len() as u64,
                            ));
                        }
                        progress.on_event(ProgressEvent::checkpoint(i as u32, data.len() as u64));
                        let source = format!("fake://{}", self.name);
                        Ok(FileDone::new(rest.len() as u64, source))
                    }
                };
                out.push(FileOutcome {
                    index: i as u32,
                    result: result.into(),
                });
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            out
        })
    }
}

fn content() -> HashMap<String, Vec<u8>> {
    let mut m = HashMap::new();
    m.insert("config.json".to_owned(), b"{\"a\": 1}\n".to_vec());
    m.insert(
        "sub/deep/w.bin".to_owned(),
        (0..300_000u32).map(|i| (i % 253) as u8).collect(),
    );
    m.insert(
        "big.bin".to_owned(),
        (0..2_000_000u32).map(|i| (i * 31 % 251) as u8).collect(),
    );
    m
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn manifest(content: &HashMap<String, Vec<u8>>) -> Manifest {
    let mut files: Vec<ManifestFile> = content
        .iter()
        .map(|(p, d)| {
            let lfs = p.ends_with(".bin");
            ManifestFile {
                path: p.as_str().into(),
                size: d.len() as u64,
                git_oid: git_blob_sha1(if lfs { b"pointer" } else { d })
                    .as_str()
                    .into(),
                sha256: if lfs {
                    ROption::RSome(sha256_hex(d).into())
                } else {
                    ROption::RNone
                },
                xet_hash: ROption::RNone,
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Manifest::new(COMMIT, files)
}

fn opts() -> EngineOptions {
    EngineOptions {
        stall_timeout: Duration::from_millis(600),
        cancel_grace: Duration::from_millis(300),
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        ..EngineOptions::default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    target: Target,
    plan: Plan,
    content: HashMap<String, Vec<u8>>,
}

fn setup(files: &[&str]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::cache(dir.path(), RepoType::MODEL, "acme/tiny");
    let content = content();
    let req = PlanRequest {
        repo_id: "acme/tiny".into(),
        files: files.iter().map(|s| s.to_string()).collect(),
        ..PlanRequest::default()
    };
    let plan = build_plan(manifest(&content), "fake", &req, &target).unwrap();
    Setup {
        _dir: dir,
        target,
        plan,
        content,
    }
}

async fn go(
    s: &Setup,
    backends: Vec<Arc<dyn Transport>>,
    o: &EngineOptions,
) -> (Summary, Vec<Event>) {
    let rep = Arc::new(Collect::default());
    let summary = run(
        &s.plan,
        &s.target,
        &backends,
        o,
        rep.clone(),
        CancelToken::new(),
    )
    .await;
    (summary, rep.events())
}

fn assert_landed(s: &Setup) {
    for (p, d) in &s.content {
        let fin = s
            .target
            .final_path(
                &s.plan
                    .files
                    .iter()
                    .find(|f| f.file.path.as_str() == p)
                    .unwrap()
                    .file,
                COMMIT,
            )
            .unwrap();
        assert_eq!(&std::fs::read(&fin).unwrap(), d, "{p}");
    }
}

#[tokio::test]
async fn snapshot_lands_verified_with_batched_small_files() {
    let s = setup(&[]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    let o = EngineOptions {
        batch_file_bytes: 1 << 20,
        ..opts()
    };
    let (sum, events) = go(&s, vec![a.clone()], &o).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(sum.done.len(), 3);
    assert_landed(&s);
    // The two small files shared one call; the big one had its own.
    let mut batches = a.batches.lock().unwrap().clone();
    batches.sort();
    assert_eq!(batches, vec![1, 2]);
    let done: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::FileDone { .. }))
        .collect();
    assert_eq!(done.len(), 3);
    if let Event::FileDone {
        sha256, backend, ..
    } = done[0]
    {
        assert_eq!(backend, "a");
        assert_eq!(sha256.len(), 64);
    }
    // No partial or state left behind.
    let Target::Cache(c) = &s.target else {
        unreachable!()
    };
    for e in std::fs::read_dir(c.root.join("blobs")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.contains("partial") && !n.contains("incomplete"), "{n}");
    }
}

#[tokio::test]
async fn corruption_never_lands_and_the_next_backend_is_tried() {
    let s = setup(&["big.bin"]);
    let bad = Fake::new("bad", &s.content, Mode::Flip);
    let good = Fake::new("good", &s.content, Mode::Serve);
    let (sum, events) = go(&s, vec![bad.clone(), good.clone()], &opts()).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(sum.done[0].backend, "good");
    // The second backend started from scratch: the corrupt bytes were discarded.
    assert_eq!(good.offsets.lock().unwrap()[0].1, 0);
    assert!(events.iter().any(|e| matches!(e, Event::Fallback { from, error, .. } if from == "bad" && error.kind == "integrity")));
    assert_landed_one(&s, "big.bin");

    for mode in [Mode::Flip, Mode::Truncate] {
        let s = setup(&["big.bin"]);
        let bad = Fake::new("bad", &s.content, mode);
        let bad2 = Fake::new("bad2", &s.content, mode);
        let (sum, _) = go(&s, vec![bad, bad2], &opts()).await;
        let err = sum.error().expect("must fail");
        assert_eq!(err.exit_code(), crate::error::EXIT_INTEGRITY);
        let msg = err.to_string();
        assert!(msg.contains("bad, bad2 (integrity)"), "{msg}");
        assert!(
            msg.contains(if mode == Mode::Flip {
                "sha256 mismatch"
            } else {
                "size mismatch"
            }),
            "{msg}"
        );
        let fin = s.target.final_path(&s.plan.files[0].file, COMMIT).unwrap();
        assert!(!fin.exists());
        let Target::Cache(c) = &s.target else {
            unreachable!()
        };
        assert_eq!(
            std::fs::read_dir(c.root.join("blobs")).unwrap().count(),
            0,
            "nothing lands in blobs/"
        );
    }
}

fn assert_landed_one(s: &Setup, p: &str) {
    let f = &s
        .plan
        .files
        .iter()
        .find(|f| f.file.path.as_str() == p)
        .unwrap()
        .file;
    assert_eq!(
        std::fs::read(s.target.final_path(f, COMMIT).unwrap()).unwrap(),
        s.content[p]
    );
}

#[tokio::test]
async fn a_stalled_call_is_cancelled_or_abandoned_and_another_backend_completes() {
    for mode in [Mode::StallPolite, Mode::Hang, Mode::WireOnly] {
        let s = setup(&["big.bin"]);
        let stuck = Fake::new("stuck", &s.content, mode);
        let good = Fake::new("good", &s.content, Mode::Serve);
        let o = opts();
        let t = Instant::now();
        let (sum, events) =
            tokio::time::timeout(Duration::from_secs(30), go(&s, vec![stuck, good], &o))
                .await
                .unwrap_or_else(|_| panic!("{mode:?}: the watchdog never fired"));
        let took = t.elapsed();
        assert!(sum.error().is_none(), "{mode:?}: {:?}", sum.error());
        assert_eq!(sum.done[0].backend, "good");
        assert!(took >= o.stall_timeout, "{took:?}");
        assert!(
            took < o.stall_timeout + o.cancel_grace + Duration::from_secs(2),
            "{took:?}"
        );
        assert!(events.iter().any(|e| matches!(e, Event::Fallback { from, error, .. } if from == "stuck" && error.message.contains("stalled"))), "{mode:?}");
        assert_landed_one(&s, "big.bin");
    }
}

#[tokio::test]
async fn the_finished_files_of_an_abandoned_call_are_kept() {
    let s = setup(&["config.json", "sub/deep/w.bin"]);
    let stuck = Fake::new("stuck", &s.content, Mode::Serve);
    stuck.script("sub/deep/w.bin", vec![Mode::Hang]);
    let good = Fake::new("good", &s.content, Mode::Serve);
    let o = EngineOptions {
        batch_file_bytes: 1 << 20,
        ..opts()
    };
    let (sum, _) = go(&s, vec![stuck.clone(), good.clone()], &o).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(
        stuck.batches.lock().unwrap().clone(),
        vec![2],
        "one call, both files"
    );
    let by = |p: &str| {
        sum.done
            .iter()
            .find(|d| d.path == p)
            .map(|d| d.backend.clone())
            .unwrap()
    };
    assert_eq!(
        by("config.json"),
        "stuck",
        "written before the call got stuck: kept"
    );
    assert_eq!(by("sub/deep/w.bin"), "good");
    assert_eq!(
        good.offsets.lock().unwrap().clone(),
        vec![("sub/deep/w.bin".to_owned(), 0)],
        "only the unfinished file goes to the next backend"
    );
    assert_landed_one(&s, "config.json");
    assert_landed_one(&s, "sub/deep/w.bin");
}

#[tokio::test]
async fn retry_after_is_honoured_and_retries_stay_on_the_backend() {
    let s = setup(&["config.json"]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    a.script(
        "config.json",
        vec![Mode::Fail(ErrorKind::RATE_LIMITED, 700)],
    );
    let t = Instant::now();
    let (sum, events) = go(&s, vec![a.clone()], &opts()).await;
    assert!(sum.error().is_none());
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(a.calls.load(Ordering::SeqCst), 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Retry { delay_ms, .. } if *delay_ms >= 700))
    );
}

#[tokio::test]
async fn not_found_and_auth_move_on_without_retry_and_classify() {
    let s = setup(&["config.json"]);
    let a = Fake::new("a", &s.content, Mode::Fail(ErrorKind::NOT_FOUND, 0));
    let b = Fake::new("b", &s.content, Mode::Fail(ErrorKind::NOT_FOUND, 0));
    let (sum, _) = go(&s, vec![a.clone(), b], &opts()).await;
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        sum.error().unwrap().exit_code(),
        crate::error::EXIT_NOT_FOUND
    );

    let s = setup(&["config.json"]);
    let a = Fake::new("a", &s.content, Mode::Fail(ErrorKind::AUTH, 0));
    let (sum, _) = go(&s, vec![a.clone()], &opts()).await;
    assert_eq!(a.calls.load(Ordering::SeqCst), 1);
    let err = sum.error().unwrap();
    assert_eq!(err.exit_code(), crate::error::EXIT_AUTH);
    assert!(err.hint().unwrap().contains("token"));
}

#[tokio::test]
async fn a_backend_that_keeps_failing_gets_no_more_files() {
    let s = setup(&[]);
    let flaky = Fake::new("flaky", &s.content, Mode::Fail(ErrorKind::PROTOCOL, 0));
    let good = Fake::new("good", &s.content, Mode::Serve);
    let o = EngineOptions {
        max_workers: 1,
        batch_file_bytes: 0,
        health_threshold: 2,
        ..opts()
    };
    let (sum, events) = go(&s, vec![flaky.clone(), good], &o).await;
    assert!(sum.error().is_none());
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        2,
        "third file skipped the disabled backend"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Warning { message } if message.contains("no more files")))
    );
    assert_landed(&s);
}

/// Leaves `path` of the setup as an interrupted download would: its partial holds the first
/// `have` bytes and its resume state a checkpoint at `checkpoint`.
fn interrupted(s: &Setup, path: &str, have: usize, checkpoint: u64) {
    let f = &s
        .plan
        .files
        .iter()
        .find(|p| p.file.path == path)
        .unwrap()
        .file;
    let partial = s.target.partial(f).unwrap();
    let etag = etag_of(f).unwrap();
    partial.prepare(&etag, f.size, COMMIT).unwrap();
    std::fs::write(&partial.data, &s.content[path][..have]).unwrap();
    let state = ResumeState {
        version: 1,
        etag,
        size: f.size,
        commit: COMMIT.into(),
        checkpoint,
        written: Vec::new(),
    };
    partial.checkpoint(&state).unwrap();
}

#[tokio::test]
async fn resume_hands_the_backend_the_checkpoint_offset() {
    let s = setup(&["big.bin"]);
    interrupted(&s, "big.bin", 1_000_000, 900_000);
    let f = &s.plan.files[0].file;
    // Re-plan: the status shows the resumable prefix.
    let req = PlanRequest {
        repo_id: "acme/tiny".into(),
        files: vec!["big.bin".into()],
        ..PlanRequest::default()
    };
    let plan = build_plan(manifest(&s.content), "fake", &req, &s.target).unwrap();
    assert_eq!(plan.files[0].status, FileStatus::Partial(900_000));
    assert_eq!(plan.remaining_bytes(), f.size - 900_000);
    let a = Fake::new("a", &s.content, Mode::Serve);
    let (sum, _) = go(&s, vec![a.clone()], &opts()).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(
        a.offsets.lock().unwrap()[0],
        ("big.bin".to_owned(), 900_000)
    );
    assert_eq!(sum.done[0].bytes_transferred, f.size - 900_000);
    assert_landed_one(&s, "big.bin");
}

#[tokio::test]
async fn written_ranges_are_persisted_and_handed_to_the_next_attempt() {
    let s = setup(&["big.bin"]);
    let size = s.content["big.bin"].len() as u64;
    let start = size - size / 4;
    let a = Fake::new("a", &s.content, Mode::Serve);
    a.script("big.bin", vec![Mode::TailRange]);
    let (sum, _) = go(&s, vec![a.clone()], &opts()).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    let options = a.options.lock().unwrap().clone();
    assert_eq!(options.len(), 2, "{options:?}");
    assert_eq!(options[0], "", "nothing written before the first attempt");
    assert_eq!(
        options[1],
        format!(r#"{{"written_ranges":{{"0":[[{start},{size}]]}}}}"#),
        "the retry is told which range is on disk"
    );
    assert_landed_one(&s, "big.bin");
}

#[tokio::test]
async fn interrupt_keeps_partial_state_for_the_next_run() {
    let s = setup(&["big.bin"]);
    let a = Fake::new("a", &s.content, Mode::Hang);
    let stop = CancelToken::new();
    let stop2 = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop2.cancel();
    });
    let o = EngineOptions {
        stall_timeout: Duration::from_secs(30),
        ..opts()
    };
    let backends: Vec<Arc<dyn Transport>> = vec![a];
    let sum = run(
        &s.plan,
        &s.target,
        &backends,
        &o,
        Arc::new(Collect::default()),
        stop,
    )
    .await;
    assert_eq!(
        sum.error().unwrap().exit_code(),
        crate::error::EXIT_INTERRUPTED
    );
    let partial = s.target.partial(&s.plan.files[0].file).unwrap();
    assert!(partial.data.exists() && partial.state.exists());
}

#[tokio::test]
async fn complete_files_are_not_fetched_again() {
    let s = setup(&[]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    let (sum, _) = go(&s, vec![a.clone()], &opts()).await;
    assert!(sum.error().is_none());
    let calls = a.calls.load(Ordering::SeqCst);
    let req = PlanRequest {
        repo_id: "acme/tiny".into(),
        ..PlanRequest::default()
    };
    let plan = build_plan(manifest(&s.content), "fake", &req, &s.target).unwrap();
    assert!(plan.files.iter().all(|f| f.status == FileStatus::Complete));
    assert_eq!(plan.remaining_bytes(), 0);
    let rep = Arc::new(Collect::default());
    let backends: Vec<Arc<dyn Transport>> = vec![a.clone()];
    let sum = run(
        &plan,
        &s.target,
        &backends,
        &opts(),
        rep,
        CancelToken::new(),
    )
    .await;
    assert_eq!(sum.done.len(), 3);
    assert_eq!(a.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn a_backend_without_resume_gets_offset_zero() {
    let s = setup(&["big.bin"]);
    interrupted(&s, "big.bin", 500_000, 500_000);
    let fake = Fake::new("whole", &s.content, Mode::Serve);
    let mut no_resume = Arc::try_unwrap(fake).ok().unwrap();
    no_resume.caps.features = Features::NON_XET_FILES;
    let no_resume = Arc::new(no_resume);
    let (sum, _) = go(&s, vec![no_resume.clone()], &opts()).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(no_resume.offsets.lock().unwrap()[0].1, 0);
    assert_landed_one(&s, "big.bin");
}

#[tokio::test]
async fn files_with_the_same_content_are_fetched_once_and_linked() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::cache(dir.path(), RepoType::MODEL, "acme/dup");
    let mut content = content();
    content.insert("copy/config.json".into(), content["config.json"].clone());
    content.insert("copy/big.bin".into(), content["big.bin"].clone());
    let req = PlanRequest {
        repo_id: "acme/dup".into(),
        ..PlanRequest::default()
    };
    let plan = build_plan(manifest(&content), "fake", &req, &target).unwrap();
    let s = Setup {
        _dir: dir,
        target,
        plan,
        content,
    };
    let a = Fake::new("a", &s.content, Mode::Serve);
    let o = EngineOptions {
        batch_file_bytes: 1 << 20,
        lock_timeout: Duration::from_secs(5),
        ..opts()
    };
    let t = Instant::now();
    let (sum, _) = go(&s, vec![a.clone()], &o).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "no lock wait on itself"
    );
    assert_eq!(sum.done.len(), 5);
    let fetched: Vec<String> = a
        .offsets
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(fetched.len(), 3, "{fetched:?}");
    assert_landed(&s);
}

#[tokio::test]
async fn force_download_fetches_again_despite_the_blob() {
    let s = setup(&["config.json"]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    go(&s, vec![a.clone()], &opts()).await;
    let req = PlanRequest {
        repo_id: "acme/tiny".into(),
        files: vec!["config.json".into()],
        force: true,
        ..PlanRequest::default()
    };
    let plan = build_plan(manifest(&s.content), "fake", &req, &s.target).unwrap();
    assert_eq!(plan.files[0].status, FileStatus::Missing);
    let o = EngineOptions {
        force: true,
        ..opts()
    };
    let backends: Vec<Arc<dyn Transport>> = vec![a.clone()];
    let sum = run(
        &plan,
        &s.target,
        &backends,
        &o,
        Arc::new(Collect::default()),
        CancelToken::new(),
    )
    .await;
    assert!(sum.error().is_none());
    assert_eq!(a.calls.load(Ordering::SeqCst), 2);
    assert_eq!(sum.done[0].backend, "a");
}

#[tokio::test]
async fn a_stuck_resolve_is_abandoned_and_the_next_backend_resolves() {
    let stuck: Arc<dyn Transport> = Fake::resolver("stuck", None);
    let good: Arc<dyn Transport> = Fake::resolver("good", Some(manifest(&content())));
    let req = PlanRequest {
        repo_id: "acme/tiny".into(),
        ..PlanRequest::default()
    };
    let t = Instant::now();
    let (m, by) = crate::plan::resolve(
        &[stuck, good],
        &req,
        &CancelToken::new(),
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(by, "good");
    assert_eq!(m.commit.as_str(), COMMIT);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn retries_that_make_progress_keep_going_and_one_bad_file_does_not_disable_a_backend() {
    let s = setup(&[]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    // big.bin: four attempts each moving the checkpoint by a quarter (more than max_attempts).
    a.script("big.bin", vec![Mode::Quarter; 4]);
    // sub/deep/w.bin: fails three times without progress: it moves to b.
    a.script("sub/deep/w.bin", vec![Mode::Fail(ErrorKind::NETWORK, 0); 3]);
    let b = Fake::new("b", &s.content, Mode::Serve);
    let o = EngineOptions {
        batch_file_bytes: 0,
        health_threshold: 2,
        checkpoint_interval: Duration::from_millis(50),
        ..opts()
    };
    let (sum, events) = go(&s, vec![a.clone(), b.clone()], &o).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    let by = |p: &str| {
        sum.done
            .iter()
            .find(|d| d.path == p)
            .unwrap()
            .backend
            .clone()
    };
    assert_eq!(by("big.bin"), "a", "resumed on the same backend");
    assert_eq!(by("sub/deep/w.bin"), "b");
    assert_eq!(by("config.json"), "a", "a was not disabled by one bad file");
    let big_offsets: Vec<u64> = a
        .offsets
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "big.bin")
        .map(|(_, o)| *o)
        .collect();
    // The fourth quarter completes the file: it is verified without a fifth call.
    assert_eq!(big_offsets.len(), 4, "{big_offsets:?}");
    assert!(
        big_offsets.windows(2).all(|w| w[1] > w[0]),
        "{big_offsets:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Warning { .. })));
    assert_landed(&s);
}

#[tokio::test]
async fn max_workers_bounds_concurrent_calls() {
    for workers in [1usize, 2, 3] {
        let s = setup(&[]);
        let a = Fake::new("a", &s.content, Mode::Serve);
        *a.delay.lock().unwrap() = Duration::from_millis(150);
        let o = EngineOptions {
            max_workers: workers,
            batch_file_bytes: 0,
            ..opts()
        };
        let (sum, _) = go(&s, vec![a.clone()], &o).await;
        assert!(sum.error().is_none());
        assert_eq!(a.calls.load(Ordering::SeqCst), 3, "one call per file");
        assert_eq!(
            a.peak.load(Ordering::SeqCst),
            workers,
            "--max-workers {workers}"
        );
    }
}

/// A `backend_retry` event's fields.
#[derive(Debug)]
struct Seen {
    path: String,
    backend: String,
    attempt: Option<u32>,
    delay_ms: Option<u64>,
    message: String,
}

fn backend_retries(events: &[Event]) -> Vec<Seen> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::BackendRetry {
                path,
                backend,
                attempt,
                delay_ms,
                message,
                ..
            } => Some(Seen {
                path: path.clone(),
                backend: backend.clone(),
                attempt: *attempt,
                delay_ms: *delay_ms,
                message: message.clone(),
            }),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn backend_retries_are_reported_redacted_and_the_download_goes_on() {
    let s = setup(&["config.json", "big.bin"]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    a.script(
        "big.bin",
        vec![Mode::RetryThenServe {
            retries: 2,
            wait_ms: 1100,
        }],
    );
    let o = EngineOptions {
        token: Some(TOKEN.into()),
        ..opts()
    };
    let (sum, events) = go(&s, vec![a.clone()], &o).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(
        a.calls.load(Ordering::SeqCst),
        1,
        "one batched call, no host retry"
    );
    let seen = backend_retries(&events);
    let attempts: Vec<Option<u32>> = seen.iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [Some(2), Some(3)], "{seen:?}");
    for r in &seen {
        assert_eq!((r.path.as_str(), r.backend.as_str()), ("big.bin", "a"));
        assert_eq!(r.delay_ms, Some(1100));
        let m = &r.message;
        assert!(!m.contains(TOKEN) && !m.contains("s3cr3t"), "{m}");
        assert!(m.contains("503 Service Unavailable"), "{m}");
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Retry { .. } | Event::Fallback { .. })),
        "{events:?}"
    );
    // The retries come before the file is done.
    let first_retry = events
        .iter()
        .position(|e| matches!(e, Event::BackendRetry { .. }))
        .unwrap();
    let done = events
        .iter()
        .position(|e| matches!(e, Event::FileDone { path, .. } if path == "big.bin"))
        .unwrap();
    assert!(first_retry < done);
    assert_landed_one(&s, "big.bin");
}

#[tokio::test]
async fn a_backend_spamming_retries_gets_about_one_event_per_second() {
    let s = setup(&["config.json"]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    a.script(
        "config.json",
        vec![Mode::RetryThenServe {
            retries: 40,
            wait_ms: 10,
        }],
    );
    let t = Instant::now();
    let (sum, events) = go(&s, vec![a], &opts()).await;
    assert!(sum.error().is_none());
    let secs = t.elapsed().as_secs_f64();
    let seen = backend_retries(&events);
    assert!(
        !seen.is_empty() && seen.len() as f64 <= secs.ceil() + 1.0,
        "{} events in {secs:.1}s",
        seen.len()
    );
    assert_eq!(
        seen.last().unwrap().attempt,
        Some(41),
        "the latest retry is reported"
    );
}

#[tokio::test]
async fn an_announced_retry_wait_longer_than_the_stall_timeout_is_not_a_stall() {
    let s = setup(&["big.bin"]);
    let a = Fake::new("a", &s.content, Mode::Serve);
    let b = Fake::new("b", &s.content, Mode::Serve);
    let o = opts();
    // One 1.5 s wait (the stall timeout is 0.6 s), then the bytes.
    a.script(
        "big.bin",
        vec![Mode::RetryThenServe {
            retries: 1,
            wait_ms: 1500,
        }],
    );
    let (sum, events) = go(&s, vec![a, b.clone()], &o).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(sum.done[0].backend, "a", "{events:?}");
    assert_eq!(b.calls.load(Ordering::SeqCst), 0);
    assert_landed_one(&s, "big.bin");
}

#[tokio::test]
async fn a_backend_that_only_says_retrying_is_still_cancelled_as_stalled() {
    let s = setup(&["big.bin"]);
    let a = Fake::new("a", &s.content, Mode::RetryForever);
    let b = Fake::new("b", &s.content, Mode::Serve);
    let o = opts();
    let t = Instant::now();
    let (sum, events) = go(&s, vec![a, b], &o).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(sum.done[0].backend, "b");
    assert!(events.iter().any(|e| matches!(e, Event::Fallback { from, error, .. } if from == "a" && error.message.contains("stalled"))), "{events:?}");
    // 10 ms of every 50 ms is excused: the 0.6 s timeout is reached after about 0.75 s.
    let took = t.elapsed();
    assert!(took >= o.stall_timeout, "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(!backend_retries(&events).is_empty());
}

#[tokio::test]
async fn files_of_a_call_whose_task_panicked_are_reported_failed() {
    let s = setup(&[]);
    let a = Fake::new("a", &s.content, Mode::Panic);
    let o = EngineOptions {
        batch_file_bytes: 1 << 20,
        ..opts()
    };
    let (sum, events) = go(&s, vec![a], &o).await;
    assert_eq!(sum.done.len(), 0);
    assert_eq!(
        sum.failed.len(),
        3,
        "no file goes missing: {:?}",
        sum.failed
    );
    assert!(sum.error().is_some(), "the run fails");
    let errors = events
        .iter()
        .filter(|e| matches!(e, Event::Error { path: Some(_), .. }))
        .count();
    assert_eq!(errors, 3);
}

#[tokio::test]
async fn a_trickle_of_progress_does_not_keep_a_file_retrying_forever() {
    let s = setup(&["big.bin"]);
    let slow = Fake::new("slow", &s.content, Mode::Trickle);
    let good = Fake::new("good", &s.content, Mode::Serve);
    let (sum, events) = go(&s, vec![slow.clone(), good.clone()], &opts()).await;
    assert!(sum.error().is_none(), "{:?}", sum.error());
    assert_eq!(sum.done.len(), 1);
    assert_eq!(sum.done[0].backend, "good");
    // The trickling backend got its usual attempts, then the file moved on.
    let calls = slow.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(calls <= 4, "{calls} calls to the trickling backend");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Fallback { from, .. } if from == "slow"))
    );
}

#[test]
fn the_retry_and_fallback_decision_needs_no_fakes() {
    use super::{Attempt, Next, decide};
    let policy = RetryPolicy::default();
    let network = PluginError::new(ErrorKind::NETWORK, "reset").retryable(true);
    let integrity = PluginError::new(ErrorKind::INTEGRITY, "verification failed");
    let base = Attempt {
        attempts: 1,
        move_on: false,
        progressed: false,
        unverified: false,
        verify_retried: false,
        backend_disabled: false,
    };
    // A transient failure is retried with a backoff.
    assert!(matches!(decide(&policy, &network, base), Next::Retry(d) if d > Duration::ZERO));
    // After meaningful progress, right away (100 ms), unless the server asked for more.
    let progressed = Attempt {
        progressed: true,
        ..base
    };
    assert_eq!(
        decide(&policy, &network, progressed),
        Next::Retry(Duration::from_millis(100))
    );
    let asked = network.clone().with_retry_after_ms(2_000);
    assert_eq!(
        decide(&policy, &asked, progressed),
        Next::Retry(Duration::from_millis(2_000))
    );
    // Out of attempts, a final error, a stall or a disabled backend: move on.
    let spent = Attempt {
        attempts: 99,
        ..base
    };
    assert_eq!(decide(&policy, &network, spent), Next::Fallback);
    let final_error = PluginError::new(ErrorKind::NOT_FOUND, "gone");
    assert_eq!(decide(&policy, &final_error, base), Next::Fallback);
    assert_eq!(
        decide(
            &policy,
            &network,
            Attempt {
                move_on: true,
                ..base
            }
        ),
        Next::Fallback
    );
    let disabled = Attempt {
        backend_disabled: true,
        unverified: true,
        ..base
    };
    assert_eq!(decide(&policy, &network, disabled), Next::Fallback);
    // A first verification failure is fetched again from zero, a second one moves on.
    let unverified = Attempt {
        unverified: true,
        move_on: true,
        ..base
    };
    assert_eq!(decide(&policy, &integrity, unverified), Next::VerifyAgain);
    let again = Attempt {
        verify_retried: true,
        ..unverified
    };
    assert_eq!(decide(&policy, &integrity, again), Next::Fallback);
}
