//! One backend call: prepare the batch's partial files, hand them to the backend, watch it
//! (progress, the stall watchdog, backend retries, checkpoints persisted behind a running
//! hash), then verify and install every file it finished, or report why not. The scheduler in
//! the parent module decides what happens next.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use abi_stable::std_types::RResult;
use hubget_plugin_api::protocol::{FetchOptions, RateLimitNote, RetryNote};
use hubget_plugin_api::{
    CancelToken, ErrorKind, Features, FetchBatch, FetchItem, FileDone, ManifestFile, PluginError,
};

use super::sink::{Sink, Track};
use super::stall::StallClock;
use super::{Ctx, FileReport, Job, Outcome, cached_report, host_error, wait_stop};
use crate::output::Event;
use crate::resume::ResumeState;
use crate::store::lock::LockError;

/// At most one `backend_retry` event per file this often (the latest note wins).
const BACKEND_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// What the state file of a job says so far: its checkpoint and the version of its written
/// ranges (the [`Track::ranges`] counter).
#[derive(Clone, Copy, Default)]
struct Persisted {
    checkpoint: u64,
    ranges: u64,
}

/// Takes `file` from the shared blob store when an entry there has its content (hashed
/// first, off the async workers). A bad entry is reported by name and left alone; the file is
/// then downloaded as usual.
async fn reuse_shared(ctx: &Ctx, file: &ManifestFile) -> Option<FileReport> {
    let target = ctx.target.clone();
    let (f, commit) = (file.clone(), ctx.plan_commit.clone());
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || target.reuse_shared(&f, &commit)).await;
    match result {
        Ok(Ok(Some(Ok(reused)))) => {
            log::info!(
                "{}: taken from the shared blob store ({}), nothing downloaded",
                file.path,
                reused.entry.display()
            );
            let mut report = cached_report(file, reused.local);
            report.backend = "shared-store".to_owned();
            report.source = reused.entry.display().to_string();
            report.secs = started.elapsed().as_secs_f64();
            report.reused_from = Some(reused.entry);
            Some(report)
        }
        Ok(Ok(Some(Err(crate::store::shared::Reuse::Bad { entry, why })))) => {
            ctx.reporter.emit(Event::Warning {
                message: format!(
                    "{}: the shared blob store entry {} does not match ({why}); not using it, downloading the file",
                    file.path,
                    entry.display()
                ),
            });
            None
        }
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            log::debug!(
                "{}: cannot take it from the shared blob store: {e}",
                file.path
            );
            None
        }
        Err(e) => {
            log::debug!("{}: shared blob store task: {e}", file.path);
            None
        }
    }
}

/// Lock, re-check, prepare the partial. `Err` holds the final outcome for this job.
async fn prepare_job(ctx: &Ctx, job: &mut Job, resume: bool) -> Result<(), Outcome> {
    if job.lock.is_none() {
        let lock_path = ctx
            .target
            .lock_path(&job.file)
            .map_err(|e| Outcome::Fatal(host_error(ErrorKind::PROTOCOL, e.to_string())))?;
        // Another process downloading this file: wait while its partial file moves.
        let watched = [job.partial.data.as_path(), job.partial.state.as_path()];
        let lock = tokio::select! {
            r = crate::store::lock::lock(&lock_path, ctx.opts.lock_timeout, &watched) => r,
            _ = wait_stop(&ctx.stop) => return Err(Outcome::Interrupted),
        };
        match lock {
            Ok(l) => job.lock = Some(l),
            Err(e @ LockError::Timeout { .. }) => {
                return Err(Outcome::Fatal(host_error(
                    ErrorKind::TIMEOUT,
                    e.to_string(),
                )));
            }
            Err(e) => return Err(Outcome::Fatal(host_error(ErrorKind::IO, e.to_string()))),
        }
        // Another process may have finished it while we waited.
        if !ctx.opts.force && ctx.target.is_complete(&job.file, &ctx.plan_commit) {
            return match ctx.target.link_existing(&job.file, &ctx.plan_commit) {
                Ok(local) => Err(Outcome::AlreadyDone(cached_report(&job.file, local))),
                Err(e) => Err(Outcome::Fatal(host_error(
                    ErrorKind::IO,
                    format!("cannot link: {e}"),
                ))),
            };
        }
        if !ctx.opts.force
            && job.partial.resumable(&job.etag, job.file.size) == 0
            && let Some(report) = reuse_shared(ctx, &job.file).await
        {
            return Err(Outcome::AlreadyDone(report));
        }
    }
    if !resume && job.partial.resumable_ranges(&job.etag, job.file.size) != (0, Vec::new()) {
        // This backend writes whole files: start over rather than hand it an offset it ignores.
        log::debug!("{}: backend cannot resume; starting from 0", job.path);
        job.partial.discard();
    }
    let (offset, written) = job
        .partial
        .prepare_ranges(&job.etag, job.file.size, &ctx.plan_commit, resume)
        .map_err(|e| {
            Outcome::Fatal(host_error(
                ErrorKind::IO,
                format!("cannot prepare {}: {e}", job.partial.data.display()),
            ))
        })?;
    {
        let mut h = job.hasher.lock().expect("hasher");
        if offset < h.position() {
            h.reset();
        }
    }
    job.offset = offset;
    job.written = written;
    job.started.get_or_insert_with(Instant::now);
    Ok(())
}

/// One backend call over `jobs`, with watchdog, checkpoints, hashing and verification.
pub(super) async fn run_call(ctx: &Arc<Ctx>, b: usize, jobs: Vec<Job>) -> Vec<(Job, Outcome)> {
    let backend = Arc::clone(&ctx.backends[b]);
    let name = backend.name().to_owned();
    let mut results = Vec::new();
    let mut active: Vec<Job> = Vec::new();
    let resume = backend.capabilities().features.contains(Features::RESUME);
    let local = backend.capabilities().features.contains(Features::LOCAL);
    for mut job in jobs {
        match prepare_job(ctx, &mut job, resume).await {
            Ok(()) => active.push(job),
            Err(outcome) => results.push((job, outcome)),
        }
    }
    if active.is_empty() {
        return results;
    }
    // Files already complete on disk (resumed to the end, or empty files) skip the backend.
    let (to_fetch, full): (Vec<Job>, Vec<Job>) =
        active.into_iter().partition(|j| j.offset < j.file.size);
    for job in full {
        let outcome = finish_file(ctx, &job, &name, FileDone::default(), None).await;
        results.push((job, outcome));
    }
    if to_fetch.is_empty() {
        return results;
    }
    let mut jobs = to_fetch;

    let tracks: Vec<Arc<Track>> = jobs
        .iter()
        .map(|j| {
            let t = Track::default();
            t.checkpoint.store(j.offset, Ordering::Relaxed);
            t.ranges.lock().expect("ranges").0 = j.written.clone();
            Arc::new(t)
        })
        .collect();
    let t0 = Instant::now();
    let activity = Arc::new(AtomicU64::new(0));
    let stall = Arc::new(Mutex::new(StallClock::new(ctx.opts.retry.max_retry_after)));
    let progress = crate::backend::progress_from(Sink {
        tracks: tracks.clone(),
        t0,
        activity_ms: Arc::clone(&activity),
        stall: Arc::clone(&stall),
        backend: name.clone(),
        local,
        token: ctx.opts.token.clone(),
    });
    let batch = FetchBatch {
        repo_type: ctx.repo_type,
        repo_id: ctx.repo_id.as_str().into(),
        commit: ctx.plan_commit.as_str().into(),
        revision: ctx.revision.as_str().into(),
        items: jobs
            .iter()
            .map(|j| FetchItem {
                file: j.file.clone(),
                partial_path: j.partial.data.to_string_lossy().as_ref().into(),
                offset: j.offset,
            })
            .collect(),
        options_json: written_ranges_option(&jobs).into(),
    };
    for j in &jobs {
        ctx.reporter.emit(Event::FileStart {
            path: j.path.clone(),
            backend: name.clone(),
            size: j.file.size,
            offset: j.offset,
        });
    }
    log::debug!("{name}: fetching {} file(s)", jobs.len());
    let cancel = CancelToken::new();
    let fetch = backend.fetch(batch, progress, cancel.clone());
    tokio::pin!(fetch);
    let mut persisted: Vec<Persisted> = jobs
        .iter()
        .map(|j| Persisted {
            checkpoint: j.offset,
            ranges: 0,
        })
        .collect();
    let mut hash_tasks: Vec<Option<tokio::task::JoinHandle<()>>> =
        jobs.iter().map(|_| None).collect();
    let mut cancelled_at: Option<Instant> = None;
    let mut stalled = false;
    let mut last_persist = Instant::now();
    let mut last_progress = Instant::now();
    let mut retry_reported: Vec<Option<Instant>> = jobs.iter().map(|_| None).collect();
    let tick = Duration::from_millis(100);
    let outcomes = loop {
        tokio::select! {
            out = &mut fetch => break Some(out),
            _ = tokio::time::sleep(tick) => {}
        }
        if ctx.stop.is_cancelled() && cancelled_at.is_none() {
            cancel.cancel();
            cancelled_at = Some(Instant::now());
        }
        report_backend_retries(ctx, &name, &jobs, &tracks, &mut retry_reported, false);
        let idle = {
            let mut clock = stall.lock().unwrap_or_else(PoisonError::into_inner);
            clock.progress(Duration::from_millis(activity.load(Ordering::Relaxed)));
            clock.idle(t0.elapsed())
        };
        if !stalled && cancelled_at.is_none() && idle >= ctx.opts.stall_timeout {
            stalled = true;
            let unfinished: Vec<&str> = jobs
                .iter()
                .zip(&tracks)
                .filter(|(j, t)| j.offset + t.written.load(Ordering::Relaxed) < j.file.size)
                .map(|(j, _)| j.path.as_str())
                .collect();
            log::warn!(
                "{name}: no progress for {}s on {}; cancelling",
                idle.as_secs(),
                unfinished.join(", ")
            );
            cancel.cancel();
            cancelled_at = Some(Instant::now());
        }
        if let Some(at) = cancelled_at
            && at.elapsed() >= ctx.opts.cancel_grace
        {
            log::warn!(
                "{name}: did not return {}s after cancel; abandoning the call",
                ctx.opts.cancel_grace.as_secs()
            );
            break None;
        }
        if last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            for (j, t) in jobs.iter().zip(&tracks) {
                let bytes = (j.offset + t.written.load(Ordering::Relaxed))
                    .max(t.checkpoint.load(Ordering::Relaxed))
                    .min(j.file.size);
                ctx.reporter.emit(Event::Progress {
                    path: j.path.clone(),
                    backend: name.clone(),
                    bytes,
                    total: j.file.size,
                });
            }
        }
        if last_persist.elapsed() >= ctx.opts.checkpoint_interval {
            last_persist = Instant::now();
            for (i, j) in jobs.iter().enumerate() {
                persist_and_hash(ctx, j, &tracks[i], &mut persisted[i], &mut hash_tasks[i]).await;
            }
        }
    };
    // Retries the backend reported since the last tick (before `file_done`, `retry`, ...).
    report_backend_retries(ctx, &name, &jobs, &tracks, &mut retry_reported, true);
    // Let in-flight hashing finish before anything touches the partial files.
    for h in hash_tasks.iter_mut().filter_map(Option::take) {
        let _ = h.await;
    }
    let Some(outcomes) = outcomes else {
        // Abandoned: the call's thread may still write into the partial files of the items it
        // had not finished. An item whose checkpoint reached its end is finished (the backend
        // wrote every byte before it got stuck elsewhere): it is verified and kept like any other.
        for (i, mut job) in jobs.into_iter().enumerate() {
            if !ctx.stop.is_cancelled()
                && job.file.size > 0
                && tracks[i].checkpoint.load(Ordering::Relaxed) >= job.file.size
            {
                let done = FileDone::new(
                    tracks[i].network.load(Ordering::Relaxed),
                    format!("{name} (before its call was abandoned)"),
                );
                let out = finish_file(ctx, &job, &name, done, Some(&tracks[i])).await;
                if let Outcome::Failed { .. } = out {
                    job.transferred += tracks[i].network.load(Ordering::Relaxed);
                }
                results.push((job, out));
                continue;
            }
            job.transferred += tracks[i].network.load(Ordering::Relaxed);
            if ctx.stop.is_cancelled() {
                let mut p = persisted[i];
                save_checkpoint(ctx, &job, &tracks[i], &mut p).await;
                results.push((job, Outcome::Interrupted));
            } else {
                // Start this file over elsewhere, away from the stuck writer: unlink the partial.
                job.partial.discard();
                job.hasher.lock().expect("hasher").reset();
                let secs = ctx.opts.stall_timeout.as_secs();
                results.push((
                    job,
                    Outcome::Failed {
                        error: PluginError::new(
                            ErrorKind::TIMEOUT,
                            format!("stalled: no progress for {secs}s, and the call ignored cancellation"),
                        ),
                        move_on: true,
                        progressed: false,
                        unverified: false,
                    },
                ));
            }
        }
        return results;
    };
    let mut outcomes = outcomes.into_iter();
    for (i, mut job) in jobs.drain(..).enumerate() {
        let outcome = outcomes.next().map(|o| o.result);
        match outcome {
            Some(RResult::ROk(done)) => {
                let out = finish_file(ctx, &job, &name, done, Some(&tracks[i])).await;
                if let Outcome::Failed { .. } = out {
                    job.transferred += tracks[i].network.load(Ordering::Relaxed);
                }
                results.push((job, out));
            }
            other => {
                let mut error = match other {
                    Some(RResult::RErr(e)) => e,
                    _ => PluginError::new(ErrorKind::PROTOCOL, "no outcome for this file"),
                };
                job.transferred += tracks[i].network.load(Ordering::Relaxed);
                let mut p = persisted[i];
                save_checkpoint(ctx, &job, &tracks[i], &mut p).await;
                // Only meaningful progress (1 MiB or an eighth of the file, or its end) lets a
                // retry resume without counting: a trickle cannot keep a file retrying forever.
                let need = (1u64 << 20).min(job.file.size / 8).max(1);
                let progressed = p.checkpoint >= job.offset.saturating_add(need)
                    || (p.checkpoint > job.offset && p.checkpoint >= job.file.size);
                if stalled && !ctx.stop.is_cancelled() {
                    error = PluginError::new(
                        ErrorKind::TIMEOUT,
                        format!(
                            "stalled: no progress for {}s (cancelled; backend said: {})",
                            ctx.opts.stall_timeout.as_secs(),
                            error.message
                        ),
                    );
                }
                results.push((
                    job,
                    Outcome::Failed {
                        error,
                        move_on: stalled,
                        progressed,
                        unverified: false,
                    },
                ));
            }
        }
    }
    results
}

/// Reports the files' pending backend retries (at most one per file per
/// [`BACKEND_RETRY_INTERVAL`] unless `flush`): a `backend_retry` event and an info log line.
fn report_backend_retries(
    ctx: &Ctx,
    backend: &str,
    jobs: &[Job],
    tracks: &[Arc<Track>],
    reported: &mut [Option<Instant>],
    flush: bool,
) {
    for ((job, track), last) in jobs.iter().zip(tracks).zip(reported.iter_mut()) {
        if !flush && last.is_some_and(|at| at.elapsed() < BACKEND_RETRY_INTERVAL) {
            continue;
        }
        let Some(message) = track.take_retry() else {
            continue;
        };
        *last = Some(Instant::now());
        let note = RetryNote::parse(&message);
        let message = ctx.redact(&message);
        if let Some(limit) = RateLimitNote::parse(&note.reason) {
            log::info!("{}: {backend} waits: {message}", job.path);
            ctx.reporter.emit(Event::RateLimited {
                path: job.path.clone(),
                backend: backend.to_owned(),
                origin: limit.origin,
                bucket: limit.bucket,
                remaining: limit.remaining,
                quota: limit.quota,
                reset_in_ms: limit.reset_in.as_millis() as u64,
            });
            continue;
        }
        log::info!("{}: {backend} retrying: {message}", job.path);
        ctx.reporter.emit(Event::BackendRetry {
            path: job.path.clone(),
            backend: backend.to_owned(),
            attempt: note.attempt.map(|(n, _)| n),
            max_attempts: note.attempt.map(|(_, max)| max),
            delay_ms: note.delay.map(|d| d.as_millis() as u64),
            message,
        });
    }
}

/// Persists a newer checkpoint (data fsynced first), then hashes behind it in the background.
async fn persist_and_hash(
    ctx: &Ctx,
    job: &Job,
    track: &Track,
    persisted: &mut Persisted,
    hash_task: &mut Option<tokio::task::JoinHandle<()>>,
) {
    save_checkpoint(ctx, job, track, persisted).await;
    if hash_task.as_ref().is_some_and(|h| !h.is_finished()) {
        return;
    }
    // Only the contiguous prefix is hashed (it may jump forward as holes close).
    let upto = persisted.checkpoint;
    let behind = upto.saturating_sub(job.hasher.lock().expect("hasher").position());
    if behind >= ctx.opts.hash_step {
        let hasher = Arc::clone(&job.hasher);
        let path = job.partial.data.clone();
        *hash_task = Some(tokio::task::spawn_blocking(move || {
            let mut h = hasher.lock().expect("hasher");
            if let Err(e) = h.advance(&path, upto) {
                log::debug!("incremental hash of {}: {e}", path.display());
            }
        }));
    }
}

/// Persists a newer checkpoint or newer written ranges (data fsynced first, then the state).
async fn save_checkpoint(ctx: &Ctx, job: &Job, track: &Track, persisted: &mut Persisted) {
    let cp = track
        .checkpoint
        .load(Ordering::Relaxed)
        .min(job.file.size)
        .max(persisted.checkpoint);
    let (ranges, version) = {
        let r = track.ranges.lock().unwrap_or_else(PoisonError::into_inner);
        (r.0.clone(), r.1)
    };
    if cp <= persisted.checkpoint && version == persisted.ranges {
        return;
    }
    let state = ResumeState {
        version: 1,
        etag: job.etag.clone(),
        size: job.file.size,
        commit: ctx.plan_commit.clone(),
        checkpoint: cp,
        written: crate::resume::ranges_past(&ranges, cp, job.file.size),
    };
    let partial = job.partial.clone();
    let r = tokio::task::spawn_blocking(move || partial.checkpoint(&state)).await;
    match r {
        Ok(Ok(())) => {
            *persisted = Persisted {
                checkpoint: cp,
                ranges: version,
            }
        }
        Ok(Err(e)) => log::warn!("cannot save resume state of {}: {e}", job.path),
        Err(e) => log::warn!("cannot save resume state of {}: {e}", job.path),
    }
}

/// `FetchBatch::options_json` telling the backend which ranges of each item are already
/// written (empty when none are).
fn written_ranges_option(jobs: &[Job]) -> String {
    let mut options = FetchOptions::default();
    for (i, job) in (0u32..).zip(jobs) {
        if !job.written.is_empty() {
            options.written_ranges.insert(i, job.written.clone());
        }
    }
    options.to_json()
}

/// Verifies a finished partial file and installs it.
async fn finish_file(
    ctx: &Ctx,
    job: &Job,
    backend: &str,
    done: FileDone,
    track: Option<&Track>,
) -> Outcome {
    let hasher = job.hasher.lock().expect("hasher").clone();
    let path = job.partial.data.clone();
    let verified = tokio::task::spawn_blocking(move || hasher.finish(&path)).await;
    let digests = match verified {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            job.partial.discard();
            job.hasher.lock().expect("hasher").reset();
            return Outcome::Failed {
                error: PluginError::new(
                    ErrorKind::INTEGRITY,
                    format!("verification failed, file discarded: {e}"),
                ),
                move_on: true,
                progressed: false,
                unverified: true,
            };
        }
        Err(e) => {
            return Outcome::Failed {
                error: PluginError::new(ErrorKind::OTHER, format!("verification task failed: {e}")),
                move_on: true,
                progressed: false,
                unverified: false,
            };
        }
    };
    let target = ctx.target.clone();
    let partial = job.partial.clone();
    let file = job.file.clone();
    let commit = ctx.plan_commit.clone();
    let installed =
        tokio::task::spawn_blocking(move || target.install(&partial, &file, &commit)).await;
    let local = match installed {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            return Outcome::Fatal(host_error(
                ErrorKind::IO,
                format!("cannot install {}: {e}", job.path),
            ));
        }
        Err(e) => {
            return Outcome::Fatal(host_error(
                ErrorKind::IO,
                format!("install task failed: {e}"),
            ));
        }
    };
    // A backend's own figure wins; 0 means unknown except from a local (directory) backend.
    let is_local = ctx
        .backends
        .iter()
        .find(|b| b.name() == backend)
        .is_some_and(|b| b.capabilities().features.contains(Features::LOCAL));
    let local_bytes = hubget_plugin_api::protocol::local_bytes(done.extra_json.as_str());
    let network = if done.bytes_transferred > 0 || is_local || local_bytes > 0 {
        done.bytes_transferred
    } else {
        track.map_or(0, |t| t.network.load(Ordering::Relaxed))
    };
    Outcome::Done(FileReport {
        reused_from: None,
        local_bytes,
        path: job.path.clone(),
        backend: backend.to_owned(),
        source: done.source.to_string(),
        bytes: job.file.size,
        bytes_transferred: job.transferred + network,
        sha256: digests.sha256,
        secs: job.started.map_or(0.0, |s| s.elapsed().as_secs_f64()),
        local_path: local,
    })
}
