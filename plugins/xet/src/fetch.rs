//! Fetching the parts of a batch's Xet files that are not on disk, straight from the CAS, the
//! way xet-core asks for them:
//! - **few reconstruction queries**: a file whose whole-file reconstruction is already known
//!   (the reuse planner asked for it) asks none; otherwise one per window, the windows growing
//!   as xet-core's do ([`windows`]: the first [`Tuning::window`] bytes, then twice that, then
//!   32 times that, i.e. 256 MiB, 512 MiB, 8 GiB by default), the next window asked while the
//!   current one downloads;
//! - **every fetch range downloaded once**: the terms of a window are grouped by the xorb range
//!   that holds their chunks (the spec's range coalescing: several terms, even far apart in the
//!   file, may use one range), each group is one GET, decoded once and written to every term it
//!   serves ([`crate::cas::RangeWriter`]), and read to its end;
//! - the groups are fetched in parallel, as many at a time as the plugin's adaptive
//!   concurrency allows ([`crate::concurrency`]: shared by every call, bounded by
//!   `parallel_segments`).
//!
//! Each term written is a span of the file, written in order, so:
//! - the requests are this plugin's: how many, in what order, over the host's network stack;
//! - memory in flight is about one feed buffer and one decoded chunk per range, whatever the
//!   file size or the data's compression ratio;
//! - what is written is known to the byte: `BYTES` (file bytes and wire bytes), `CHECKPOINT`
//!   (the contiguous prefix), and `RANGE_WRITTEN` for the written part of every span past it,
//!   so a kill loses at most the last poll's bytes.
//!
//! A failed range is retried (hub-http's policy, `RETRY` events), its terms resuming from the
//! bytes they reached; after a 403 (expired presigned URL) the file bytes its terms cover are
//! asked again for a fresh URL. The host's sha256 check after `fetch` is the guard on content;
//! here each term's decoded length is checked against the CAS's word.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubget_hub_http::reqwest::header::{HeaderValue, RANGE};
use hubget_hub_http::{Request, cancellable, with_retry};
use hubget_plugin_api::protocol::{RangeWritten, RetryNote};
use hubget_plugin_api::{
    CancelToken, ErrorKind, EventKind, FileDone, PluginError, Progress, ProgressEvent,
};

use crate::cas::{Cas, FeedError, FetchInfo, RangeWriter, Reconstruction, Target};
use crate::concurrency::Concurrency;
use crate::error::Error;

/// How often progress is reported and the cancel token polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Raw xorb bytes gathered before they are decoded and written (on a blocking thread).
const FEED_BYTES: usize = 512 * 1024;

/// Bytes of a range left unread after its last wanted chunk that are read anyway (the
/// connection is kept); past that, the connection is dropped.
const DRAIN_BYTES: u64 = 256 * 1024;

/// A segment in flight is announced as `RANGE_WRITTEN` again once it grew by this much.
const ANNOUNCE_BYTES: u64 = 256 * 1024;

/// How files are asked and fetched: the first window, and the plugin's adaptive limit on
/// ranges in flight (shared by every call, so that concurrent calls of the host — one per large
/// file — together hold at most `parallel_segments` connections and feed buffers).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Bytes of a file the first reconstruction query covers ([`windows`]).
    pub window: u64,
    /// Ranges in flight over the plugin.
    pub concurrency: Arc<Concurrency>,
}

impl Tuning {
    /// A first window of `window` bytes, at most `parallel` ranges at a time.
    pub fn new(window: u64, parallel: usize) -> Self {
        Self {
            window: window.max(1),
            concurrency: Arc::new(Concurrency::new(parallel)),
        }
    }
}

/// One Xet file of the batch.
#[derive(Debug, Clone)]
pub struct Job {
    /// Index in the batch.
    pub index: u32,
    /// Xet file hash (validated).
    pub hash: String,
    /// File size.
    pub size: u64,
    /// The host's partial file.
    pub path: std::path::PathBuf,
    /// Bytes already on disk.
    pub offset: u64,
    /// The ranges to fetch (absolute, ascending, within `offset..size`); the rest of
    /// `offset..size` is on disk already (copied from local chunks, or written by an earlier
    /// run).
    pub fetch: Vec<std::ops::Range<u64>>,
    /// Bytes copied from chunks already on disk (reported as `local_bytes`).
    pub local: u64,
    /// The file's whole-file reconstruction when it was asked already (by the reuse planner, in
    /// this call): the download then asks none.
    pub known: Option<Arc<Reconstruction>>,
}

/// The default first window: xet-core asks 256 MiB first, then 512 MiB, then up to 8 GiB.
pub const WINDOW: u64 = 256 * 1024 * 1024;

/// The windows of a file past the second are this many first windows (8 GiB by default).
const LAST_WINDOW_FACTOR: u64 = 32;

/// A part of a file: already on disk (prefilled), or a term being written from its start.
struct Span {
    range: std::ops::Range<u64>,
    prefilled: bool,
    /// Bytes written from `range.start`.
    written: AtomicU64,
    /// The written length last reported as `RANGE_WRITTEN`.
    announced: AtomicU64,
}

/// The spans of one file after its offset: what is on disk already, and the terms being
/// fetched (added as their window's reconstruction is known), with the wire bytes of the file.
pub struct Segments {
    offset: u64,
    spans: Mutex<Vec<Arc<Span>>>,
    /// Bytes received from the CAS for this file.
    wire: AtomicU64,
}

impl Segments {
    /// The file from `offset` to `size` with `fetch` (ascending, within it) still to fetch: the
    /// gaps between those ranges are prefilled spans.
    fn plan(offset: u64, size: u64, fetch: &[std::ops::Range<u64>]) -> Self {
        let mut on_disk = Vec::new();
        let mut at = offset;
        for r in fetch {
            let start = r.start.max(at);
            if start > at {
                on_disk.push(at..start);
            }
            at = at.max(r.end.min(size));
        }
        if at < size {
            on_disk.push(at..size);
        }
        let spans = on_disk
            .into_iter()
            .map(|range| {
                Arc::new(Span {
                    written: AtomicU64::new(range.end - range.start),
                    announced: AtomicU64::new(0),
                    range,
                    prefilled: true,
                })
            })
            .collect();
        Self {
            offset,
            spans: Mutex::new(spans),
            wire: AtomicU64::new(0),
        }
    }

    /// A span to fetch.
    fn add(&self, range: std::ops::Range<u64>) -> Arc<Span> {
        let span = Arc::new(Span {
            range,
            prefilled: false,
            written: AtomicU64::new(0),
            announced: AtomicU64::new(0),
        });
        self.spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(span.clone());
        span
    }

    fn all(&self) -> Vec<Arc<Span>> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// (bytes written in the fetched spans, bytes of the contiguous prefix from the offset,
    /// prefilled spans counting as written).
    fn progress(&self) -> (u64, u64) {
        let spans = self.all();
        let mut total = 0u64;
        let mut done: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for s in &spans {
            let len = s.range.end - s.range.start;
            let w = s.written.load(Ordering::SeqCst).min(len);
            if !s.prefilled {
                total += w;
            }
            if w > 0 {
                done.push((s.range.start, s.range.start + w));
            }
        }
        done.sort_unstable();
        let mut reach = self.offset;
        for (a, b) in done {
            if a > reach {
                break;
            }
            reach = reach.max(b);
        }
        (total, reach - self.offset)
    }

    /// The written part of every span past `mark` that grew by [`ANNOUNCE_BYTES`] (or
    /// completed) since it was last returned: `span.start..span.start + written`.
    fn newly_written(&self, mark: u64) -> Vec<std::ops::Range<u64>> {
        let mut out = Vec::new();
        for s in self.all() {
            let len = s.range.end - s.range.start;
            let w = s.written.load(Ordering::SeqCst).min(len);
            let before = s.announced.load(Ordering::SeqCst);
            let grew = w > before && (w == len || w - before >= ANNOUNCE_BYTES);
            if grew && s.range.start + w > mark {
                s.announced.store(w, Ordering::SeqCst);
                out.push(s.range.start..s.range.start + w);
            }
        }
        out.sort_by_key(|r| r.start);
        out
    }
}

/// One job and what was reported of it.
struct Track {
    job: Job,
    segments: Arc<Segments>,
    /// File bytes (after `offset`) already reported as `BYTES`.
    reported: u64,
    /// Wire bytes already reported.
    wire_reported: u64,
    /// Contiguous bytes (after `offset`) already reported as `CHECKPOINT`.
    checkpointed: u64,
    result: Option<Result<u64, PluginError>>,
}

/// State shared by the download futures and the poller.
struct Shared {
    tracks: Mutex<Vec<Track>>,
}

impl Shared {
    fn set_result(&self, index: u32, result: Result<u64, PluginError>) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tracks.iter_mut().find(|t| t.job.index == index)
            && t.result.is_none()
        {
            t.result = Some(result);
        }
    }

    /// Reports what was written since the last call: `BYTES` (file and wire deltas), then
    /// `CHECKPOINT`, then `RANGE_WRITTEN` for what grew past the checkpoint.
    fn report(&self, progress: &Progress) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        for t in tracks.iter_mut() {
            let len = t.job.size - t.job.offset;
            let (written, prefix) = t.segments.progress();
            let delta = written.min(len).saturating_sub(t.reported);
            let wire = t.segments.wire.load(Ordering::SeqCst);
            let wire_delta = wire.saturating_sub(t.wire_reported);
            if delta > 0 || wire_delta > 0 {
                t.reported += delta;
                t.wire_reported = wire;
                progress.on_event(ProgressEvent::bytes(t.job.index, delta, wire_delta));
            }
            let prefix = prefix.min(len);
            if prefix > t.checkpointed {
                t.checkpointed = prefix;
                progress.on_event(ProgressEvent::checkpoint(
                    t.job.index,
                    t.job.offset + prefix,
                ));
            }
            for r in t.segments.newly_written(t.job.offset + t.checkpointed) {
                let written = RangeWritten {
                    start: r.start,
                    end: r.end,
                };
                progress.on_event(written.event(t.job.index));
            }
        }
    }
}

/// Resolves when `cancel` is set.
async fn cancelled(cancel: &CancelToken) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(POLL).await;
    }
}

/// Downloads what `jobs` lack from the CAS; one result per job, as `(index, result)`.
pub async fn fetch(
    cas: &Cas,
    jobs: Vec<Job>,
    tuning: &Tuning,
    progress: &Progress,
    cancel: &CancelToken,
) -> Vec<(u32, Result<FileDone, PluginError>)> {
    let source = origin(cas.url());
    let tracks: Vec<Track> = jobs
        .iter()
        .map(|job| Track {
            job: job.clone(),
            segments: Arc::new(Segments::plan(job.offset, job.size, &job.fetch)),
            reported: 0,
            wire_reported: 0,
            checkpointed: 0,
            result: None,
        })
        .collect();
    let segments: Vec<Arc<Segments>> = tracks.iter().map(|t| t.segments.clone()).collect();
    let shared = Shared {
        tracks: Mutex::new(tracks),
    };
    for job in &jobs {
        progress.on_event(ProgressEvent::message(
            job.index,
            EventKind::STARTED,
            String::new(),
        ));
    }
    let work = futures_util::future::join_all(jobs.iter().zip(&segments).map(|(job, segments)| {
        let shared = &shared;
        async move {
            let result = fetch_job(cas, job, segments, tuning, progress, cancel).await;
            shared.set_result(job.index, result);
        }
    }));
    let ticker = async {
        let mut interval = tokio::time::interval(POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            shared.report(progress);
            tuning.concurrency.tick(std::time::Instant::now());
        }
    };
    let was_cancelled = tokio::select! {
        biased;
        () = cancelled(cancel) => true,
        _ = work => false,
        () = ticker => false,
    };
    if was_cancelled {
        log::debug!("xet fetch cancelled by the host; its requests are dropped");
    }
    shared.report(progress);

    let tracks = shared
        .tracks
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    tracks
        .into_iter()
        .map(|t| {
            let result = match t.result {
                Some(Ok(_)) => {
                    let extra = serde_json::json!({
                        "via": "xet-cas",
                        "offset": t.job.offset,
                        (hubget_plugin_api::protocol::LOCAL_BYTES): t.job.local,
                    });
                    let wire = t.segments.wire.load(Ordering::SeqCst);
                    Ok(FileDone::new(wire, source.as_str()).with_extra(&extra))
                }
                Some(Err(e)) => Err(e),
                None if was_cancelled => Err(PluginError::cancelled()),
                None => Err(PluginError::new(
                    ErrorKind::OTHER,
                    "the xet download ended without a result",
                )),
            };
            (t.job.index, result)
        })
        .collect()
}

/// The `scheme://host[:port]` of a URL, for reports.
fn origin(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    url[..end].to_owned()
}

fn context(job: &Job) -> String {
    format!("xet download of {} ({} bytes)", job.hash, job.size)
}

/// Fetches what one job lacks: from its known whole-file reconstruction, or window by window
/// (one reconstruction query each), each window's fetch ranges in parallel, each downloaded
/// once for every term it serves. The first failed range fails the file and stops its other
/// ranges. Returns the file bytes written.
///
/// A job queues for at most `parallel_segments` permits at a time, so that the permits' FIFO
/// queue interleaves the files of concurrent calls: every file makes progress (the host's stall
/// watchdog watches each call), none waits for all of another's ranges.
async fn fetch_job(
    cas: &Cas,
    job: &Job,
    segments: &Segments,
    tuning: &Tuning,
    progress: &Progress,
    cancel: &CancelToken,
) -> Result<u64, PluginError> {
    use futures_util::stream::{StreamExt, TryStreamExt};
    if job.offset >= job.size || job.fetch.is_empty() {
        return Ok(0);
    }
    let io = |source| -> PluginError {
        Error::Write {
            path: job.path.display().to_string(),
            source,
        }
        .into()
    };
    let path = job.path.clone();
    let file =
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(path))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
    let file = Arc::new(file);
    let policy = cas.client().retry_policy();
    let concurrency = &*tuning.concurrency;
    let on_retry = |e: &PluginError, n: u32, wait: Duration| {
        log::info!("{}: {}; retrying in {wait:?}", context(job), e.message);
        concurrency.on_trouble(std::time::Instant::now());
        let note = RetryNote::new(e.message.as_str(), wait, n + 1, policy.max_attempts);
        progress.on_event(note.event(job.index));
    };
    // What to ask: the terms wholly missing from the known whole-file answer (no query), the
    // rest in windows (one query each, trimmed by the CAS to the bytes missing).
    let (from_known, to_ask) = match &job.known {
        Some(rec) => split_by_terms(job, rec),
        None => (Vec::new(), clamped(job)),
    };
    let mut asked: Vec<Ask> = Vec::new();
    if let (Some(rec), false) = (&job.known, from_known.is_empty()) {
        asked.push(Ask {
            piece: 0..job.size,
            known: Some(rec.clone()),
            fetch: from_known,
        });
    }
    asked.extend(windows(&to_ask, tuning.window).into_iter().map(|w| Ask {
        piece: w,
        known: None,
        fetch: to_ask.clone(),
    }));
    let units = futures_util::stream::iter(asked)
        .then(|ask| async move {
            let rec = match ask.known {
                Some(rec) => rec,
                None => Arc::new(
                    with_retry(policy, cancel, on_retry, |_| {
                        cas.reconstruction(&job.hash, Some(ask.piece.clone()), cancel)
                    })
                    .await?,
                ),
            };
            let units = plan_units(job, &ask.fetch, ask.piece, &rec, segments)?;
            let units: Vec<_> = units
                .into_iter()
                .map(|unit| Ok((unit, concurrency.enqueue())))
                .collect();
            Ok::<_, PluginError>(futures_util::stream::iter(units))
        })
        .try_flatten()
        .map_ok(|(unit, queued)| {
            let file = file.clone();
            async move {
                let _permit = concurrency
                    .acquire()
                    .await
                    .map_err(|_| PluginError::cancelled())?;
                drop(queued);
                with_retry(policy, cancel, on_retry, |_| {
                    fetch_unit(cas, job, &unit, &file, &segments.wire, concurrency, cancel)
                })
                .await
            }
        })
        .try_buffer_unordered(concurrency.max());
    let written: Vec<u64> = units.try_collect().await.map_err(|mut e: PluginError| {
        e.message = crate::error::redact(&e.message).into();
        e.context(context(job))
    })?;
    let (_, prefix) = segments.progress();
    if job.offset + prefix < job.size {
        return Err(PluginError::new(
            ErrorKind::PROTOCOL,
            format!(
                "{}: the reconstruction left bytes from {} unwritten",
                context(job),
                job.offset + prefix
            ),
        ));
    }
    Ok(written.iter().sum())
}

/// One answer to plan units from: the bytes it covers, the answer when it is known already,
/// and the ranges (absolute) to take from it.
struct Ask {
    piece: std::ops::Range<u64>,
    known: Option<Arc<Reconstruction>>,
    fetch: Vec<std::ops::Range<u64>>,
}

/// `job`'s ranges to fetch, within `offset..size`.
fn clamped(job: &Job) -> Vec<std::ops::Range<u64>> {
    job.fetch
        .iter()
        .map(|r| r.start.max(job.offset)..r.end.min(job.size))
        .filter(|r| r.start < r.end)
        .collect()
}

/// Splits what `job` lacks by the terms of its whole-file answer `rec`: the terms missing
/// whole come from `rec` (no query); the missing parts of terms partly on disk (a resume's
/// offset, chunks copied from other files) are asked on their own, so the CAS trims the answer
/// to them and nothing on disk crosses the wire again. Returns both, merged.
fn split_by_terms(
    job: &Job,
    rec: &Reconstruction,
) -> (Vec<std::ops::Range<u64>>, Vec<std::ops::Range<u64>>) {
    let missing = clamped(job);
    let (mut whole, mut partial) = (Vec::new(), Vec::new());
    let mut start = 0u64;
    for term in &rec.terms {
        let end = start.saturating_add(term.unpacked_length);
        let parts: Vec<std::ops::Range<u64>> = missing
            .iter()
            .map(|r| r.start.max(start)..r.end.min(end))
            .filter(|r| r.start < r.end)
            .collect();
        let n: u64 = parts.iter().map(|r| r.end - r.start).sum();
        if n == end - start && n > 0 {
            whole.push(start..end);
        } else {
            partial.extend(parts);
        }
        start = end;
    }
    // Bytes past the answer's terms (an answer that lies about the size) are asked.
    partial.extend(
        missing
            .iter()
            .map(|r| r.start.max(start)..r.end)
            .filter(|r| r.start < r.end),
    );
    (
        hubget_plugin_api::protocol::merge_ranges(whole),
        hubget_plugin_api::protocol::merge_ranges(partial),
    )
}

/// The parts of `ranges` to ask the CAS about, one reconstruction query each, as xet-core
/// asks them: within each range, a window of `first` bytes, then one of twice that, then
/// windows of [`LAST_WINDOW_FACTOR`] times that. Bytes between the ranges (on disk already) are
/// not asked. The ranges of a window are fetched in parallel, so a window is as parallel as it
/// has xorb ranges.
fn windows(ranges: &[std::ops::Range<u64>], first: u64) -> Vec<std::ops::Range<u64>> {
    let mut out = Vec::new();
    let mut n = 0;
    for r in ranges {
        let mut at = r.start;
        while at < r.end {
            let len = match n {
                0 => first,
                1 => first.saturating_mul(2),
                _ => first.saturating_mul(LAST_WINDOW_FACTOR),
            };
            let next = at.saturating_add(len).min(r.end);
            out.push(at..next);
            (at, n) = (next, n + 1);
        }
    }
    out
}

/// One fetch range of a window and the terms it serves (each a span of the file).
struct Unit {
    /// The file bytes its terms cover (asked again for a fresh URL after a 403).
    covers: std::ops::Range<u64>,
    /// The xorb the range belongs to.
    xorb: String,
    /// The range and its presigned URL (renewed after a 403).
    source: Mutex<FetchInfo>,
    /// Per term: its chunks and decoded length, where it starts in the file, and its span.
    terms: Vec<(crate::cas::WireTerm, u64, Arc<Span>)>,
}

/// Groups the terms of `piece`'s reconstruction that cover bytes of `fetch` by the fetch range
/// holding their chunks; each term's needed part becomes a span of `segments`. `piece` is the
/// range asked (the whole file for a known whole-file reconstruction).
fn plan_units(
    job: &Job,
    fetch: &[std::ops::Range<u64>],
    piece: std::ops::Range<u64>,
    rec: &Reconstruction,
    segments: &Segments,
) -> Result<Vec<Unit>, PluginError> {
    let bytes = piece;
    let lo = bytes.start.max(job.offset);
    // Terms tile the window from its start less the part of the first term before it (a CAS
    // may trim coarsely: several chunks before the start).
    let mut term_start = bytes
        .start
        .checked_sub(rec.offset_into_first_range)
        .ok_or_else(|| {
            PluginError::new(
                ErrorKind::PROTOCOL,
                format!(
                    "the reconstruction's first term starts {} bytes before byte {}",
                    rec.offset_into_first_range, bytes.start
                ),
            )
        })?;
    let mut units: Vec<Unit> = Vec::new();
    for term in &rec.terms {
        let term_end = term_start.saturating_add(term.unpacked_length);
        let (a, b) = (term_start.max(lo), term_end.min(bytes.end));
        // The part of a..b still to fetch: from the first byte to fetch to the last.
        let needed = fetch.iter().filter(|r| r.start < b && a < r.end).fold(
            None,
            |acc: Option<(u64, u64)>, r| {
                let (s, e) = (r.start.max(a), r.end.min(b));
                Some(acc.map_or((s, e), |(x, y)| (x.min(s), y.max(e))))
            },
        );
        if let Some((from, to)) = needed.filter(|(x, y)| x < y) {
            let source = rec.source_of(term).ok_or_else(|| {
                PluginError::new(
                    ErrorKind::PROTOCOL,
                    format!(
                        "the reconstruction names no fetch range for chunks {}..{} of xorb {}",
                        term.range.start, term.range.end, term.hash
                    ),
                )
            })?;
            let span = segments.add(from..to);
            let entry = (term.clone(), term_start, span);
            match units.iter_mut().find(|u| {
                let theirs = u.source.lock().unwrap_or_else(|e| e.into_inner());
                u.xorb == term.hash
                    && theirs.range == source.range
                    && theirs.url_range == source.url_range
            }) {
                Some(u) => {
                    u.covers = u.covers.start.min(term_start)..u.covers.end.max(term_end);
                    u.terms.push(entry);
                }
                None => units.push(Unit {
                    covers: term_start..term_end,
                    xorb: term.hash.clone(),
                    source: Mutex::new(source.clone()),
                    terms: vec![entry],
                }),
            }
        }
        term_start = term_end;
    }
    if term_start < bytes.end {
        return Err(PluginError::new(
            ErrorKind::PROTOCOL,
            format!(
                "the reconstruction of bytes {}..{} ends at {term_start}",
                bytes.start, bytes.end
            ),
        ));
    }
    Ok(units)
}

/// Downloads one fetch range and writes what its terms still lack; returns the file bytes
/// written. After a 403 (an expired presigned URL), the window is asked again for a fresh URL
/// for the same range before the retry.
async fn fetch_unit(
    cas: &Cas,
    job: &Job,
    unit: &Unit,
    file: &Arc<std::fs::File>,
    wire: &AtomicU64,
    concurrency: &Concurrency,
    cancel: &CancelToken,
) -> Result<u64, PluginError> {
    let targets: Vec<Target> = unit
        .terms
        .iter()
        .map(|(term, start, span)| {
            let pos = span.range.start + span.written.load(Ordering::SeqCst);
            Target::new(term, pos - start, pos, span.range.end)
        })
        .collect();
    let before: u64 = unit
        .terms
        .iter()
        .map(|(_, _, s)| s.written.load(Ordering::SeqCst))
        .sum();
    let source = unit
        .source
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let writer = RangeWriter::serving(&source, targets);
    let spans: Vec<Arc<Span>> = unit.terms.iter().map(|(_, _, s)| s.clone()).collect();
    let sink = RangeSink {
        file: file.clone(),
        spans: &spans,
        wire,
        concurrency,
    };
    match fetch_range(cas, &source, writer, &sink, cancel).await {
        Ok(()) => {}
        Err(e) => {
            if e.http_status == 403 {
                refresh_url(cas, job, unit, cancel).await;
            }
            return Err(e);
        }
    }
    let after: u64 = spans.iter().map(|s| s.written.load(Ordering::SeqCst)).sum();
    Ok(after - before)
}

/// Asks again for the file bytes `unit`'s terms cover and takes the fresh URL of a fetch range
/// of the same xorb holding all of their chunks, if the answer has one (otherwise the retry uses
/// the old one and fails again as it must).
async fn refresh_url(cas: &Cas, job: &Job, unit: &Unit, cancel: &CancelToken) {
    let Ok(rec) = cas
        .reconstruction(&job.hash, Some(unit.covers.clone()), cancel)
        .await
    else {
        return;
    };
    let (first, last) = unit.terms.iter().fold((u32::MAX, 0), |(a, b), (t, _, _)| {
        (a.min(t.range.start), b.max(t.range.end))
    });
    let mut source = unit.source.lock().unwrap_or_else(|e| e.into_inner());
    let fresh = rec.fetch_info.get(&unit.xorb).and_then(|infos| {
        infos
            .iter()
            .filter(|f| f.range.start <= first && last <= f.range.end)
            .min_by_key(|f| f.range.end - f.range.start)
    });
    if let Some(f) = fresh {
        *source = f.clone();
    }
}

/// Where one range's bytes go and are counted: the file, and the span of each term served.
struct RangeSink<'a> {
    file: Arc<std::fs::File>,
    spans: &'a [Arc<Span>],
    wire: &'a AtomicU64,
    /// Told of every byte received and every rate-limit wait.
    concurrency: &'a Concurrency,
}

/// Fetches one xorb range and writes its decoded bytes to every term `writer` serves.
async fn fetch_range(
    cas: &Cas,
    source: &FetchInfo,
    mut writer: RangeWriter,
    sink: &RangeSink<'_>,
    cancel: &CancelToken,
) -> Result<(), PluginError> {
    if writer.done() {
        return Ok(());
    }
    let url = hubget_hub_http::reqwest::Url::parse(&source.url).map_err(|e| {
        PluginError::new(
            ErrorKind::PROTOCOL,
            format!("bad xorb URL in the reconstruction: {e}"),
        )
    })?;
    let range = format!("bytes={}-{}", source.url_range.start, source.url_range.end);
    let request = Request::get(url).header(RANGE, HeaderValue::from_str(&range).expect("ASCII"));
    let meter = sink.concurrency;
    let on_wait = |note: &hubget_plugin_api::protocol::RateLimitNote| {
        hubget_hub_http::quota::log_wait(note);
        meter.on_trouble(std::time::Instant::now());
    };
    let answer = cas
        .client()
        .send_observed(&request, cancel, &on_wait)
        .await?;
    let context = answer.context();
    let status = answer.response.status();
    if !matches!(status.as_u16(), 200 | 206) {
        let error = hubget_hub_http::classify(status, answer.response.headers(), &context);
        // A presigned URL expired: the retry asks for new ones.
        return Err(if status.as_u16() == 403 {
            error.retryable(true)
        } else {
            error
        });
    }
    let Some(wanted) = source
        .url_range
        .end
        .checked_sub(source.url_range.start)
        .and_then(|n| n.checked_add(1))
    else {
        return Err(PluginError::new(
            ErrorKind::PROTOCOL,
            format!(
                "{context}: the reconstruction names bytes {}-{}, an empty range",
                source.url_range.start, source.url_range.end
            ),
        ));
    };
    // A 200 is the range itself when its length says so (Xet's own CAS answers V1 terms that
    // way); otherwise the server ignored `Range` and sent the whole object: skip to the range.
    let declared = answer.response.content_length();
    // A 206 is exactly the range asked for: a body of another declared length is refused before
    // it is read (and the bytes are counted against the range below).
    if status.as_u16() == 206
        && let Some(n) = declared.filter(|n| *n != wanted)
    {
        return Err(PluginError::new(
            ErrorKind::PROTOCOL,
            format!("{context}: the server declares {n} bytes for a range of {wanted}"),
        )
        .retryable(true));
    }
    let mut lead = match (status.as_u16(), declared) {
        (206, _) => 0,
        (_, Some(n)) if n == wanted => 0,
        _ => source.url_range.start,
    };
    let mut response = answer.response;
    let mut received = 0u64;
    let mut raw: Vec<u8> = Vec::with_capacity(FEED_BYTES + 64 * 1024);
    let corrupt = |e: FeedError| match e {
        FeedError::Corrupt(why) => {
            PluginError::new(ErrorKind::PROTOCOL, format!("{context}: {why}")).retryable(true)
        }
        // The same on every attempt: no retry, the host hands the file to the next backend.
        FeedError::Unsupported(why) => PluginError::new(
            ErrorKind::UNSUPPORTED,
            format!("{context}: {why}: this Xet file cannot be read here"),
        ),
        FeedError::Write(e) => PluginError::new(ErrorKind::IO, format!("writing: {e}")),
    };
    loop {
        let piece = cancellable(cancel, response.chunk())
            .await?
            .map_err(|e| hubget_hub_http::classify_transport(&e, &context))?;
        let end = piece.is_none();
        if let Some(p) = &piece {
            sink.wire.fetch_add(p.len() as u64, Ordering::SeqCst);
            meter.on_bytes(p.len() as u64);
            cas.client().throttle(p.len() as u64).await;
            let skip = lead.min(p.len() as u64);
            lead -= skip;
            let body = &p[skip as usize..];
            // Bytes of the range past its end are not the range's: refuse them.
            let room = wanted.saturating_sub(received);
            received += body.len() as u64;
            raw.extend_from_slice(&body[..body.len().min(room as usize)]);
            if received > wanted && status.as_u16() == 206 {
                return Err(PluginError::new(
                    ErrorKind::PROTOCOL,
                    format!("{context}: the server sent more than the {wanted} bytes asked for"),
                )
                .retryable(true));
            }
        }
        if raw.len() >= FEED_BYTES || (end && !raw.is_empty()) {
            let (file, mut data) = (sink.file.clone(), std::mem::take(&mut raw));
            let (w, buf, r) = tokio::task::spawn_blocking(move || {
                let r = writer.feed(&mut data, &mut |at, bytes| write_all_at(&file, bytes, at));
                (writer, data, r)
            })
            .await
            .map_err(|e| PluginError::new(ErrorKind::OTHER, format!("decoder thread: {e}")))?;
            (writer, raw) = (w, buf);
            for (t, span) in writer.targets().iter().zip(sink.spans) {
                let written = t.pos().saturating_sub(span.range.start);
                span.written.fetch_max(written, Ordering::SeqCst);
            }
            r.map_err(corrupt)?;
        }
        if end && writer.done() {
            return Ok(());
        }
        // Done before the body's end (a resumed term): the few bytes left are read so the
        // connection goes back to the pool; more than that, and it is cheaper to drop it.
        if writer.done() && wanted.saturating_sub(received) > DRAIN_BYTES {
            return Ok(());
        }
        if end {
            return Err(PluginError::new(
                ErrorKind::NETWORK,
                format!("{context}: the xorb range ended before its last chunk"),
            )
            .retryable(true));
        }
    }
}

/// Writes all of `buf` at offset `pos` of `file`.
fn write_all_at(file: &std::fs::File, buf: &[u8], pos: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
    }
    #[cfg(windows)]
    {
        let (mut buf, mut pos) = (buf, pos);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_write(file, buf, pos) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range plans read best as `&[a..b]`
mod tests {
    use super::*;

    #[test]
    fn spans_report_the_contiguous_prefix() {
        let s = Segments::plan(0, 10, &[0..10]);
        let spans: Vec<Arc<Span>> = [0..4, 4..8, 8..10].into_iter().map(|r| s.add(r)).collect();
        spans[1].written.store(4, Ordering::SeqCst);
        assert_eq!(s.progress(), (4, 0));
        spans[0].written.store(3, Ordering::SeqCst);
        assert_eq!(s.progress(), (7, 3));
        spans[0].written.store(4, Ordering::SeqCst);
        spans[2].written.store(1, Ordering::SeqCst);
        assert_eq!(s.progress(), (9, 9));
    }

    #[test]
    fn spans_on_disk_count_in_the_prefix_but_not_as_fetched_bytes() {
        // offset 2; 2..5 and 9..12 to fetch; 5..9 and 12..14 are on disk.
        let s = Segments::plan(2, 14, &[2..5, 9..12]);
        assert_eq!(s.progress(), (0, 0));
        let a = s.add(2..5);
        let b = s.add(9..12);
        a.written.store(3, Ordering::SeqCst);
        assert_eq!(
            s.progress(),
            (3, 7),
            "the prefix (from the offset) jumps over the copied span"
        );
        assert_eq!(s.newly_written(11), vec![12..14]);
        b.written.store(3, Ordering::SeqCst);
        assert_eq!(s.progress(), (6, 12));
        assert!(
            s.newly_written(2).iter().all(|r| r.start < 12),
            "each span once"
        );
    }

    #[test]
    fn a_span_in_flight_is_announced_as_it_grows() {
        let m = ANNOUNCE_BYTES;
        let s = Segments::plan(0, 8 * m, &[0..8 * m]);
        let _first = s.add(0..4 * m);
        let second = s.add(4 * m..8 * m);
        second.written.store(m / 2, Ordering::SeqCst);
        assert!(s.newly_written(0).is_empty(), "less than ANNOUNCE_BYTES");
        second.written.store(m + 1, Ordering::SeqCst);
        assert_eq!(s.newly_written(0), vec![4 * m..5 * m + 1]);
        assert!(s.newly_written(0).is_empty(), "not again until it grows");
        second.written.store(4 * m, Ordering::SeqCst);
        assert_eq!(s.newly_written(0), vec![4 * m..8 * m], "complete");
    }

    #[test]
    fn windows_grow_as_xet_core_asks_and_skip_what_is_on_disk() {
        let mib = 1024 * 1024;
        // Below the first window: the whole range in one query.
        assert_eq!(windows(&[0..10], WINDOW), [0..10]);
        assert_eq!(windows(&[0..200 * mib], WINDOW), [0..200 * mib]);
        // 1 GiB: 256 MiB, 512 MiB, and the rest (xet-core's first blocks): three queries.
        let gib = 1024 * mib;
        assert_eq!(
            windows(&[0..gib], WINDOW),
            [0..WINDOW, WINDOW..3 * WINDOW, 3 * WINDOW..gib]
        );
        // 20 GiB: then 8 GiB windows.
        let w = windows(&[0..20 * gib], WINDOW);
        assert_eq!(w.len(), 5, "{w:?}");
        assert_eq!(w[2], 3 * WINDOW..3 * WINDOW + 8 * gib);
        // Only the missing bytes are asked.
        assert_eq!(
            windows(&[5 * mib..6 * mib, 7 * mib..8 * mib], WINDOW),
            [5 * mib..6 * mib, 7 * mib..8 * mib]
        );
        assert_eq!(
            windows(&[0..3 * mib, 9 * mib..10 * mib], mib),
            [0..mib, mib..3 * mib, 9 * mib..10 * mib]
        );
    }

    #[test]
    fn a_known_answer_serves_the_terms_missing_whole_and_the_rest_is_asked() {
        let rec = Reconstruction::parse(
            br#"{"offset_into_first_range": 0, "terms": [
                {"hash": "a", "unpacked_length": 10, "range": {"start": 0, "end": 2}},
                {"hash": "a", "unpacked_length": 10, "range": {"start": 2, "end": 4}},
                {"hash": "b", "unpacked_length": 10, "range": {"start": 0, "end": 1}}],
                "fetch_info": {}}"#,
        )
        .unwrap();
        let job = |offset, fetch: Vec<std::ops::Range<u64>>| Job {
            index: 0,
            hash: String::new(),
            size: 30,
            path: std::path::PathBuf::new(),
            offset,
            fetch,
            local: 0,
            known: None,
        };
        // Fetched whole: everything from the answer, nothing asked.
        assert_eq!(
            split_by_terms(&job(0, vec![0..30]), &rec),
            (vec![0..30], vec![])
        );
        // The second term copied from disk: the others from the answer.
        assert_eq!(
            split_by_terms(&job(0, vec![0..10, 20..30]), &rec),
            (vec![0..10, 20..30], vec![])
        );
        // Resumed at 15: the rest of the second term is asked, the third comes from the answer.
        assert_eq!(
            split_by_terms(&job(15, vec![15..30]), &rec),
            (vec![20..30], vec![15..20])
        );
    }

    #[test]
    fn origin_drops_path_and_query() {
        assert_eq!(origin("http://127.0.0.1:5/v1/x?t=1"), "http://127.0.0.1:5");
        assert_eq!(origin("https://cas.example"), "https://cas.example");
    }
}
