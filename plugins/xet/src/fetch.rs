//! Downloading a batch of Xet files with hf-xet's session API.
//!
//! * Small files starting at offset 0 (at most two segments) go into one
//!   [`XetFileDownloadGroup`]: hf-xet reconstructs each straight into the host's partial file
//!   (`download_file_to_path`), with its sequential writer and exact network counters.
//! * Everything else (large files, and files the host resumes at an offset) goes into one
//!   [`XetDownloadStreamGroup`], split into segments of [`Tuning::segment`] bytes: each segment
//!   is an ordered ranged stream written at its own offset, [`Tuning::parallel`] at a time.
//!
//! Why segments: hf-xet fetches one HTTP range per reconstruction term, and for a whole file a
//! term is often a whole xorb (up to 64 MiB), so a 256 MiB file is 4-5 requests, each held in
//! memory until written. Ranged streams restrict terms to their range: more, smaller requests in
//! parallel (throughput on links capped per connection), less memory in flight, and finer
//! checkpoints.
//!
//! A poller turns what was written into `BYTES` deltas and absolute `CHECKPOINT`s (the contiguous
//! prefix: the low watermark of the segments) every [`POLL`]. The same loop watches the host's
//! cancel token and aborts both groups when it is set.
//!
//! hf-xet verifies no hash on download (a corrupt xorb range lands silently); the host's sha256
//! check after `fetch` is the guard, so nothing here claims more than "written".

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use hubget_plugin_api::protocol::RangeWritten;
use hubget_plugin_api::std_types::RString;
use hubget_plugin_api::{CancelToken, EventKind, FileDone, PluginError, Progress, ProgressEvent};
use xet::xet_session::{
    HeaderMap, XetDownloadStreamGroup, XetFileDownload, XetFileDownloadGroup, XetFileInfo,
    XetSession,
};

use crate::error::{self, Error};

/// How often progress is reported and the cancel token polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Where and how to reach the CAS for one batch.
#[derive(Clone)]
pub struct CasAccess {
    /// CAS base URL.
    pub cas_url: String,
    /// CAS bearer token.
    pub access_token: String,
    /// Its expiry, Unix seconds.
    pub exp: u64,
    /// The Hub's xet-read-token URL, for hf-xet's refresher (None: no refresh).
    pub refresh_url: Option<String>,
    /// Headers for the refresh request (the Hub `Authorization`, `User-Agent`).
    pub refresh_headers: HeaderMap,
}

impl std::fmt::Debug for CasAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CasAccess")
            .field("cas_url", &self.cas_url)
            .field("exp", &self.exp)
            .finish_non_exhaustive()
    }
}

/// At most this many segments per file (each is one reconstruction request): larger files get
/// larger segments.
pub const MAX_SEGMENTS_PER_FILE: u64 = 512;

/// How files are split and fetched.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Segment size for ranged streams, bytes.
    pub segment: u64,
    /// Segments fetched at the same time (over the whole batch).
    pub parallel: usize,
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
    pub path: PathBuf,
    /// Bytes already on disk.
    pub offset: u64,
    /// The ranges to fetch (absolute, ascending, within `offset..size`); the rest of
    /// `offset..size` is on disk already (copied from local chunks, or written by an earlier
    /// run).
    pub fetch: Vec<std::ops::Range<u64>>,
    /// Bytes copied from chunks already on disk (reported as `local_bytes`).
    pub local: u64,
}

impl Job {
    /// Whether the whole file from byte 0 is to be fetched.
    fn whole(&self) -> bool {
        self.offset == 0 && self.fetch.len() == 1 && self.fetch[0] == (0..self.size)
    }
}

/// How the written-bytes count of one job is read.
enum Meter {
    /// Not started yet.
    Pending,
    /// A file-group download: hf-xet's per-file `bytes_completed`.
    File(XetFileDownload),
    /// Segmented streams written by this module.
    Segments(Arc<Segments>),
}

/// The spans of one file after its offset, in order: segments to fetch (each one ranged
/// stream) and spans already on disk, with the bytes written in each.
pub struct Segments {
    spans: Vec<std::ops::Range<u64>>,
    prefilled: Vec<bool>,
    written: Vec<AtomicU64>,
    /// Whether the span was reported as `RANGE_WRITTEN`.
    announced: Vec<std::sync::atomic::AtomicBool>,
}

impl Segments {
    /// `fetch` (within `offset..size`) split into segments of at most `segment` bytes; the gaps
    /// between them are prefilled spans.
    fn plan(offset: u64, size: u64, fetch: &[std::ops::Range<u64>], segment: u64) -> Self {
        let mut spans = Vec::new();
        let mut prefilled = Vec::new();
        let mut at = offset;
        let segment = segment.max(1);
        for r in fetch {
            let (start, end) = (r.start.max(at), r.end.min(size));
            if start >= end {
                continue;
            }
            if start > at {
                spans.push(at..start);
                prefilled.push(true);
            }
            let mut s = start;
            while s < end {
                let e = end.min(s + segment);
                spans.push(s..e);
                prefilled.push(false);
                s = e;
            }
            at = end;
        }
        if at < size {
            spans.push(at..size);
            prefilled.push(true);
        }
        let written = spans.iter().map(|_| AtomicU64::new(0)).collect();
        let announced = spans
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        Self {
            spans,
            prefilled,
            written,
            announced,
        }
    }

    /// (bytes written in the fetched spans, bytes of the contiguous prefix, prefilled spans
    /// counting as written).
    fn progress(&self) -> (u64, u64) {
        let mut total = 0;
        let mut prefix = 0;
        let mut contiguous = true;
        for ((span, w), pre) in self.spans.iter().zip(&self.written).zip(&self.prefilled) {
            let len = span.end - span.start;
            let w = if *pre {
                len
            } else {
                let w = w.load(Ordering::SeqCst).min(len);
                total += w;
                w
            };
            if contiguous {
                prefix += w;
                contiguous = w == len;
            }
        }
        (total, prefix)
    }

    /// Complete spans past `mark` not announced yet (each returned once).
    fn newly_complete(&self, mark: u64) -> Vec<std::ops::Range<u64>> {
        let mut out = Vec::new();
        for (i, span) in self.spans.iter().enumerate() {
            let len = span.end - span.start;
            let complete = self.prefilled[i] || self.written[i].load(Ordering::SeqCst) >= len;
            if complete && span.end > mark && !self.announced[i].swap(true, Ordering::SeqCst) {
                out.push(span.clone());
            }
        }
        out
    }
}

struct Track {
    job: Job,
    meter: Meter,
    in_file_group: bool,
    /// Bytes (after `offset`) already reported as `BYTES`.
    reported: u64,
    /// Contiguous bytes (after `offset`) already reported as `CHECKPOINT`.
    checkpointed: u64,
    /// Network bytes attributed to this job.
    network: u64,
    result: Option<Result<u64, PluginError>>,
}

/// State shared by the download futures, the poller and the cancel path.
struct Shared {
    tracks: Mutex<Vec<Track>>,
    file_group: Mutex<Option<XetFileDownloadGroup>>,
    stream_group: Mutex<Option<XetDownloadStreamGroup>>,
    /// Group transfer bytes already attributed, and not yet attributed.
    net_seen: AtomicU64,
    net_pending: AtomicU64,
}

impl Shared {
    fn with_track<R>(&self, index: u32, f: impl FnOnce(&mut Track) -> R) -> Option<R> {
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        tracks.iter_mut().find(|t| t.job.index == index).map(f)
    }

    fn set_result(&self, index: u32, result: Result<u64, PluginError>) {
        self.with_track(index, |t| {
            if t.result.is_none() {
                t.result = Some(result);
            }
        });
    }

    /// Reports what was written since the last call: `BYTES` deltas with attributed network
    /// bytes, then `CHECKPOINT`s.
    fn report(&self, progress: &Progress) {
        let group_net = self
            .file_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|g| g.progress().total_transfer_bytes_completed);
        if let Some(total) = group_net {
            let seen = self.net_seen.swap(total, Ordering::SeqCst);
            self.net_pending
                .fetch_add(total.saturating_sub(seen), Ordering::SeqCst);
        }

        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let mut deltas = Vec::with_capacity(tracks.len());
        let mut prefixes = Vec::with_capacity(tracks.len());
        for t in tracks.iter() {
            let (written, prefix) = match &t.meter {
                Meter::Pending => (0, 0),
                Meter::File(h) => {
                    let n = h.progress().map_or(0, |p| p.bytes_completed);
                    (n, n)
                }
                Meter::Segments(s) => s.progress(),
            };
            let len = t.job.size - t.job.offset;
            deltas.push(written.min(len).saturating_sub(t.reported));
            prefixes.push(prefix.min(len));
        }
        // hf-xet writes a file term by term (a term can be a whole 64 MiB xorb), but counts
        // network bytes as they arrive, for the whole group. Share them among the group's files:
        // by the bytes each wrote this tick, else (nothing written yet) by the bytes each still
        // lacks. A `BYTES` event with only network bytes keeps the host's stall watchdog fed
        // while a large term is in flight.
        let len = |t: &Track| t.job.size - t.job.offset;
        let group_written: u64 = tracks
            .iter()
            .zip(&deltas)
            .filter(|(t, _)| t.in_file_group)
            .map(|(_, d)| *d)
            .sum();
        let weights: Vec<u64> = tracks
            .iter()
            .zip(&deltas)
            .map(|(t, d)| {
                let active = t.result.is_none() && matches!(t.meter, Meter::File(_));
                match () {
                    _ if !t.in_file_group => 0,
                    _ if group_written > 0 => *d,
                    _ if active => len(t).saturating_sub(t.reported),
                    _ => 0,
                }
            })
            .collect();
        let total_weight: u64 = weights.iter().sum();
        let pending = if total_weight > 0 {
            self.net_pending.swap(0, Ordering::SeqCst)
        } else {
            0
        };
        let last = weights.iter().rposition(|w| *w > 0);
        let mut left = pending;
        for (i, (((t, delta), weight), prefix)) in tracks
            .iter_mut()
            .zip(deltas)
            .zip(weights)
            .zip(prefixes)
            .enumerate()
        {
            let net = if weight == 0 {
                0
            } else if Some(i) == last {
                left
            } else {
                ((pending as u128 * weight as u128) / total_weight as u128) as u64
            };
            let net = net.min(left);
            left -= net;
            if delta > 0 || net > 0 {
                t.reported += delta;
                t.network += net;
                progress.on_event(ProgressEvent::bytes(t.job.index, delta, net));
            }
            if prefix > t.checkpointed {
                t.checkpointed = prefix;
                progress.on_event(ProgressEvent::checkpoint(
                    t.job.index,
                    t.job.offset + prefix,
                ));
            }
            // Spans written past the checkpoint, so that a kill loses little (resume by ranges).
            if let Meter::Segments(s) = &t.meter {
                for r in s.newly_complete(t.job.offset + t.checkpointed) {
                    let written = RangeWritten {
                        start: r.start,
                        end: r.end,
                    };
                    progress.on_event(written.event(t.job.index));
                }
            }
        }
    }

    fn abort(&self) {
        if let Some(g) = self
            .file_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && let Err(e) = g.abort()
        {
            log::debug!("aborting the xet file group: {e}");
        }
        if let Some(g) = self
            .stream_group
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && let Err(e) = g.abort()
        {
            log::debug!("aborting the xet stream group: {e}");
        }
    }
}

/// Resolves when `cancel` is set.
async fn cancelled(cancel: &CancelToken) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(POLL).await;
    }
}

/// Downloads `jobs` through the CAS; one result per job, as `(index, result)`.
pub async fn fetch(
    session: &XetSession,
    access: &CasAccess,
    jobs: Vec<Job>,
    tuning: Tuning,
    progress: &Progress,
    cancel: &CancelToken,
) -> Vec<(u32, Result<FileDone, PluginError>)> {
    let source = origin(&access.cas_url);
    let in_file_group = |j: &Job| j.whole() && j.size <= 2 * tuning.segment;
    let shared = Shared {
        tracks: Mutex::new(
            jobs.iter()
                .map(|job| Track {
                    job: job.clone(),
                    meter: Meter::Pending,
                    in_file_group: in_file_group(job),
                    reported: 0,
                    checkpointed: 0,
                    network: 0,
                    result: None,
                })
                .collect(),
        ),
        file_group: Mutex::new(None),
        stream_group: Mutex::new(None),
        net_seen: AtomicU64::new(0),
        net_pending: AtomicU64::new(0),
    };
    for job in &jobs {
        progress.on_event(ProgressEvent::message(
            job.index,
            EventKind::STARTED,
            String::new(),
        ));
        if job.offset >= job.size || job.fetch.is_empty() {
            shared.set_result(job.index, Ok(0));
        }
    }
    let (small, segmented): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .filter(|j| j.offset < j.size && !j.fetch.is_empty())
        .partition(|j| in_file_group(j));

    let work = async {
        tokio::join!(
            fetch_small(session, access, small, &shared),
            fetch_segmented(session, access, segmented, tuning, &shared),
        )
    };
    let ticker = async {
        let mut interval = tokio::time::interval(POLL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            shared.report(progress);
        }
    };
    let was_cancelled = tokio::select! {
        biased;
        () = cancelled(cancel) => true,
        _ = work => false,
        () = ticker => false,
    };
    if was_cancelled {
        log::debug!("xet fetch cancelled by the host; aborting the download groups");
        shared.abort();
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
                Some(Ok(written)) => {
                    let stream = !t.in_file_group;
                    Ok(FileDone {
                        // The stream API exposes no network counter: report what was written.
                        bytes_transferred: if stream { written } else { t.network },
                        source: RString::from(source.clone()),
                        extra_json: RString::from(
                            serde_json::json!({
                                "via": if stream { "xet-segments" } else { "xet-file-group" },
                                "offset": t.job.offset,
                                // Streams: bytes written. File group: its network bytes,
                                // shared among its files by the bytes each wrote.
                                "bytes_transferred": if stream { "written" } else { "group-share" },
                                (hubget_plugin_api::protocol::LOCAL_BYTES): t.job.local,
                            })
                            .to_string(),
                        ),
                    })
                }
                Some(Err(e)) => Err(e),
                None if was_cancelled => Err(PluginError::cancelled()),
                None => Err(PluginError::new(
                    hubget_plugin_api::ErrorKind::OTHER,
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

/// Builder options shared by both groups.
macro_rules! configure {
    ($builder:expr, $access:expr) => {{
        let b = $builder
            .with_endpoint($access.cas_url.clone())
            .with_token_info($access.access_token.clone(), $access.exp);
        match &$access.refresh_url {
            Some(url) => b.with_token_refresh_url(url.clone(), $access.refresh_headers.clone()),
            None => b,
        }
    }};
}

async fn fetch_small(session: &XetSession, access: &CasAccess, jobs: Vec<Job>, shared: &Shared) {
    if jobs.is_empty() {
        return;
    }
    let built = match session.new_file_download_group() {
        Ok(builder) => configure!(builder, access).build().await,
        Err(e) => Err(e),
    };
    let group = match built {
        Ok(g) => g,
        Err(e) => {
            for job in &jobs {
                shared.set_result(job.index, Err(error::from_xet(&context(job), &e)));
            }
            return;
        }
    };
    *shared.file_group.lock().unwrap_or_else(|e| e.into_inner()) = Some(group.clone());

    let mut started = Vec::with_capacity(jobs.len());
    for job in jobs {
        let info = XetFileInfo::new(job.hash.clone(), job.size);
        match group.download_file_to_path(info, job.path.clone()).await {
            Ok(handle) => {
                shared.with_track(job.index, |t| t.meter = Meter::File(handle.clone()));
                started.push((job, handle));
            }
            Err(e) => shared.set_result(job.index, Err(error::from_xet(&context(&job), &e))),
        }
    }
    join_all(started.into_iter().map(|(job, handle)| async move {
        let result = match handle.finish().await {
            Ok(report) => match report.file_info.file_size {
                Some(n) if n == job.size => Ok(n),
                got => Err(Error::Length {
                    path: job.path.display().to_string(),
                    got: got.unwrap_or(0),
                    expected: job.size,
                }
                .into()),
            },
            Err(e) => Err(error::from_xet(&context(&job), &e)),
        };
        shared.set_result(job.index, result);
    }))
    .await;
    // Per-file results are in; this only closes the group (its error repeats the first one).
    if let Err(e) = group.finish().await {
        log::debug!("closing the xet file group: {e}");
    }
}

async fn fetch_segmented(
    session: &XetSession,
    access: &CasAccess,
    jobs: Vec<Job>,
    tuning: Tuning,
    shared: &Shared,
) {
    if jobs.is_empty() {
        return;
    }
    let built = match session.new_download_stream_group() {
        Ok(builder) => configure!(builder, access).build().await,
        Err(e) => Err(e),
    };
    let group = match built {
        Ok(g) => g,
        Err(e) => {
            for job in &jobs {
                shared.set_result(job.index, Err(error::from_xet(&context(job), &e)));
            }
            return;
        }
    };
    *shared
        .stream_group
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(group.clone());
    let permits = Ramp::new(tuning.parallel);
    join_all(jobs.into_iter().map(|job| {
        let (group, permits) = (&group, &permits);
        async move {
            let len: u64 = job.fetch.iter().map(|r| r.end - r.start).sum();
            let segment = tuning.segment.max(len.div_ceil(MAX_SEGMENTS_PER_FILE));
            let segments = Arc::new(Segments::plan(job.offset, job.size, &job.fetch, segment));
            shared.with_track(job.index, |t| t.meter = Meter::Segments(segments.clone()));
            let fetched = (0..segments.spans.len()).filter(|&i| !segments.prefilled[i]);
            let parts = fetched.map(|i| {
                let range = segments.spans[i].clone();
                let (job, segments) = (&job, &segments);
                async move {
                    let _permit = permits
                        .semaphore
                        .acquire()
                        .await
                        .map_err(|_| PluginError::cancelled())?;
                    let started = std::time::Instant::now();
                    let written = stream_segment(group, job, range, &segments.written[i]).await?;
                    if started.elapsed() < Ramp::FAST {
                        permits.grow();
                    }
                    Ok(written)
                }
            });
            // The first failed segment fails the file and stops its other segments.
            let result = futures_util::future::try_join_all(parts)
                .await
                .map(|written| written.iter().sum());
            shared.set_result(job.index, result);
        }
    }))
    .await;
    group.finish().await;
}

/// Segment slots that start small and grow by two per segment finished within [`Ramp::FAST`],
/// up to the maximum.
///
/// Segments started together share the link and finish together, and the stream API shows no
/// progress before a term is written. On a slow link, `parallel x segment` bytes in flight would
/// mean no progress for longer than the host's stall timeout; there the slots stay at
/// [`Ramp::START`]. On a fast link the ramp takes a fraction of a second.
struct Ramp {
    semaphore: tokio::sync::Semaphore,
    granted: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl Ramp {
    const START: usize = 4;
    const FAST: Duration = Duration::from_secs(2);

    fn new(max: usize) -> Self {
        let max = max.max(1);
        let start = max.min(Self::START);
        Self {
            semaphore: tokio::sync::Semaphore::new(start),
            granted: std::sync::atomic::AtomicUsize::new(start),
            max,
        }
    }

    fn grow(&self) {
        let add = self
            .granted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |g| {
                (g < self.max).then(|| (g + 2).min(self.max))
            })
            .map_or(0, |old| (old + 2).min(self.max) - old);
        if add > 0 {
            self.semaphore.add_permits(add);
        }
    }
}

/// Streams `range` of one file into its partial file at the same offsets.
async fn stream_segment(
    group: &XetDownloadStreamGroup,
    job: &Job,
    range: std::ops::Range<u64>,
    written: &AtomicU64,
) -> Result<u64, PluginError> {
    let expected = range.end - range.start;
    let start = range.start;
    let info = XetFileInfo::new(job.hash.clone(), job.size);
    let mut stream = group
        .download_stream(info, Some(range))
        .await
        .map_err(|e| error::from_xet(&context(job), &e))?;
    let io = |source| Error::Write {
        path: job.path.display().to_string(),
        source,
    };
    let path = job.path.clone();
    let file =
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(path))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
    let file = Arc::new(file);
    let mut got = 0u64;
    while let Some(chunk) = stream
        .next()
        .await
        .map_err(|e| error::from_xet(&context(job), &e))?
    {
        got += chunk.len() as u64;
        if got > expected {
            break;
        }
        // A positioned write of the whole chunk on a blocking thread (no copy, no seek); when it
        // returns the bytes are in the file, so the count may back a checkpoint.
        let at = start + got - chunk.len() as u64;
        let f = file.clone();
        tokio::task::spawn_blocking(move || write_all_at(&f, &chunk, at))
            .await
            .map_err(|e| io(std::io::Error::other(e)))?
            .map_err(io)?;
        written.store(got, Ordering::SeqCst);
    }
    // A cancelled stream ends like a finished one: the length tells them apart.
    if got != expected {
        return Err(Error::Length {
            path: job.path.display().to_string(),
            got,
            expected,
        }
        .into());
    }
    Ok(got)
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
    fn the_ramp_grows_by_two_per_completion_up_to_the_maximum() {
        let r = Ramp::new(9);
        assert_eq!(r.semaphore.available_permits(), 4);
        r.grow();
        r.grow();
        assert_eq!(r.semaphore.available_permits(), 8);
        r.grow();
        r.grow();
        assert_eq!(r.semaphore.available_permits(), 9);
        let small = Ramp::new(2);
        small.grow();
        assert_eq!(small.semaphore.available_permits(), 2);
    }

    #[test]
    fn segments_report_the_contiguous_prefix() {
        let s = Segments::plan(0, 10, &[0..10], 4);
        assert_eq!(s.spans, vec![0..4, 4..8, 8..10]);
        s.written[1].store(4, Ordering::SeqCst);
        assert_eq!(s.progress(), (4, 0));
        s.written[0].store(3, Ordering::SeqCst);
        assert_eq!(s.progress(), (7, 3));
        s.written[0].store(4, Ordering::SeqCst);
        s.written[2].store(1, Ordering::SeqCst);
        assert_eq!(s.progress(), (9, 9));
    }

    #[test]
    fn spans_on_disk_count_in_the_prefix_but_not_as_fetched_bytes() {
        // offset 2; 2..5 and 9..12 to fetch; 5..9 and 12..14 are on disk.
        let s = Segments::plan(2, 14, &[2..5, 9..12], 2);
        assert_eq!(s.spans, vec![2..4, 4..5, 5..9, 9..11, 11..12, 12..14]);
        assert_eq!(s.prefilled, vec![false, false, true, false, false, true]);
        assert_eq!(s.progress(), (0, 0));
        s.written[0].store(2, Ordering::SeqCst);
        s.written[1].store(1, Ordering::SeqCst);
        assert_eq!(
            s.progress(),
            (3, 7),
            "the prefix (from the offset) jumps over the copied span"
        );
        assert_eq!(s.newly_complete(11), vec![12..14]);
        s.written[3].store(2, Ordering::SeqCst);
        s.written[4].store(1, Ordering::SeqCst);
        assert_eq!(s.progress(), (6, 12));
        assert!(
            s.newly_complete(2).iter().all(|r| r.start < 12),
            "each span once"
        );
    }

    #[test]
    fn origin_drops_path_and_query() {
        assert_eq!(origin("http://127.0.0.1:5/v1/x?t=1"), "http://127.0.0.1:5");
        assert_eq!(origin("https://cas.example"), "https://cas.example");
    }
}
