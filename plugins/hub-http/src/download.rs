//! Ranged, resumable, parallel downloads into the host's partial file.
//!
//! [`download_to_partial`] writes bytes `offset..size` of one URL at their positions in an
//! existing partial file (never truncating it). The remainder is split by [`crate::ranges::plan_ranges`] into
//! ranges of at most `range_size` fetched over up to `connections` concurrent requests (each
//! worker takes the next range when it finishes one), with smaller pieces at the end so that
//! the connections finish together; small remainders take one request. Bodies are streamed chunk
//! by chunk to `write_at`, so memory stays bounded whatever the file size.
//!
//! Each range is retried with backoff (`Retry-After` honoured) and resumes from the byte where
//! it stopped; attempts are counted only while a range makes no progress. A server that ignores
//! `Range` (200 with the whole body) is handled: the download continues over one connection,
//! skipping to the offset. `Content-Range` and `Content-Length` are checked against the
//! expected size and positions. Cancellation is polled every 50 ms, so a cancelled download
//! returns `CANCELLED` promptly.
//!
//! Everything the download has to say goes through one sink as an [`Event`] (rustup's downloader
//! does the same): byte deltas, checkpoints, written ranges and retries. [`ItemEvents`] turns
//! them into the host's `ProgressEvent`s for one batch item, so a plugin writes no adapter:
//! - `Bytes` deltas, coalesced (at most every 256 KiB or 200 ms per range);
//! - `Checkpoint(n)` with the absolute low watermark: every byte before `n` is written (sent when
//!   it advances, at most every 100 ms, at the end, and before a failure is returned, so that a
//!   caller can continue from there elsewhere);
//! - `RangeWritten`: the written prefix of every range past the low watermark as it grows (at
//!   most every 100 ms) and when it completes, so that a caller can persist more than the
//!   contiguous prefix;
//! - `Retry`: every retry (also logged at `info`), before its wait.
//!
//! Out-of-order resume: [`DownloadOptions::written`] names ranges already on disk (from an
//! earlier run); only the holes of `offset..size` are planned
//! ([`plan_holes`]) and the low watermark jumps over the skipped
//! ranges.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use hubget_plugin_api::protocol::{RangeWritten, RateLimitNote, RetryNote};
use hubget_plugin_api::{
    CancelToken, ErrorKind, FetchItem, HostSettings, PluginError, Progress, ProgressEvent,
};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};
use reqwest::{StatusCode, Url};

use crate::client::{Credential, HttpClient, Request, origin_of};
use crate::error::{classify, classify_transport, io, protocol};
use crate::ranges::plan_holes;
use crate::retry::{RetryPolicy, cancellable, sleep};

const FLUSH_BYTES: u64 = 256 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Where to download from. `Debug` shows the URL without its query (signatures) and header
/// names only.
#[derive(Clone)]
pub struct Source {
    /// The URL to GET (redirects are followed).
    pub url: Url,
    /// Headers sent only to the origin of `url` (e.g. a Git LFS batch action's `header`).
    pub headers: HeaderMap,
    /// A token, sent only to its own origin (the Hub token for `resolve` URLs).
    pub credential: Option<Credential>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("url", &crate::redact_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("credential", &self.credential.is_some())
            .finish()
    }
}

impl Source {
    /// A source with no extra headers or credential.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            headers: HeaderMap::new(),
            credential: None,
        }
    }
}

/// How to split a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Concurrent requests per file (at least 1).
    pub connections: u32,
    /// Bytes per range request; a remainder no larger than this takes one request.
    pub range_size: u64,
    /// Retries per range.
    pub retry: RetryPolicy,
    /// Ranges past the offset already written by an earlier run: not fetched again.
    pub written: Vec<Range<u64>>,
}

impl DownloadOptions {
    /// `connections_per_file`, `range_size` and `max_attempts` from the host settings.
    pub fn from_settings(settings: &HostSettings) -> Self {
        Self {
            connections: settings.connections_per_file.max(1),
            range_size: settings.range_size.max(64 * 1024),
            retry: RetryPolicy::from_settings(settings),
            written: Vec::new(),
        }
    }

    /// These options skipping `written` (ranges already on disk).
    #[must_use]
    pub fn with_written(mut self, written: Vec<Range<u64>>) -> Self {
        self.written = written;
        self
    }
}

/// What a download says while it runs, in order per range (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// File bytes newly written (not counting bytes an earlier pass wrote) and network bytes
    /// newly received, since the previous `Bytes` event.
    Bytes {
        /// File bytes.
        file: u64,
        /// Network bytes.
        network: u64,
    },
    /// Every byte before this position is written.
    Checkpoint(u64),
    /// These bytes (absolute, end exclusive) are written, past the last checkpoint.
    RangeWritten(Range<u64>),
    /// A request failed and is tried again after the note's delay.
    Retry(RetryNote),
}

/// Receives a download's [`Event`]s, from the download's task: keep it cheap.
pub type EventSink<'a> = &'a (dyn Fn(Event) + Sync);

/// Forwards a download's [`Event`]s to the host as the `ProgressEvent`s of batch item `index`.
#[derive(Clone, Copy)]
pub struct ItemEvents<'a> {
    /// The host's progress sink.
    pub progress: &'a Progress,
    /// The item's index in the batch.
    pub index: u32,
}

impl ItemEvents<'_> {
    /// Sends `event` to the host.
    pub fn send(&self, event: Event) {
        let index = self.index;
        self.progress.on_event(match event {
            Event::Bytes { file, network } => ProgressEvent::bytes(index, file, network),
            Event::Checkpoint(n) => ProgressEvent::checkpoint(index, n),
            Event::RangeWritten(r) => RangeWritten {
                start: r.start,
                end: r.end,
            }
            .event(index),
            Event::Retry(note) => note.event(index),
        });
    }
}

/// Where a download writes: bytes `offset..size` of the partial file at `path`.
#[derive(Clone, Copy, Debug)]
pub struct PartialTarget<'a> {
    /// The partial file (it must exist; it is never truncated).
    pub path: &'a Path,
    /// The first byte to fetch: the bytes before it are on disk.
    pub offset: u64,
    /// The file's size.
    pub size: u64,
}

impl<'a> PartialTarget<'a> {
    /// Bytes `offset..size` of the partial file at `path`.
    pub fn new(path: &'a Path, offset: u64, size: u64) -> Self {
        Self { path, offset, size }
    }

    /// The partial file the host prepared for `item`, from `offset` (the item's own offset, or
    /// further when the plugin knows more of the file is on disk).
    pub fn of(item: &'a FetchItem, offset: u64) -> Self {
        Self::new(
            Path::new(item.partial_path.as_str()),
            offset,
            item.file.size,
        )
    }
}

/// What a finished download did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes received from the network (including any prefix skipped when a server ignored
    /// `Range`).
    pub bytes_transferred: u64,
    /// The origin (`scheme://host:port`) of the server that sent the bytes (after redirects).
    pub origin: String,
}

/// Why one request for a range stopped.
enum Stop {
    /// A plugin error (maybe retryable).
    Error(PluginError),
    /// The server answered 200 to a range request: switch to one connection.
    RangeIgnored,
}

impl From<PluginError> for Stop {
    fn from(e: PluginError) -> Self {
        Self::Error(e)
    }
}

/// What every pass over one file shares: where its bytes come from and go, and who hears of
/// them.
#[derive(Clone, Copy)]
struct Job<'a> {
    client: &'a HttpClient,
    source: &'a Source,
    file: &'a File,
    path: &'a Path,
    size: u64,
    opts: &'a DownloadOptions,
    events: EventSink<'a>,
}

/// One pass over the ranges of a file, from `offset`, shared by its workers.
struct Shared<'a> {
    job: Job<'a>,
    offset: u64,
    /// The ranges and how many bytes of each are written (contiguously from its start).
    ranges: Vec<Range<u64>>,
    done: Vec<AtomicU64>,
    /// Already written by an earlier (abandoned) parallel pass or run: not reported again.
    covered: Vec<Range<u64>>,
    /// The planned ranges skip bytes up to `size` (written before): the mark ends at `size`.
    skipped_tail: bool,
    /// Per range, the written bytes last reported as `RangeWritten`.
    reported: Vec<AtomicU64>,
    last_ranges_at: Mutex<Instant>,
    net: AtomicU64,
    last_checkpoint: AtomicU64,
    last_checkpoint_at: Mutex<Instant>,
    origin: Mutex<String>,
    started: Instant,
}

impl Shared<'_> {
    /// Every byte before it is written. The bytes between planned ranges (ranges skipped as
    /// already written) count as written, so the mark jumps over them.
    fn low_watermark(&self) -> u64 {
        let mut mark = self.offset;
        for (range, done) in self.ranges.iter().zip(&self.done) {
            let done = done.load(Ordering::Acquire);
            mark = range.start + done;
            if done < range.end - range.start {
                return mark;
            }
        }
        // Everything planned is written: what follows the last range was written before.
        if self.skipped_tail {
            self.job.size
        } else {
            mark
        }
    }

    fn maybe_checkpoint(&self, force: bool) {
        let mark = self.low_watermark();
        self.report_ranges(mark, force);
        let mut at = self
            .last_checkpoint_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if mark > self.last_checkpoint.load(Ordering::Acquire)
            && (force || at.elapsed() >= CHECKPOINT_EVERY)
        {
            self.last_checkpoint.store(mark, Ordering::Release);
            *at = Instant::now();
            drop(at);
            (self.job.events)(Event::Checkpoint(mark));
        }
    }

    /// Reports the written part of every range that grew since it was last reported (each range
    /// is written from its start, so `start..start + done` is fully written) as `RangeWritten`: at most every [`CHECKPOINT_EVERY`] unless `force`
    /// or a range just completed, so that a kill loses little beyond the host's last save.
    /// Ranges whose written part ends at or before `mark` are left to the checkpoint.
    fn report_ranges(&self, mark: u64, force: bool) {
        let mut at = self
            .last_ranges_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = force || at.elapsed() >= CHECKPOINT_EVERY;
        for (i, range) in self.ranges.iter().enumerate() {
            let done = self.done[i].load(Ordering::Acquire);
            let complete = done >= range.end - range.start;
            if range.start + done > mark
                && (due || complete)
                && done > self.reported[i].load(Ordering::Acquire)
            {
                self.reported[i].store(done, Ordering::Release);
                (self.job.events)(Event::RangeWritten(range.start..range.start + done));
            }
        }
        if due {
            *at = Instant::now();
        }
    }

    /// File bytes in `a..b` not written by an earlier pass.
    fn fresh(&self, a: u64, b: u64) -> u64 {
        let overlap: u64 = self
            .covered
            .iter()
            .map(|c| b.min(c.end).saturating_sub(a.max(c.start)))
            .sum();
        (b - a).saturating_sub(overlap)
    }
}

/// Progress that resets a range's retry budget: at least 1 MiB (or the rest of the range). A
/// server that keeps a download "making progress" a few bytes at a time cannot keep it retrying
/// forever.
pub const MEANINGFUL_PROGRESS: u64 = 1024 * 1024;

fn meaningful_progress(before: u64, after: u64, range: &Range<u64>) -> bool {
    let rest = (range.end - range.start).saturating_sub(before);
    after.saturating_sub(before) >= MEANINGFUL_PROGRESS.min(rest).max(1)
}

/// Downloads bytes `offset..size` of `source` into `partial_path` (which must exist; it is
/// opened for writing without truncation), as described in the [module docs](self).
///
/// Returns the network bytes and the serving origin. Errors: classified HTTP/transport
/// failures after retries, `INTEGRITY` when the server's size differs from `size`, `PROTOCOL`
/// for inconsistent `Content-Range`/`Content-Length`, `IO` for the partial file, `CANCELLED`.
pub async fn download_to_partial(
    client: &HttpClient,
    source: &Source,
    target: PartialTarget<'_>,
    opts: &DownloadOptions,
    events: EventSink<'_>,
    cancel: &CancelToken,
) -> Result<Downloaded, PluginError> {
    let PartialTarget {
        path: partial_path,
        offset,
        size,
    } = target;
    cancel.check()?;
    if offset >= size {
        return Ok(Downloaded {
            bytes_transferred: 0,
            origin: origin_of(&source.url),
        });
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        // Never write through a link planted at the partial's name.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let file = options
        .open(partial_path)
        .map_err(|e| io(partial_path, "cannot open the partial file", &e))?;
    let ranges = plan_holes(
        offset,
        size,
        &opts.written,
        opts.range_size,
        opts.connections,
    );
    if ranges.is_empty() {
        // Everything past `offset` was written by an earlier run.
        events(Event::Checkpoint(size));
        return Ok(Downloaded {
            bytes_transferred: 0,
            origin: origin_of(&source.url),
        });
    }
    let job = Job {
        client,
        source,
        file: &file,
        path: partial_path,
        size,
        opts,
        events,
    };
    let mut shared = Shared::new(job, offset, ranges, opts.written.clone());
    let first = cancellable(cancel, run(&shared, cancel))
        .await
        .inspect_err(|_| shared.maybe_checkpoint(true))?;
    let net_before = match first {
        Ok(()) => None,
        Err(Stop::Error(e)) => {
            // The low watermark, so that a caller can continue elsewhere from there.
            shared.maybe_checkpoint(true);
            return Err(e);
        }
        Err(Stop::RangeIgnored) => Some(shared.net.load(Ordering::Acquire)),
    };
    if let Some(net_before) = net_before {
        log::info!(
            "{}: the server ignores Range; continuing over one connection",
            crate::redact_url(&source.url)
        );
        let covered: Vec<Range<u64>> = shared
            .ranges
            .iter()
            .zip(&shared.done)
            .map(|(r, d)| r.start..r.start + d.load(Ordering::Acquire))
            .filter(|r| !r.is_empty())
            .chain(opts.written.iter().cloned())
            .collect();
        // Resume after the contiguous prefix the parallel pass wrote.
        let mark = shared.low_watermark();
        shared = Shared::new(job, mark, std::iter::once(mark..size).collect(), covered);
        shared.net.store(net_before, Ordering::Release);
        match cancellable(cancel, run(&shared, cancel))
            .await
            .inspect_err(|_| shared.maybe_checkpoint(true))?
        {
            Ok(()) => {}
            Err(Stop::Error(e)) => {
                shared.maybe_checkpoint(true);
                return Err(e);
            }
            Err(Stop::RangeIgnored) => {
                return Err(protocol(
                    &crate::request_context(&reqwest::Method::GET, &source.url),
                    "the server ignores Range on a single connection",
                ));
            }
        }
    }
    shared.maybe_checkpoint(true);
    let origin = shared
        .origin
        .lock()
        .map(|o| o.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let net = shared.net.load(Ordering::Acquire);
    log::debug!(
        "{}: {} bytes in {:?}",
        crate::redact_url(&source.url),
        net,
        shared.started.elapsed()
    );
    Ok(Downloaded {
        bytes_transferred: net,
        origin,
    })
}

impl<'a> Shared<'a> {
    fn new(job: Job<'a>, offset: u64, ranges: Vec<Range<u64>>, covered: Vec<Range<u64>>) -> Self {
        let done = ranges.iter().map(|_| AtomicU64::new(0)).collect();
        let skipped_tail = ranges.last().is_none_or(|r| r.end < job.size);
        let reported = ranges.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            skipped_tail,
            reported,
            last_ranges_at: Mutex::new(Instant::now()),
            job,
            offset,
            ranges,
            done,
            covered,
            net: AtomicU64::new(0),
            last_checkpoint: AtomicU64::new(offset),
            last_checkpoint_at: Mutex::new(Instant::now()),
            origin: Mutex::new(origin_of(&job.source.url)),
            started: Instant::now(),
        }
    }
}

/// Runs the workers over the ranges of `shared`.
async fn run(shared: &Shared<'_>, cancel: &CancelToken) -> Result<(), Stop> {
    let next = &AtomicUsize::new(0);
    let workers = (shared.job.opts.connections.max(1) as usize).min(shared.ranges.len());
    let worker = |_| async move {
        loop {
            let i = next.fetch_add(1, Ordering::AcqRel);
            if i >= shared.ranges.len() {
                return Ok::<(), Stop>(());
            }
            fetch_range(shared, i, cancel).await?;
        }
    };
    try_join_all((0..workers).map(worker)).await?;
    Ok(())
}

/// Fetches range `i` to its end, retrying and resuming.
async fn fetch_range(shared: &Shared<'_>, i: usize, cancel: &CancelToken) -> Result<(), Stop> {
    let range = &shared.ranges[i];
    let policy = &shared.job.opts.retry;
    let mut failures = 0u32;
    loop {
        let before = shared.done[i].load(Ordering::Acquire);
        let pos = range.start + before;
        if pos >= range.end {
            return Ok(());
        }
        let error = match fetch_once(shared, i, pos, cancel).await {
            Ok(()) => {
                // A finished range is reported at once.
                shared.report_ranges(shared.low_watermark(), false);
                continue;
            }
            Err(Stop::RangeIgnored) => return Err(Stop::RangeIgnored),
            Err(Stop::Error(e)) => e,
        };
        if meaningful_progress(before, shared.done[i].load(Ordering::Acquire), range) {
            failures = 0;
        }
        failures += 1;
        if !error.retryable || failures >= policy.max_attempts {
            return Err(Stop::Error(error));
        }
        let Some(wait) = policy.delay(failures, &error) else {
            return Err(Stop::Error(error));
        };
        let note = RetryNote::new(error.message, wait, failures + 1, policy.max_attempts);
        log::info!("range {}-{}: {note}", pos, range.end - 1);
        (shared.job.events)(Event::Retry(note));
        sleep(cancel, wait).await?;
    }
}

pub(crate) fn parse_content_range(value: &HeaderValue) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.to_str().ok()?.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (first <= last).then_some((first, last, total))
}

/// One request for bytes `pos..range.end` of range `i`; returns when they are written or the
/// response ended (a short response is a retryable error; the next attempt resumes).
async fn fetch_once(
    shared: &Shared<'_>,
    i: usize,
    pos: u64,
    cancel: &CancelToken,
) -> Result<(), Stop> {
    let range = &shared.ranges[i];
    let whole = pos == 0 && range.end == shared.job.size;
    let request = range_request(shared, pos, range.end, whole)?;
    let on_wait = |note: &RateLimitNote| {
        log::info!("{}", note.reason());
        (shared.job.events)(Event::Retry(RetryNote::new(
            note.reason(),
            note.reset_in,
            1,
            1,
        )));
    };
    let answer = shared
        .job
        .client
        .send_observed(&request, cancel, &on_wait)
        .await?;
    let context = answer.context();
    *shared.origin.lock().unwrap_or_else(|e| e.into_inner()) = origin_of(&answer.url);
    let status = answer.response.status();
    let window = Window {
        pos,
        end: range.end,
        size: shared.job.size,
        whole,
        single: shared.ranges.len() == 1,
    };
    let (skip, end) = window.accept(status, answer.response.headers(), &context)?;
    copy_body(shared, i, answer.response, &context, pos, skip, end, cancel).await
}

/// The GET for bytes `pos..end` of the source (no `Range` header for the whole file).
fn range_request(shared: &Shared<'_>, pos: u64, end: u64, whole: bool) -> Result<Request, Stop> {
    let mut request = Request::get(shared.job.source.url.clone())
        .credential(shared.job.source.credential.clone());
    request.origin_headers = shared.job.source.headers.clone();
    if !whole {
        let value = format!("bytes={pos}-{}", end - 1);
        request.headers.insert(
            RANGE,
            HeaderValue::from_str(&value).map_err(|e| protocol("range header", e))?,
        );
    }
    Ok(request)
}

/// What one request asked for: bytes `pos..end` of a file of `size` bytes (`whole`: the entire
/// file, without a `Range` header; `single`: the download uses one connection).
struct Window {
    pos: u64,
    end: u64,
    size: u64,
    whole: bool,
    single: bool,
}

impl Window {
    /// Checks the answer's status and headers against what was asked. Returns `(skip, end)`:
    /// the body bytes to drop before `pos`, and the position after the last byte to write.
    fn accept(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        context: &str,
    ) -> Result<(u64, u64), Stop> {
        let Window {
            pos,
            end,
            size,
            whole,
            single,
        } = *self;
        let length: Option<u64> = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        match status {
            StatusCode::PARTIAL_CONTENT => {
                let (first, last, total) = headers
                    .get(CONTENT_RANGE)
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        protocol(context, "206 without a valid Content-Range").retryable(true)
                    })?;
                if let Some(total) = total
                    && total != size
                {
                    return Err(Stop::Error(size_mismatch(context, total, size)));
                }
                if first != pos || last >= end {
                    return Err(Stop::Error(
                        protocol(
                            context,
                            format!(
                                "asked for bytes {pos}-{}, got Content-Range {first}-{last}",
                                end - 1
                            ),
                        )
                        .retryable(true),
                    ));
                }
                if let Some(length) = length
                    && length != last - first + 1
                {
                    return Err(Stop::Error(
                        protocol(
                            context,
                            format!(
                                "Content-Length {length} does not match Content-Range {first}-{last}"
                            ),
                        )
                        .retryable(true),
                    ));
                }
                Ok((0, last + 1))
            }
            StatusCode::OK => {
                if let Some(length) = length
                    && length != size
                {
                    return Err(Stop::Error(size_mismatch(context, length, size)));
                }
                if !whole && !single {
                    return Err(Stop::RangeIgnored);
                }
                // The whole body; keep what lies in `pos..end` (end == size here).
                Ok((pos, end))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = headers
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().strip_prefix("bytes */"))
                    .and_then(|t| t.parse::<u64>().ok());
                Err(Stop::Error(match total {
                    Some(total) if total != size => size_mismatch(context, total, size),
                    _ => classify(status, headers, context),
                }))
            }
            _ => Err(Stop::Error(classify(status, headers, context))),
        }
    }
}

/// Streams an accepted body into the partial file: drops `skip` bytes, writes up to `end`,
/// reports bytes and checkpoints as it goes; a body that ends early is a retryable error.
#[allow(clippy::too_many_arguments)]
async fn copy_body(
    shared: &Shared<'_>,
    i: usize,
    mut response: reqwest::Response,
    context: &str,
    pos: u64,
    skip: u64,
    end: u64,
    cancel: &CancelToken,
) -> Result<(), Stop> {
    let range = &shared.ranges[i];
    let whole_body = response.status() == StatusCode::OK;
    let mut skipped = 0u64;
    let mut at = pos;
    let (mut pending_file, mut pending_net) = (0u64, 0u64);
    let mut last_flush = Instant::now();
    let flush = |file_bytes: &mut u64, net_bytes: &mut u64| {
        if *file_bytes > 0 || *net_bytes > 0 {
            (shared.job.events)(Event::Bytes {
                file: *file_bytes,
                network: *net_bytes,
            });
            *file_bytes = 0;
            *net_bytes = 0;
        }
        shared.maybe_checkpoint(false);
    };
    let result = loop {
        if cancel.is_cancelled() {
            break Err(PluginError::cancelled());
        }
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break Ok(()),
            Err(e) => break Err(classify_transport(&e, context)),
        };
        let n = chunk.len() as u64;
        shared.job.client.throttle(n).await;
        shared.net.fetch_add(n, Ordering::AcqRel);
        pending_net += n;
        let mut data = &chunk[..];
        if skipped < skip {
            let drop = (skip - skipped).min(data.len() as u64) as usize;
            skipped += drop as u64;
            data = &data[drop..];
        }
        let room = (end - at).min(data.len() as u64) as usize;
        if room > 0 {
            if let Err(e) = write_at(shared.job.file, &data[..room], at) {
                break Err(io(shared.job.path, "cannot write the partial file", &e));
            }
            pending_file += shared.fresh(at, at + room as u64);
            at += room as u64;
            shared.done[i].store(at - range.start, Ordering::Release);
        }
        if room < data.len() {
            break Err(
                protocol(context, "the server sent more bytes than announced").retryable(true),
            );
        }
        if pending_file >= FLUSH_BYTES || last_flush.elapsed() >= FLUSH_EVERY {
            flush(&mut pending_file, &mut pending_net);
            last_flush = Instant::now();
        }
        if at >= end && whole_body {
            // Everything we need from a 200 body; do not read the rest.
            break Ok(());
        }
    };
    flush(&mut pending_file, &mut pending_net);
    result?;
    if at < end {
        return Err(Stop::Error(
            PluginError::new(
                ErrorKind::NETWORK,
                format!(
                    "{context}: the connection closed after {} of {} bytes",
                    at - pos,
                    end - pos
                ),
            )
            .retryable(true),
        ));
    }
    Ok(())
}

fn size_mismatch(context: &str, server: u64, expected: u64) -> PluginError {
    PluginError::new(
        ErrorKind::INTEGRITY,
        format!("{context}: the server has {server} bytes, the manifest says {expected}"),
    )
}

#[cfg(unix)]
fn write_at(file: &File, buf: &[u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(windows)]
fn write_at(file: &File, mut buf: &[u8], mut pos: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, buf, pos)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        buf = &buf[n..];
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_meaningful_progress_resets_the_retry_budget() {
        let r = 0..(8 * MEANINGFUL_PROGRESS);
        assert!(!meaningful_progress(0, 0, &r));
        assert!(!meaningful_progress(0, 100, &r), "a trickle does not count");
        assert!(meaningful_progress(0, MEANINGFUL_PROGRESS, &r));
        // Near the end of a range, finishing it counts.
        let small = 0..1000;
        assert!(meaningful_progress(900, 1000, &small));
        assert!(!meaningful_progress(900, 950, &small));
    }

    #[test]
    fn an_answer_is_checked_against_the_window_asked_for() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let w = Window {
            pos: 10,
            end: 20,
            size: 100,
            whole: false,
            single: false,
        };
        let ok = headers(&[
            ("content-range", "bytes 10-19/100"),
            ("content-length", "10"),
        ]);
        assert!(matches!(
            w.accept(StatusCode::PARTIAL_CONTENT, &ok, "GET x"),
            Ok((0, 20))
        ));
        // Another window, another total, a lying length: refused.
        let other = headers(&[("content-range", "bytes 0-9/100")]);
        let total = headers(&[("content-range", "bytes 10-19/999")]);
        let length = headers(&[
            ("content-range", "bytes 10-19/100"),
            ("content-length", "3"),
        ]);
        for h in [other, total, length] {
            assert!(matches!(
                w.accept(StatusCode::PARTIAL_CONTENT, &h, "GET x"),
                Err(Stop::Error(_))
            ));
        }
        // A 200 to a range request of a parallel download: fall back to one connection; for a
        // single connection, keep the bytes from `pos`.
        let full = headers(&[("content-length", "100")]);
        assert!(matches!(
            w.accept(StatusCode::OK, &full, "GET x"),
            Err(Stop::RangeIgnored)
        ));
        let single = Window {
            end: 100,
            single: true,
            ..w
        };
        assert!(matches!(
            single.accept(StatusCode::OK, &full, "GET x"),
            Ok((10, 100))
        ));
        let short = headers(&[("content-length", "99")]);
        match single.accept(StatusCode::OK, &short, "GET x") {
            Err(Stop::Error(e)) => assert_eq!(e.kind, ErrorKind::INTEGRITY),
            _ => panic!("a 200 of the wrong size is an integrity error"),
        }
    }

    #[test]
    fn content_range_parses_and_rejects_garbage() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_content_range(&v("bytes 0-9/100")),
            Some((0, 9, Some(100)))
        );
        assert_eq!(parse_content_range(&v("bytes 5-5/*")), Some((5, 5, None)));
        assert_eq!(parse_content_range(&v("bytes 9-0/100")), None);
        assert_eq!(parse_content_range(&v("items 0-9/100")), None);
        assert_eq!(parse_content_range(&v("bytes */100")), None);
    }

    #[test]
    fn low_watermark_is_the_contiguous_prefix() {
        let client = HttpClient::new(&HostSettings::default()).unwrap();
        let source = Source::new(Url::parse("http://127.0.0.1:1/x").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        let file = File::create(&path).unwrap();
        let opts = DownloadOptions::from_settings(&HostSettings::default());
        let marks = Mutex::new(Vec::new());
        let record = |e: Event| {
            if let Event::Checkpoint(n) = e {
                marks.lock().unwrap().push(n)
            }
        };
        let job = Job {
            client: &client,
            source: &source,
            file: &file,
            path: &path,
            size: 30,
            opts: &opts,
            events: &record,
        };
        let ranges = crate::ranges::split_ranges(5, 30, 10);
        let shared = Shared::new(job, 5, ranges, vec![0..2, 20..25]);
        assert_eq!(shared.low_watermark(), 5);
        shared.done[1].store(10, Ordering::Release);
        assert_eq!(
            shared.low_watermark(),
            5,
            "a later range does not move the mark"
        );
        shared.done[0].store(4, Ordering::Release);
        assert_eq!(shared.low_watermark(), 9);
        shared.done[0].store(10, Ordering::Release);
        assert_eq!(shared.low_watermark(), 25);
        shared.maybe_checkpoint(true);
        shared.maybe_checkpoint(true);
        assert_eq!(*marks.lock().unwrap(), vec![25], "checkpoints only advance");
        assert_eq!(shared.fresh(0, 30), 23);
        assert_eq!(shared.fresh(2, 20), 18);
    }
}
