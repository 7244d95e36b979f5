//! Fetching the parts of a batch's Xet files that are not on disk, straight from the CAS.
//!
//! Each file's ranges to fetch are split into segments of [`Tuning::segment`] bytes (a small
//! file is one segment), [`Tuning::parallel`] at a time over the whole batch. A segment is one
//! ranged reconstruction query and the xorb ranges it names ([`crate::cas`]), decoded chunk by
//! chunk and written at its place in the host's partial file as the bytes arrive, so:
//! - the requests are this plugin's: how many, in what order, over the host's network stack;
//! - memory in flight is about one feed buffer per segment, whatever the file size;
//! - what is written is known to the byte: `BYTES` (file bytes and wire bytes), `CHECKPOINT`
//!   (the contiguous prefix), and `RANGE_WRITTEN` for the written part of every segment past it,
//!   so a kill loses at most the last poll's bytes.
//!
//! A failed segment is retried (hub-http's policy, `RETRY` events) from the byte it reached,
//! with a new reconstruction query (fresh presigned URLs). The host's sha256 check after `fetch`
//! is the guard on content; here each term's decoded length is checked against the CAS's word.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hubget_hub_http::reqwest::header::{HeaderValue, RANGE};
use hubget_hub_http::{Request, cancellable, with_retry};
use hubget_plugin_api::protocol::{RangeWritten, RetryNote};
use hubget_plugin_api::{
    CancelToken, ErrorKind, EventKind, FileDone, PluginError, Progress, ProgressEvent,
};

use crate::cas::{Cas, FeedError, FetchInfo, TermWriter};
use crate::error::Error;

/// How often progress is reported and the cancel token polled.
pub const POLL: Duration = Duration::from_millis(100);

/// Raw xorb bytes gathered before they are decoded and written (on a blocking thread).
const FEED_BYTES: usize = 512 * 1024;

/// A segment in flight is announced as `RANGE_WRITTEN` again once it grew by this much.
const ANNOUNCE_BYTES: u64 = 256 * 1024;

/// At most this many segments per file (each is one reconstruction request): larger files get
/// larger segments.
pub const MAX_SEGMENTS_PER_FILE: u64 = 512;

/// How files are split and fetched: the segment size, and the segment slots of the whole
/// plugin (shared by every call, so that concurrent calls of the host — one per large file —
/// together hold at most that many segments, connections and feed buffers).
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Segment size, bytes.
    pub segment: u64,
    /// Segments in flight over the plugin (all of them usable from the start: bytes are
    /// reported from the first response on, so a slow link shared by many segments still
    /// shows progress).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The number of slots.
    pub parallel: usize,
}

impl Tuning {
    /// Segments of `segment` bytes, at most `parallel` at a time.
    pub fn new(segment: u64, parallel: usize) -> Self {
        Self {
            segment: segment.max(1),
            slots: Arc::new(tokio::sync::Semaphore::new(parallel.max(1))),
            parallel: parallel.max(1),
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
}

/// The spans of one file after its offset, in order: segments to fetch and spans already on
/// disk, with the bytes written from the start of each, and the wire bytes of the file.
pub struct Segments {
    spans: Vec<std::ops::Range<u64>>,
    prefilled: Vec<bool>,
    written: Vec<AtomicU64>,
    /// Per span, the written length last reported as `RANGE_WRITTEN`.
    announced: Vec<AtomicU64>,
    /// Bytes received from the CAS for this file.
    wire: AtomicU64,
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
        let announced = spans.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            spans,
            prefilled,
            written,
            announced,
            wire: AtomicU64::new(0),
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

    /// The written part of every span past `mark` that grew by [`ANNOUNCE_BYTES`] (or
    /// completed) since it was last returned: `span.start..span.start + written`.
    fn newly_written(&self, mark: u64) -> Vec<std::ops::Range<u64>> {
        let mut out = Vec::new();
        for (i, span) in self.spans.iter().enumerate() {
            let len = span.end - span.start;
            let w = if self.prefilled[i] {
                len
            } else {
                self.written[i].load(Ordering::SeqCst).min(len)
            };
            let before = self.announced[i].load(Ordering::SeqCst);
            let grew = w > before && (w == len || w - before >= ANNOUNCE_BYTES);
            if grew && span.start + w > mark {
                self.announced[i].store(w, Ordering::SeqCst);
                out.push(span.start..span.start + w);
            }
        }
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
        .map(|job| {
            let len: u64 = job.fetch.iter().map(|r| r.end - r.start).sum();
            let segment = tuning
                .segment
                .max(len.div_ceil(MAX_SEGMENTS_PER_FILE))
                .max(1);
            Track {
                job: job.clone(),
                segments: Arc::new(Segments::plan(job.offset, job.size, &job.fetch, segment)),
                reported: 0,
                wire_reported: 0,
                checkpointed: 0,
                result: None,
            }
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

/// Fetches every segment of one job; the first failed segment fails the file and stops its
/// other segments. Returns the file bytes written.
///
/// A job queues for at most `tuning.parallel` slots at a time, so that the slots' FIFO queue
/// interleaves the files of concurrent calls: every file makes progress (the host's stall
/// watchdog watches each call), none waits for all of another's segments.
async fn fetch_job(
    cas: &Cas,
    job: &Job,
    segments: &Segments,
    tuning: &Tuning,
    progress: &Progress,
    cancel: &CancelToken,
) -> Result<u64, PluginError> {
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
    let parts = (0..segments.spans.len())
        .filter(|&i| !segments.prefilled[i])
        .map(|i| {
            let file = file.clone();
            async move {
                let _permit = tuning
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| PluginError::cancelled())?;
                let policy = cas.client().retry_policy();
                let on_retry = |e: &PluginError, n: u32, wait: Duration| {
                    log::info!("{}: {}; retrying in {wait:?}", context(job), e.message);
                    let note = RetryNote::new(e.message.as_str(), wait, n + 1, policy.max_attempts);
                    progress.on_event(note.event(job.index));
                };
                with_retry(policy, cancel, on_retry, |_| {
                    fetch_span(cas, job, segments, i, &file, cancel)
                })
                .await
                .map_err(|mut e| {
                    e.message = crate::error::redact(&e.message).into();
                    e.context(context(job))
                })?;
                let span = &segments.spans[i];
                Ok::<u64, PluginError>(span.end - span.start)
            }
        });
    use futures_util::stream::{StreamExt, TryStreamExt};
    let written: Vec<u64> = futures_util::stream::iter(parts)
        .buffer_unordered(tuning.parallel)
        .try_collect()
        .await?;
    Ok(written.iter().sum())
}

/// Fetches what is left of span `i` (from the byte it reached): one reconstruction query for
/// it, then each term's xorb range, decoded and written as it arrives.
async fn fetch_span(
    cas: &Cas,
    job: &Job,
    segments: &Segments,
    i: usize,
    file: &Arc<std::fs::File>,
    cancel: &CancelToken,
) -> Result<(), PluginError> {
    let span = segments.spans[i].clone();
    let written = &segments.written[i];
    let from = span.start + written.load(Ordering::SeqCst);
    if from >= span.end {
        return Ok(());
    }
    let rec = cas
        .reconstruction(&job.hash, Some(from..span.end), cancel)
        .await?;
    let mut skip = rec.offset_into_first_range;
    let mut pos = from;
    for term in &rec.terms {
        if pos >= span.end {
            break;
        }
        let source = rec.source_of(term).ok_or_else(|| {
            PluginError::new(
                ErrorKind::PROTOCOL,
                format!(
                    "the reconstruction names no fetch range for chunks {}..{} of xorb {}",
                    term.range.start, term.range.end, term.hash
                ),
            )
        })?;
        let writer = TermWriter::new(term, source, std::mem::take(&mut skip), pos, span.end);
        let sink = SpanSink {
            file: file.clone(),
            written,
            span_start: span.start,
            wire: &segments.wire,
        };
        pos = fetch_term(cas, source, writer, &sink, cancel).await?;
    }
    if pos < span.end {
        return Err(PluginError::new(
            ErrorKind::PROTOCOL,
            format!(
                "the reconstruction of bytes {from}..{} ends at {pos}",
                span.end
            ),
        ));
    }
    Ok(())
}

/// Where one span's bytes go and are counted.
struct SpanSink<'a> {
    file: Arc<std::fs::File>,
    written: &'a AtomicU64,
    span_start: u64,
    wire: &'a AtomicU64,
}

/// Fetches one term's xorb range and writes its decoded bytes; returns where the writer ended.
async fn fetch_term(
    cas: &Cas,
    source: &FetchInfo,
    mut writer: TermWriter,
    sink: &SpanSink<'_>,
    cancel: &CancelToken,
) -> Result<u64, PluginError> {
    let url = hubget_hub_http::reqwest::Url::parse(&source.url).map_err(|e| {
        PluginError::new(
            ErrorKind::PROTOCOL,
            format!("bad xorb URL in the reconstruction: {e}"),
        )
    })?;
    let range = format!("bytes={}-{}", source.url_range.start, source.url_range.end);
    let request = Request::get(url).header(RANGE, HeaderValue::from_str(&range).expect("ASCII"));
    let answer = cas.client().send(&request, cancel).await?;
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
    // A 200 is the range itself when its length says so (Xet's own CAS answers V1 terms that
    // way); otherwise the server ignored `Range` and sent the whole object: skip to the range.
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
    let mut lead = match (status.as_u16(), answer.response.content_length()) {
        (206, _) => 0,
        (_, Some(n)) if n == wanted => 0,
        _ => source.url_range.start,
    };
    let mut response = answer.response;
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
            cas.client().throttle(p.len() as u64).await;
            let skip = lead.min(p.len() as u64);
            lead -= skip;
            raw.extend_from_slice(&p[skip as usize..]);
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
            r.map_err(corrupt)?;
            sink.written
                .store(writer.pos() - sink.span_start, Ordering::SeqCst);
        }
        if writer.done() {
            return Ok(writer.pos());
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
        assert_eq!(s.newly_written(11), vec![12..14]);
        s.written[3].store(2, Ordering::SeqCst);
        s.written[4].store(1, Ordering::SeqCst);
        assert_eq!(s.progress(), (6, 12));
        assert!(
            s.newly_written(2).iter().all(|r| r.start < 12),
            "each span once"
        );
    }

    #[test]
    fn a_segment_in_flight_is_announced_as_it_grows() {
        let m = ANNOUNCE_BYTES;
        let s = Segments::plan(0, 8 * m, &[0..8 * m], 4 * m);
        s.written[1].store(m / 2, Ordering::SeqCst);
        assert!(s.newly_written(0).is_empty(), "less than ANNOUNCE_BYTES");
        s.written[1].store(m + 1, Ordering::SeqCst);
        assert_eq!(s.newly_written(0), vec![4 * m..5 * m + 1]);
        assert!(s.newly_written(0).is_empty(), "not again until it grows");
        s.written[1].store(4 * m, Ordering::SeqCst);
        assert_eq!(s.newly_written(0), vec![4 * m..8 * m], "complete");
    }

    #[test]
    fn origin_drops_path_and_query() {
        assert_eq!(origin("http://127.0.0.1:5/v1/x?t=1"), "http://127.0.0.1:5");
        assert_eq!(origin("https://cas.example"), "https://cas.example");
    }
}
