//! The download engine: a bounded pool of backend calls over the planned files, with per-file
//! fallback across backends, retries with backoff (honouring Retry-After), a stall watchdog
//! that cancels and then abandons stuck calls, backend health, resume checkpoints, incremental
//! verification and installation into the target.
//!
//! Flow per file: take its lock (bounded wait; re-check the target after), prepare the partial
//! file (resume from the persisted checkpoint), hand it to the first healthy backend that can
//! serve it (small files in batches, big ones alone), persist CHECKPOINT events while hashing
//! behind them, verify the tail on completion, and install. A failure is retried on the same
//! backend when transient, else the file moves to the next backend.
//!
//! A backend may also retry inside its call (`RETRY` events): the download goes on, the host
//! reports it (`backend_retry`, at most one per file per second) and excuses the announced wait
//! from the stall watchdog ([`stall`]).
//!
//! Layout: this module schedules (the queue, fallback order, retry/fallback decisions as the
//! pure `decide`, backend health, the final report); `call` runs one backend call and maps
//! its outcome per file; `sink` is the progress sink a call hands the backend; `stall` is the
//! watchdog's clock.

mod call;
mod sink;
pub mod stall;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hubget_plugin_api::{CancelToken, ErrorKind, Features, ManifestFile, PluginError};
use tokio::task::JoinSet;

use crate::error::{HostError, causes_hint, group_causes};
use crate::output::{ErrorInfo, Event, Reporter};
use crate::plan::{FileStatus, Plan};
use crate::resume::Partial;
use crate::retry::RetryPolicy;
use crate::store::lock::FileLock;
use crate::store::{Target, etag_of};
use crate::transport::Transport;
use crate::verify::{Expected, FileHasher};
use call::run_call;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Concurrent backend calls (`--max-workers`).
    pub max_workers: usize,
    /// No BYTES/CHECKPOINT progress for this long cancels the call (waits a backend announces
    /// in `RETRY` events do not count, up to `retry.max_retry_after` between two progress
    /// events; see [`stall`]).
    pub stall_timeout: Duration,
    /// After cancelling, how long to wait before abandoning the call.
    pub cancel_grace: Duration,
    /// Longest wait for a file lock.
    pub lock_timeout: Duration,
    /// Retries on one backend.
    pub retry: RetryPolicy,
    /// Consecutive file failures after which a backend gets no more files this run.
    pub health_threshold: u32,
    /// Files smaller than this may share a call.
    pub batch_file_bytes: u64,
    /// Most files per call (also bounded by the backend's `max_batch_files`).
    pub max_batch_files: usize,
    /// How often checkpoints are persisted.
    pub checkpoint_interval: Duration,
    /// Hash behind the checkpoint when this many new bytes are persisted.
    pub hash_step: u64,
    /// The token, only to redact it from messages.
    pub token: Option<String>,
    /// `--force-download`: fetch even when the target already holds the file.
    pub force: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            max_workers: 8,
            stall_timeout: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(3),
            lock_timeout: Duration::from_secs(600),
            retry: RetryPolicy::default(),
            health_threshold: 3,
            batch_file_bytes: 8 * 1024 * 1024,
            max_batch_files: 32,
            checkpoint_interval: Duration::from_millis(100),
            hash_step: 4 * 1024 * 1024,
            token: None,
            force: false,
        }
    }
}

/// A file in place.
#[derive(Debug, Clone)]
pub struct FileReport {
    /// Repo path.
    pub path: String,
    /// Backend (`cache` if it was already there).
    pub backend: String,
    /// Where the bytes came from.
    pub source: String,
    /// File size.
    pub bytes: u64,
    /// Network bytes in this run.
    pub bytes_transferred: u64,
    /// sha256 (empty if not re-hashed).
    pub sha256: String,
    /// Seconds to verified.
    pub secs: f64,
    /// Final path.
    pub local_path: PathBuf,
    /// The shared blob store entry it was taken from (nothing downloaded).
    pub reused_from: Option<PathBuf>,
    /// Bytes the backend took from chunks already on disk instead of the network.
    pub local_bytes: u64,
}

impl FileReport {
    /// The `file_done` event of this file (`source` redacted).
    pub fn event(&self, redact: impl Fn(&str) -> String) -> Event {
        Event::FileDone {
            path: self.path.clone(),
            backend: self.backend.clone(),
            source: redact(&self.source),
            bytes: self.bytes,
            bytes_transferred: self.bytes_transferred,
            sha256: self.sha256.clone(),
            secs: self.secs,
            local_path: self.local_path.display().to_string(),
            reused_from: self.reused_from.as_ref().map(|p| p.display().to_string()),
            bytes_local: self.local_bytes,
        }
    }
}

/// One failed attempt.
#[derive(Debug, Clone)]
pub struct AttemptError {
    /// Backend (`host` for local failures such as locks).
    pub backend: String,
    /// Kind.
    pub kind: ErrorKind,
    /// Message, redacted.
    pub message: String,
}

/// A file that no backend could deliver.
#[derive(Debug, Clone)]
pub struct FileFailure {
    /// Repo path.
    pub path: String,
    /// Every failed attempt, in order.
    pub attempts: Vec<AttemptError>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Files in place.
    pub done: Vec<FileReport>,
    /// Files that failed.
    pub failed: Vec<FileFailure>,
    /// Files left (partial state kept) because the run was interrupted.
    pub interrupted: Vec<String>,
}

impl Summary {
    /// Network bytes of the run.
    pub fn bytes_transferred(&self) -> u64 {
        self.done.iter().map(|d| d.bytes_transferred).sum()
    }

    /// Files taken from the shared blob store, and their bytes.
    pub fn reused(&self) -> (usize, u64) {
        let reused = self.done.iter().filter(|d| d.reused_from.is_some());
        reused.fold((0, 0), |(n, b), d| (n + 1, b + d.bytes))
    }

    /// Bytes taken from chunks already on disk (files the backend assembled partly locally).
    pub fn local_bytes(&self) -> u64 {
        self.done.iter().map(|d| d.local_bytes).sum()
    }

    /// The run's error, if any: interrupted, or failed files classified by their worst cause
    /// (auth > integrity > not found > other).
    pub fn error(&self) -> Option<HostError> {
        if !self.interrupted.is_empty() {
            return Some(HostError::Interrupted);
        }
        if self.failed.is_empty() {
            return None;
        }
        let all: Vec<&AttemptError> = self.failed.iter().flat_map(|f| &f.attempts).collect();
        let mut msg = format!(
            "{} of {} files failed:",
            self.failed.len(),
            self.failed.len() + self.done.len()
        );
        let mut all_causes = Vec::new();
        for f in &self.failed {
            msg.push_str(&format!("\n  {}:", f.path));
            if f.attempts.is_empty() {
                msg.push_str(" no attempt was made");
            }
            // Backends that failed the same way share one line; auth hints go to `hint:`.
            let causes = group_causes(
                f.attempts
                    .iter()
                    .map(|a| (a.backend.as_str(), a.kind, a.message.as_str())),
            );
            for c in &causes {
                let names = c.backends.join(", ");
                msg.push_str(&format!("\n    {names} ({}): {}", c.kind, c.message));
            }
            all_causes.extend(causes);
        }
        Some(if all.iter().any(|a| a.kind == ErrorKind::AUTH) {
            HostError::auth(msg, causes_hint(&all_causes))
        } else if all.iter().any(|a| a.kind == ErrorKind::INTEGRITY) {
            HostError::Integrity(msg)
        } else if !all.is_empty() && all.iter().all(|a| a.kind == ErrorKind::NOT_FOUND) {
            HostError::NotFound(msg)
        } else {
            HostError::Other(msg)
        })
    }
}

/// Whether `backend` can serve `file` of this repo type.
pub fn can_serve(
    backend: &dyn Transport,
    file: &ManifestFile,
    repo_type: hubget_plugin_api::RepoType,
) -> bool {
    let caps = backend.capabilities();
    if !caps.repo_types.contains(&repo_type) {
        return false;
    }
    let has_xet = file.xet_hash.is_some();
    caps.features.contains(Features::NON_XET_FILES)
        || (has_xet && caps.features.contains(Features::XET))
}

/// One file on its way: where it is in the fallback order, its lock (held across attempts),
/// its partial file and the hash of the prefix verified so far.
struct Job {
    path: String,
    file: ManifestFile,
    etag: String,
    candidates: VecDeque<usize>,
    attempts: u32,
    errors: Vec<AttemptError>,
    not_before: Instant,
    lock: Option<FileLock>,
    partial: Partial,
    hasher: Arc<Mutex<FileHasher>>,
    offset: u64,
    /// Ranges past `offset` already on disk (from `RANGE_WRITTEN` events of an earlier attempt).
    written: Vec<std::ops::Range<u64>>,
    started: Option<Instant>,
    transferred: u64,
    /// A verification failure was already retried on the same backend.
    verify_retried: bool,
}

/// What one attempt at one file came to.
enum Outcome {
    /// Verified and installed.
    Done(FileReport),
    /// Found complete after taking the lock (another process finished it).
    AlreadyDone(FileReport),
    /// Ctrl-C: the partial file and its state stay.
    Interrupted,
    /// A local failure no backend can fix (lock timeout, install error).
    Fatal(AttemptError),
    /// The backend failed this file: retry or fall back.
    Failed {
        error: PluginError,
        /// Not worth retrying on the same backend (stall, verification).
        move_on: bool,
        /// The attempt advanced the persisted checkpoint (a retry resumes from there).
        progressed: bool,
        /// The finished file did not match its hash or size (the bytes are discarded): tried
        /// once more on the same backend, from zero, before moving on (a bad proxy, a flipped
        /// byte, a stale local source).
        unverified: bool,
    },
}

/// What every call task of a run shares.
struct Ctx {
    backends: Vec<Arc<dyn Transport>>,
    target: Target,
    opts: EngineOptions,
    reporter: Arc<dyn Reporter>,
    stop: CancelToken,
    plan_commit: String,
    repo_type: hubget_plugin_api::RepoType,
    repo_id: String,
    revision: String,
}

impl Ctx {
    fn redact(&self, text: &str) -> String {
        crate::redact::redact(text, self.opts.token.as_deref())
    }

    fn info(&self, e: &PluginError) -> ErrorInfo {
        ErrorInfo {
            kind: e.kind.name().into_owned(),
            message: self.redact(&e.message),
        }
    }
}

/// Runs the plan: every file not complete goes through the backends; returns what happened.
/// `stop` is the Ctrl-C token: when set, calls are cancelled, partial files and their state are
/// kept, and the remaining files are reported as interrupted.
pub async fn run(
    plan: &Plan,
    target: &Target,
    backends: &[Arc<dyn Transport>],
    opts: &EngineOptions,
    reporter: Arc<dyn Reporter>,
    stop: CancelToken,
) -> Summary {
    let ctx = Arc::new(Ctx {
        backends: backends.to_vec(),
        target: target.clone(),
        opts: opts.clone(),
        reporter,
        stop,
        plan_commit: plan.commit.clone(),
        repo_type: plan.repo_type,
        repo_id: plan.repo_id.clone(),
        revision: plan.revision.clone(),
    });
    let mut summary = Summary::default();
    let mut queue: Vec<Job> = Vec::new();
    // Files with the same content (same blob in the cache) are fetched once: the others
    // ("followers") are linked when their primary is done.
    let mut primaries: HashMap<PathBuf, String> = HashMap::new();
    let mut followers: Vec<(ManifestFile, String)> = Vec::new();
    // Entries refused by name fail; the rest of the download goes on.
    for refused in &plan.refused {
        let message = crate::output::escape_name(&refused.to_string());
        fail(
            &ctx,
            &mut summary,
            crate::output::escape_name(&refused.path),
            vec![host_error(ErrorKind::PROTOCOL, message)],
        );
    }
    for pf in &plan.files {
        let path = pf.file.path.to_string();
        if matches!(pf.status, FileStatus::Complete | FileStatus::Linkable) {
            match target.link_existing(&pf.file, &plan.commit) {
                Ok(local) => {
                    let report = cached_report(&pf.file, local);
                    emit_done(&ctx, &report);
                    summary.done.push(report);
                    continue;
                }
                Err(e) => log::debug!("{path}: cannot reuse the cached copy ({e}); fetching it"),
            }
        }
        let (etag, partial) = match (etag_of(&pf.file), target.partial(&pf.file)) {
            (Ok(e), Ok(p)) => (e, p),
            (Err(e), _) | (_, Err(e)) => {
                fail(
                    &ctx,
                    &mut summary,
                    path,
                    vec![host_error(ErrorKind::PROTOCOL, e.to_string())],
                );
                continue;
            }
        };
        if let Some(primary) = primaries.get(&partial.data) {
            followers.push((pf.file.clone(), primary.clone()));
            continue;
        }
        primaries.insert(partial.data.clone(), path.clone());
        let candidates: VecDeque<usize> = (0..backends.len())
            .filter(|&i| can_serve(backends[i].as_ref(), &pf.file, plan.repo_type))
            .collect();
        if candidates.is_empty() {
            let why = format!(
                "none of the backends in use can fetch it ({} file of a {})",
                if pf.file.xet_hash.is_some() {
                    "Xet-backed"
                } else {
                    "non-Xet"
                },
                plan.repo_type
            );
            fail(
                &ctx,
                &mut summary,
                path,
                vec![host_error(ErrorKind::UNSUPPORTED, why)],
            );
            continue;
        }
        queue.push(Job {
            path,
            hasher: Arc::new(Mutex::new(FileHasher::new(Expected::for_file(&pf.file)))),
            file: pf.file.clone(),
            etag,
            candidates,
            attempts: 0,
            errors: Vec::new(),
            not_before: Instant::now(),
            lock: None,
            partial,
            offset: 0,
            written: Vec::new(),
            started: None,
            transferred: 0,
            verify_retried: false,
        });
    }

    let mut health = vec![0u32; backends.len()];
    let mut disabled = vec![false; backends.len()];
    let mut running: JoinSet<(usize, Vec<(Job, Outcome)>)> = JoinSet::new();
    // The files of every running call: a call whose task dies (a panic) still accounts for them.
    let mut in_call: HashMap<tokio::task::Id, Vec<String>> = HashMap::new();
    loop {
        let stopping = ctx.stop.is_cancelled();
        if !stopping {
            while running.len() < ctx.opts.max_workers.max(1) {
                skip_disabled(&ctx, &mut queue, &disabled, &mut summary);
                let Some((b, jobs)) = pick_batch(&ctx, &mut queue) else {
                    break;
                };
                let c = Arc::clone(&ctx);
                let paths = jobs.iter().map(|j| j.path.clone()).collect();
                let handle = running.spawn(async move {
                    let out = run_call(&c, b, jobs).await;
                    (b, out)
                });
                in_call.insert(handle.id(), paths);
            }
        }
        if running.is_empty() && (queue.is_empty() || stopping) {
            break;
        }
        let joined = tokio::select! {
            r = running.join_next_with_id(), if !running.is_empty() => r,
            _ = tokio::time::sleep(Duration::from_millis(100)) => None,
        };
        let Some(joined) = joined else { continue };
        let (b, results) = match joined {
            Ok((id, r)) => {
                in_call.remove(&id);
                r
            }
            Err(e) => {
                log::error!("a download task failed: {e}");
                for path in in_call.remove(&e.id()).unwrap_or_default() {
                    let why = format!("the download task failed: {e}");
                    fail(
                        &ctx,
                        &mut summary,
                        path,
                        vec![host_error(ErrorKind::PANIC, why)],
                    );
                }
                continue;
            }
        };
        for (mut job, outcome) in results {
            match outcome {
                Outcome::Done(report) => {
                    health[b] = 0;
                    emit_done(&ctx, &report);
                    summary.done.push(report);
                }
                Outcome::AlreadyDone(report) => {
                    emit_done(&ctx, &report);
                    summary.done.push(report);
                }
                Outcome::Interrupted => summary.interrupted.push(job.path.clone()),
                Outcome::Fatal(err) => {
                    job.errors.push(err);
                    fail(
                        &ctx,
                        &mut summary,
                        job.path.clone(),
                        std::mem::take(&mut job.errors),
                    );
                }
                Outcome::Failed {
                    error,
                    move_on,
                    progressed,
                    unverified,
                } => {
                    let name = ctx.backends[b].name().to_owned();
                    if error.kind == ErrorKind::CANCELLED && ctx.stop.is_cancelled() {
                        summary.interrupted.push(job.path.clone());
                        continue;
                    }
                    let info = ctx.info(&error);
                    job.errors.push(AttemptError {
                        backend: name.clone(),
                        kind: error.kind,
                        message: info.message.clone(),
                    });
                    // An attempt that moved the checkpoint forward does not count: retries that
                    // keep making progress go on (each resumes where the last one stopped).
                    job.attempts = if progressed { 1 } else { job.attempts + 1 };
                    let next = decide(
                        &ctx.opts.retry,
                        &error,
                        Attempt {
                            attempts: job.attempts,
                            move_on,
                            progressed,
                            unverified,
                            verify_retried: job.verify_retried,
                            backend_disabled: disabled[b],
                        },
                    );
                    if next == Next::VerifyAgain {
                        // Once, from zero (the partial and its ranges are gone): a transient
                        // corruption must not fail a file that only this backend serves.
                        job.verify_retried = true;
                        job.attempts = 0;
                        log::warn!(
                            "{}: {name}: {}; fetching it once more from zero",
                            job.path,
                            info.message
                        );
                        ctx.reporter.emit(Event::Retry {
                            path: job.path.clone(),
                            backend: name,
                            attempt: 1,
                            delay_ms: 0,
                            error: info,
                        });
                        job.written.clear();
                        job.not_before = Instant::now();
                        queue.push(job);
                    } else if let Next::Retry(delay) = next {
                        log::warn!(
                            "{}: {name} failed ({}), retry {} in {:.1}s",
                            job.path,
                            info.message,
                            job.attempts,
                            delay.as_secs_f64()
                        );
                        ctx.reporter.emit(Event::Retry {
                            path: job.path.clone(),
                            backend: name,
                            attempt: job.attempts,
                            delay_ms: delay.as_millis() as u64,
                            error: info,
                        });
                        job.not_before = Instant::now() + delay;
                        queue.push(job);
                    } else {
                        // The file gives up on this backend: that is what health counts.
                        if !matches!(
                            error.kind,
                            ErrorKind::NOT_FOUND | ErrorKind::UNSUPPORTED | ErrorKind::CANCELLED
                        ) {
                            health[b] += 1;
                            if health[b] >= ctx.opts.health_threshold && !disabled[b] {
                                disabled[b] = true;
                                let message = format!(
                                    "backend `{name}` failed {} files in a row; it gets no more files this run",
                                    health[b]
                                );
                                log::warn!("{message}");
                                ctx.reporter.emit(Event::Warning { message });
                            }
                        }
                        job.candidates.pop_front();
                        job.attempts = 0;
                        job.verify_retried = false;
                        job.not_before = Instant::now();
                        let to = job
                            .candidates
                            .front()
                            .map(|&i| ctx.backends[i].name().to_owned());
                        log::warn!(
                            "{}: {name} failed ({}){}",
                            job.path,
                            info.message,
                            to.as_deref()
                                .map(|t| format!("; trying {t}"))
                                .unwrap_or_default()
                        );
                        ctx.reporter.emit(Event::Fallback {
                            path: job.path.clone(),
                            from: name,
                            to: to.clone(),
                            error: info,
                        });
                        if to.is_some() {
                            queue.push(job);
                        } else {
                            fail(
                                &ctx,
                                &mut summary,
                                job.path.clone(),
                                std::mem::take(&mut job.errors),
                            );
                        }
                    }
                }
            }
        }
    }
    for job in queue {
        summary.interrupted.push(job.path);
    }
    for (file, primary) in followers {
        let path = file.path.to_string();
        if summary.done.iter().any(|d| d.path == primary) {
            match target.link_existing(&file, &plan.commit) {
                Ok(local) => {
                    let report = cached_report(&file, local);
                    emit_done(&ctx, &report);
                    summary.done.push(report);
                }
                Err(e) => fail(
                    &ctx,
                    &mut summary,
                    path,
                    vec![host_error(ErrorKind::IO, format!("cannot link: {e}"))],
                ),
            }
        } else if let Some(f) = summary.failed.iter().find(|f| f.path == primary) {
            let mut attempts = f.attempts.clone();
            attempts.push(host_error(
                ErrorKind::OTHER,
                format!("same content as {primary}, which failed"),
            ));
            fail(&ctx, &mut summary, path, attempts);
        } else {
            summary.interrupted.push(path);
        }
    }
    summary
}

fn host_error(kind: ErrorKind, message: String) -> AttemptError {
    AttemptError {
        backend: "host".to_owned(),
        kind,
        message,
    }
}

fn fail(ctx: &Ctx, summary: &mut Summary, path: String, attempts: Vec<AttemptError>) {
    let last = attempts.last();
    ctx.reporter.emit(Event::Error {
        path: Some(path.clone()),
        kind: last
            .map(|a| a.kind.name().into_owned())
            .unwrap_or_else(|| "other".into()),
        message: attempts
            .iter()
            .map(|a| format!("{}: {}", a.backend, a.message))
            .collect::<Vec<_>>()
            .join("; "),
        hint: None,
    });
    summary.failed.push(FileFailure { path, attempts });
}

pub fn cached_report(file: &ManifestFile, local: PathBuf) -> FileReport {
    FileReport {
        path: file.path.to_string(),
        backend: "cache".to_owned(),
        source: "cache".to_owned(),
        bytes: file.size,
        bytes_transferred: 0,
        sha256: file
            .sha256
            .as_ref()
            .map(|s| s.to_string())
            .into_option()
            .unwrap_or_default(),
        secs: 0.0,
        local_path: local,
        reused_from: None,
        local_bytes: 0,
    }
}

fn emit_done(ctx: &Ctx, r: &FileReport) {
    ctx.reporter.emit(r.event(|s| ctx.redact(s)));
}

/// What is known of a failed attempt, for [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// Attempts on this backend so far (after counting this one).
    attempts: u32,
    /// The failure says this backend should not try again (a stall, a verification failure).
    move_on: bool,
    /// The attempt moved the checkpoint forward meaningfully.
    progressed: bool,
    /// The finished file failed its hash or size check.
    unverified: bool,
    /// A verification failure was already retried on this backend.
    verify_retried: bool,
    /// The backend gets no more files this run.
    backend_disabled: bool,
}

/// What happens to a file after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Fetch it once more from zero on the same backend (first verification failure).
    VerifyAgain,
    /// Try the same backend again after this wait.
    Retry(Duration),
    /// Move on to the next backend (or fail when none is left).
    Fallback,
}

/// The retry/fallback policy, as a pure function: a first verification failure is fetched again
/// from zero on the same backend; a transient failure is retried with backoff (right away after
/// meaningful progress, unless the server asked to wait), up to the policy's attempts; anything
/// else, and any failure on a disabled backend, moves on.
fn decide(policy: &RetryPolicy, error: &PluginError, a: Attempt) -> Next {
    if a.backend_disabled {
        return Next::Fallback;
    }
    if a.unverified && !a.verify_retried {
        return Next::VerifyAgain;
    }
    if a.move_on || !policy.should_retry(error, a.attempts) {
        return Next::Fallback;
    }
    Next::Retry(if a.progressed {
        Duration::from_millis(100.max(error.retry_after_ms)).min(policy.max_retry_after)
    } else {
        policy.delay(error, a.attempts)
    })
}

/// Moves files off disabled backends (or fails them when none is left).
fn skip_disabled(ctx: &Ctx, queue: &mut Vec<Job>, disabled: &[bool], summary: &mut Summary) {
    let mut i = 0;
    while i < queue.len() {
        let job = &mut queue[i];
        while let Some(&b) = job.candidates.front() {
            if !disabled[b] {
                break;
            }
            job.candidates.pop_front();
            job.attempts = 0;
            let to = job
                .candidates
                .front()
                .map(|&n| ctx.backends[n].name().to_owned());
            ctx.reporter.emit(Event::Fallback {
                path: job.path.clone(),
                from: ctx.backends[b].name().to_owned(),
                to,
                error: ErrorInfo {
                    kind: "unhealthy".into(),
                    message: "backend disabled after repeated failures".into(),
                },
            });
        }
        if job.candidates.is_empty() {
            let mut job = queue.swap_remove(i);
            job.errors.push(host_error(
                ErrorKind::OTHER,
                "every backend that could serve it was disabled after repeated failures".into(),
            ));
            fail(
                ctx,
                summary,
                job.path.clone(),
                std::mem::take(&mut job.errors),
            );
        } else {
            i += 1;
        }
    }
}

/// The next call: the first ready file, plus other ready small files for the same backend.
fn pick_batch(ctx: &Ctx, queue: &mut Vec<Job>) -> Option<(usize, Vec<Job>)> {
    let now = Instant::now();
    let first = queue.iter().position(|j| j.not_before <= now)?;
    let b = *queue[first].candidates.front()?;
    let caps = ctx.backends[b].capabilities();
    let limit = match caps.max_batch_files as usize {
        0 => ctx.opts.max_batch_files,
        n => n.min(ctx.opts.max_batch_files),
    }
    .max(1);
    let small = |j: &Job| j.file.size < ctx.opts.batch_file_bytes;
    let mut picked = vec![queue.remove(first)];
    if small(&picked[0]) && limit > 1 {
        let mut i = 0;
        while i < queue.len() && picked.len() < limit {
            let j = &queue[i];
            if j.not_before <= now && j.candidates.front() == Some(&b) && small(j) {
                picked.push(queue.remove(i));
            } else {
                i += 1;
            }
        }
    }
    Some((b, picked))
}

async fn wait_stop(stop: &CancelToken) {
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests;
