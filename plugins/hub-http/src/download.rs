//! Ranged, resumable, parallel downloads into the host's partial file.
//!
//! [`download_to_partial`] writes bytes `offset..size` of one URL at their positions in an
//! existing partial file (never truncating it). The remainder is split by [`plan_ranges`] into
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
//! Every retry is logged at `info` and, when [`DownloadOptions::on_retry`] is set, handed to it
//! as a [`RetryNote`] (plugins forward it to the host as a `RETRY` event).
//!
//! Progress: `progress(file_bytes, network_bytes)` deltas, coalesced (at most every 256 KiB or
//! 200 ms per range); `checkpoint(n)` with the absolute low watermark: every byte before `n` is
//! written (sent when it advances, at most every 500 ms, at the end, and before a failure is
//! returned, so that a caller can continue from there elsewhere).
//!
//! Out-of-order resume: [`DownloadOptions::written`] names ranges already on disk (from an
//! earlier run); only the holes of `offset..size` are planned ([`plan_holes`]) and the low
//! watermark jumps over the skipped ranges. [`DownloadOptions::on_range_written`] hears the
//! written prefix of every range as it grows, so that a caller can persist more than the
//! contiguous prefix.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use hubget_plugin_api::{CancelToken, ErrorKind, HostSettings, PluginError};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};
use reqwest::{StatusCode, Url};

use crate::client::{Credential, HttpClient, Request, origin_of};
use crate::error::{classify, classify_transport, io, protocol};
use crate::retry::{RetryPolicy, cancellable, sleep};

const FLUSH_BYTES: u64 = 256 * 1024;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Where to download from.
#[derive(Clone, Debug)]
pub struct Source {
    /// The URL to GET (redirects are followed).
    pub url: Url,
    /// Headers sent only to the origin of `url` (e.g. a Git LFS batch action's `header`).
    pub headers: HeaderMap,
    /// A token, sent only to its own origin (the Hub token for `resolve` URLs).
    pub credential: Option<Credential>,
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

/// A retry inside the downloader, for callers that show it (plugins forward it to the host as
/// a `RETRY` progress event).
#[derive(Clone, Debug)]
pub struct RetryNote {
    /// Why the attempt failed (its message is redacted: no token, no query string).
    pub error: PluginError,
    /// The attempt about to run (2 for the first retry).
    pub attempt: u32,
    /// Attempts allowed in a row without progress.
    pub max_attempts: u32,
    /// The wait before that attempt.
    pub delay: Duration,
    /// The bytes the retried request asks for.
    pub range: Range<u64>,
}

impl RetryNote {
    /// `"<error>; retrying in <ms> ms (attempt <n>/<max>)"`, e.g. `"GET http://cdn/lfs/<sha>:
    /// 503 Service Unavailable; retrying in 200 ms (attempt 2/5)"`.
    pub fn message(&self) -> String {
        format!(
            "{}; retrying in {} ms (attempt {}/{})",
            self.error.message,
            self.delay.as_millis(),
            self.attempt,
            self.max_attempts
        )
    }
}

impl std::fmt::Display for RetryNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// Receives every [`RetryNote`] of a download (called before the wait, from the download's
/// task: keep it cheap).
pub type RetryHook = Arc<dyn Fn(&RetryNote) + Send + Sync>;

/// Told about written ranges (absolute, end exclusive): the written prefix of each planned range
/// past the low watermark as it grows (at most every 500 ms) and when it completes, from the download's task: keep it
/// cheap. Plugins forward them to the host as `RANGE_WRITTEN` events.
pub type RangeHook = Arc<dyn Fn(Range<u64>) + Send + Sync>;

/// How to split a download.
#[derive(Clone)]
pub struct DownloadOptions {
    /// Concurrent requests per file (at least 1).
    pub connections: u32,
    /// Bytes per range request; a remainder no larger than this takes one request.
    pub range_size: u64,
    /// Retries per range.
    pub retry: RetryPolicy,
    /// Told about every retry (besides the `info` log line), if set.
    pub on_retry: Option<RetryHook>,
    /// Ranges past the offset already written by an earlier run: not fetched again.
    pub written: Vec<Range<u64>>,
    /// Told about written ranges (see [`RangeHook`]), if set.
    pub on_range_written: Option<RangeHook>,
}

impl std::fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("connections", &self.connections)
            .field("range_size", &self.range_size)
            .field("retry", &self.retry)
            .field("on_retry", &self.on_retry.is_some())
            .field("written", &self.written)
            .field("on_range_written", &self.on_range_written.is_some())
            .finish()
    }
}

impl PartialEq for DownloadOptions {
    fn eq(&self, other: &Self) -> bool {
        self.connections == other.connections
            && self.range_size == other.range_size
            && self.retry == other.retry
            && match (&self.on_retry, &other.on_retry) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
            && self.written == other.written
            && match (&self.on_range_written, &other.on_range_written) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for DownloadOptions {}

impl DownloadOptions {
    /// `connections_per_file`, `range_size` and `max_attempts` from the host settings.
    pub fn from_settings(settings: &HostSettings) -> Self {
        Self {
            connections: settings.connections_per_file.max(1),
            range_size: settings.range_size.max(64 * 1024),
            retry: RetryPolicy::from_settings(settings),
            on_retry: None,
            written: Vec::new(),
            on_range_written: None,
        }
    }

    /// These options with `hook` told about every retry.
    #[must_use]
    pub fn with_retry_hook(mut self, hook: RetryHook) -> Self {
        self.on_retry = Some(hook);
        self
    }

    /// These options skipping `written` (ranges already on disk) and telling `hook` about every
    /// range written completely.
    #[must_use]
    pub fn with_written(mut self, written: Vec<Range<u64>>, hook: Option<RangeHook>) -> Self {
        self.written = written;
        self.on_range_written = hook;
        self
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

/// Splits `offset..size` into consecutive ranges of at most `range_size` bytes.
pub fn split_ranges(offset: u64, size: u64, range_size: u64) -> Vec<Range<u64>> {
    let step = range_size.max(1);
    let mut out = Vec::new();
    let mut start = offset;
    while start < size {
        let end = size.min(start.saturating_add(step));
        out.push(start..end);
        start = end;
    }
    out
}

/// The smallest range worth its own request when splitting (unless `range_size` is smaller).
pub const MIN_RANGE: u64 = 1024 * 1024;

/// How [`download_to_partial`] splits `offset..size` over `connections`:
/// * one range (one request) when `connections <= 1` or fewer than `2 * MIN_RANGE` bytes remain;
/// * else ranges of `base = min(range_size, max(remaining / connections, MIN_RANGE))`, so that a
///   mid-size file still keeps every connection busy;
/// * the last `connections * base` bytes in quarter-size pieces (at least `min(MIN_RANGE,
///   base)`), so that connections finish together instead of one slow range at the end.
pub fn plan_ranges(offset: u64, size: u64, range_size: u64, connections: u32) -> Vec<Range<u64>> {
    if offset >= size {
        return Vec::new();
    }
    let remaining = size - offset;
    let connections = u64::from(connections.max(1));
    if connections == 1 || remaining < 2 * MIN_RANGE {
        return std::iter::once(offset..size).collect();
    }
    let base = range_size
        .max(1)
        .min(remaining.div_ceil(connections).max(MIN_RANGE));
    let tail_len = (connections * base).min(remaining);
    let tail_start = size - tail_len;
    let mut ranges = split_ranges(offset, tail_start, base);
    let piece = (base / 4).max(MIN_RANGE.min(base));
    ranges.extend(split_ranges(tail_start, size, piece));
    ranges
}

/// Sorts and merges `ranges` (dropping empty ones): disjoint, non-adjacent, ascending.
pub fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The parts of `offset..size` not covered by `written`, ascending.
pub fn holes(offset: u64, size: u64, written: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = offset;
    for w in merge_ranges(written.to_vec()) {
        if w.end <= at {
            continue;
        }
        if w.start >= size {
            break;
        }
        if w.start > at {
            out.push(at..w.start);
        }
        at = at.max(w.end);
    }
    if at < size {
        out.push(at..size);
    }
    out
}

/// [`plan_ranges`] over each hole of `offset..size` left by `written` (ranges already on
/// disk), ascending: only the missing bytes are requested.
pub fn plan_holes(
    offset: u64,
    size: u64,
    written: &[Range<u64>],
    range_size: u64,
    connections: u32,
) -> Vec<Range<u64>> {
    holes(offset, size, written)
        .into_iter()
        .flat_map(|h| plan_ranges(h.start, h.end, range_size, connections))
        .collect()
}

/// The `written_ranges` of item `index` in a batch's `options_json` (see
/// `FetchBatch::options_json`), clipped to `offset..size` and merged. Empty when the options
/// are empty, malformed or name no range for the item.
pub fn written_ranges(options_json: &str, index: u32, offset: u64, size: u64) -> Vec<Range<u64>> {
    let Ok(options) = serde_json::from_str::<serde_json::Value>(options_json) else {
        return Vec::new();
    };
    let Some(list) = options
        .get("written_ranges")
        .and_then(|w| w.get(index.to_string()))
        .and_then(|l| l.as_array())
    else {
        return Vec::new();
    };
    let ranges = list
        .iter()
        .filter_map(|r| {
            let pair = r.as_array()?;
            let (start, end) = (pair.first()?.as_u64()?, pair.get(1)?.as_u64()?);
            Some(start.max(offset)..end.min(size))
        })
        .collect();
    merge_ranges(ranges)
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

struct Shared<'a> {
    client: &'a HttpClient,
    source: &'a Source,
    file: &'a File,
    path: &'a Path,
    size: u64,
    offset: u64,
    opts: &'a DownloadOptions,
    progress: &'a (dyn Fn(u64, u64) + Sync),
    checkpoint: &'a (dyn Fn(u64) + Sync),
    /// The ranges and how many bytes of each are written (contiguously from its start).
    ranges: Vec<Range<u64>>,
    done: Vec<AtomicU64>,
    /// Already written by an earlier (abandoned) parallel pass or run: not reported again.
    covered: Vec<Range<u64>>,
    /// The planned ranges skip bytes up to `size` (written before): the mark ends at `size`.
    skipped_tail: bool,
    /// Per range, the written bytes last handed to `on_range_written`.
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
        if self.skipped_tail { self.size } else { mark }
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
            (self.checkpoint)(mark);
        }
    }

    /// Hands the written part of every range that grew since it was last reported (each range
    /// is written from its start, so `start..start + done` is fully written) to
    /// [`DownloadOptions::on_range_written`]: at most every [`CHECKPOINT_EVERY`] unless `force`
    /// or a range just completed, so that a kill loses little beyond the host's last save.
    /// Ranges whose written part ends at or before `mark` are left to the checkpoint.
    fn report_ranges(&self, mark: u64, force: bool) {
        let Some(hook) = &self.opts.on_range_written else {
            return;
        };
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
                hook(range.start..range.start + done);
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

/// Downloads bytes `offset..size` of `source` into `partial_path` (which must exist; it is
/// opened for writing without truncation), as described in the [module docs](self).
///
/// Returns the network bytes and the serving origin. Errors: classified HTTP/transport
/// failures after retries, `INTEGRITY` when the server's size differs from `size`, `PROTOCOL`
/// for inconsistent `Content-Range`/`Content-Length`, `IO` for the partial file, `CANCELLED`.
#[allow(clippy::too_many_arguments)]
pub async fn download_to_partial(
    client: &HttpClient,
    source: &Source,
    partial_path: &Path,
    offset: u64,
    size: u64,
    opts: &DownloadOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
    checkpoint: &(dyn Fn(u64) + Sync),
    cancel: &CancelToken,
) -> Result<Downloaded, PluginError> {
    cancel.check()?;
    if offset >= size {
        return Ok(Downloaded {
            bytes_transferred: 0,
            origin: origin_of(&source.url),
        });
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
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
        checkpoint(size);
        return Ok(Downloaded {
            bytes_transferred: 0,
            origin: origin_of(&source.url),
        });
    }
    let mut shared = Shared::new(
        client,
        source,
        &file,
        partial_path,
        size,
        offset,
        opts,
        progress,
        checkpoint,
        ranges,
        opts.written.clone(),
    );
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
        shared = Shared::new(
            client,
            source,
            &file,
            partial_path,
            size,
            mark,
            opts,
            progress,
            checkpoint,
            std::iter::once(mark..size).collect(),
            covered,
        );
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
    #[allow(clippy::too_many_arguments)]
    fn new(
        client: &'a HttpClient,
        source: &'a Source,
        file: &'a File,
        path: &'a Path,
        size: u64,
        offset: u64,
        opts: &'a DownloadOptions,
        progress: &'a (dyn Fn(u64, u64) + Sync),
        checkpoint: &'a (dyn Fn(u64) + Sync),
        ranges: Vec<Range<u64>>,
        covered: Vec<Range<u64>>,
    ) -> Self {
        let done = ranges.iter().map(|_| AtomicU64::new(0)).collect();
        let skipped_tail = ranges.last().is_none_or(|r| r.end < size);
        let reported = ranges.iter().map(|_| AtomicU64::new(0)).collect();
        Self {
            skipped_tail,
            reported,
            last_ranges_at: Mutex::new(Instant::now()),
            client,
            source,
            file,
            path,
            size,
            offset,
            opts,
            progress,
            checkpoint,
            ranges,
            done,
            covered,
            net: AtomicU64::new(0),
            last_checkpoint: AtomicU64::new(offset),
            last_checkpoint_at: Mutex::new(Instant::now()),
            origin: Mutex::new(origin_of(&source.url)),
            started: Instant::now(),
        }
    }
}

/// Runs the workers over the ranges of `shared`.
async fn run(shared: &Shared<'_>, cancel: &CancelToken) -> Result<(), Stop> {
    let next = &AtomicUsize::new(0);
    let workers = (shared.opts.connections.max(1) as usize).min(shared.ranges.len());
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
    let policy = &shared.opts.retry;
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
        if shared.done[i].load(Ordering::Acquire) > before {
            failures = 0;
        }
        failures += 1;
        if !error.retryable || failures >= policy.max_attempts {
            return Err(Stop::Error(error));
        }
        let Some(wait) = policy.delay(failures, &error) else {
            return Err(Stop::Error(error));
        };
        let note = RetryNote {
            error,
            attempt: failures + 1,
            max_attempts: policy.max_attempts,
            delay: wait,
            range: pos..range.end,
        };
        log::info!("range {}-{}: {note}", pos, range.end - 1);
        if let Some(hook) = &shared.opts.on_retry {
            hook(&note);
        }
        sleep(cancel, wait).await?;
    }
}

fn parse_content_range(value: &HeaderValue) -> Option<(u64, u64, Option<u64>)> {
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
    let whole = pos == 0 && range.end == shared.size;
    let mut request =
        Request::get(shared.source.url.clone()).credential(shared.source.credential.clone());
    request.origin_headers = shared.source.headers.clone();
    if !whole {
        let value = format!("bytes={pos}-{}", range.end - 1);
        request.headers.insert(
            RANGE,
            HeaderValue::from_str(&value).map_err(|e| protocol("range header", e))?,
        );
    }
    let answer = shared.client.send(&request, cancel).await?;
    let context = answer.context();
    *shared.origin.lock().unwrap_or_else(|e| e.into_inner()) = origin_of(&answer.url);
    let status = answer.response.status();
    let headers = answer.response.headers();
    let length: Option<u64> = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    // `skip`: body bytes before `pos`; `end`: the position after the last byte we will write.
    let (skip, end) = match status {
        StatusCode::PARTIAL_CONTENT => {
            let (first, last, total) = headers
                .get(CONTENT_RANGE)
                .and_then(parse_content_range)
                .ok_or_else(|| {
                    protocol(&context, "206 without a valid Content-Range").retryable(true)
                })?;
            if let Some(total) = total
                && total != shared.size
            {
                return Err(Stop::Error(size_mismatch(&context, total, shared.size)));
            }
            if first != pos || last >= range.end {
                return Err(Stop::Error(
                    protocol(
                        &context,
                        format!(
                            "asked for bytes {pos}-{}, got Content-Range {first}-{last}",
                            range.end - 1
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
                        &context,
                        format!(
                            "Content-Length {length} does not match Content-Range {first}-{last}"
                        ),
                    )
                    .retryable(true),
                ));
            }
            (0, last + 1)
        }
        StatusCode::OK => {
            if let Some(length) = length
                && length != shared.size
            {
                return Err(Stop::Error(size_mismatch(&context, length, shared.size)));
            }
            if !whole && shared.ranges.len() > 1 {
                return Err(Stop::RangeIgnored);
            }
            // The whole body; keep what lies in `pos..range.end` (range.end == size here).
            (pos, range.end)
        }
        StatusCode::RANGE_NOT_SATISFIABLE => {
            let total = headers
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().strip_prefix("bytes */"))
                .and_then(|t| t.parse::<u64>().ok());
            return Err(Stop::Error(match total {
                Some(total) if total != shared.size => size_mismatch(&context, total, shared.size),
                _ => classify(status, headers, &context),
            }));
        }
        _ => return Err(Stop::Error(classify(status, headers, &context))),
    };
    let mut response = answer.response;
    let mut skipped = 0u64;
    let mut at = pos;
    let (mut pending_file, mut pending_net) = (0u64, 0u64);
    let mut last_flush = Instant::now();
    let flush = |file_bytes: &mut u64, net_bytes: &mut u64| {
        if *file_bytes > 0 || *net_bytes > 0 {
            (shared.progress)(*file_bytes, *net_bytes);
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
            Err(e) => break Err(classify_transport(&e, &context)),
        };
        let n = chunk.len() as u64;
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
            if let Err(e) = write_at(shared.file, &data[..room], at) {
                break Err(io(shared.path, "cannot write the partial file", &e));
            }
            pending_file += shared.fresh(at, at + room as u64);
            at += room as u64;
            shared.done[i].store(at - range.start, Ordering::Release);
        }
        if room < data.len() {
            break Err(
                protocol(&context, "the server sent more bytes than announced").retryable(true),
            );
        }
        if pending_file >= FLUSH_BYTES || last_flush.elapsed() >= FLUSH_EVERY {
            flush(&mut pending_file, &mut pending_net);
            last_flush = Instant::now();
        }
        if at >= end && status == StatusCode::OK {
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
    fn holes_are_what_written_ranges_leave_of_the_remainder() {
        assert_eq!(holes(10, 100, &[]), vec![10..100]);
        assert_eq!(
            holes(10, 100, &[50..60, 0..5, 20..30, 25..40, 95..120]),
            vec![10..20, 40..50, 60..95]
        );
        assert_eq!(holes(10, 100, &[0..50, 50..100]), Vec::<Range<u64>>::new());
        assert_eq!(holes(10, 100, &[5..15, 90..100]), vec![15..90]);
        assert_eq!(merge_ranges(vec![5..6, 0..2, 2..3, 9..9]), vec![0..3, 5..6]);
    }

    #[test]
    fn plan_holes_requests_only_the_holes_in_order() {
        let size = 64 * MIN_RANGE;
        let written = vec![8 * MIN_RANGE..20 * MIN_RANGE, 40 * MIN_RANGE..size];
        let plan = plan_holes(MIN_RANGE, size, &written, 4 * MIN_RANGE, 4);
        assert!(plan.windows(2).all(|w| w[0].end <= w[1].start), "{plan:?}");
        let planned: u64 = plan.iter().map(|r| r.end - r.start).sum();
        assert_eq!(planned, 7 * MIN_RANGE + 20 * MIN_RANGE);
        assert!(
            plan.iter()
                .all(|r| written.iter().all(|w| r.end <= w.start || r.start >= w.end)),
            "nothing written is asked for again: {plan:?}"
        );
        assert_eq!(plan.first().map(|r| r.start), Some(MIN_RANGE));
        assert_eq!(plan.last().map(|r| r.end), Some(40 * MIN_RANGE));
    }

    #[test]
    fn written_ranges_are_read_from_the_batch_options_for_one_item() {
        let json = r#"{"written_ranges":{"0":[[10,20],[30,40]],"2":[[5,500]]}}"#;
        assert_eq!(written_ranges(json, 0, 15, 35), vec![15..20, 30..35]);
        assert_eq!(written_ranges(json, 2, 0, 100), vec![5..100]);
        assert!(written_ranges(json, 1, 0, 100).is_empty());
        assert!(written_ranges("", 0, 0, 100).is_empty());
        assert!(written_ranges(r#"{"written_ranges":{"0":[[1]]}}"#, 0, 0, 9).is_empty());
    }

    #[test]
    fn ranges_cover_the_remainder_exactly() {
        assert_eq!(split_ranges(0, 10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(split_ranges(3, 10, 4), vec![3..7, 7..10]);
        assert_eq!(split_ranges(10, 10, 4), Vec::<Range<u64>>::new());
        assert_eq!(split_ranges(0, 8, 4), vec![0..4, 4..8]);
        assert_eq!(
            split_ranges(0, 5, 0),
            (0..5).map(|i| i..i + 1).collect::<Vec<_>>()
        );
        let big = split_ranges(1, 1 << 30, 16 << 20);
        assert_eq!(big.first().unwrap().start, 1);
        assert_eq!(big.last().unwrap().end, 1 << 30);
        assert!(big.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn plans_keep_every_connection_busy_and_finish_together() {
        const M: u64 = MIN_RANGE;
        let contiguous = |r: &[Range<u64>], a: u64, b: u64| {
            r.first().unwrap().start == a
                && r.last().unwrap().end == b
                && r.windows(2).all(|w| w[0].end == w[1].start)
        };
        // Small remainders and one connection: one request.
        assert_eq!(plan_ranges(0, M, 16 * M, 8).len(), 1);
        assert_eq!(
            plan_ranges(5, 100 * M, 16 * M, 1),
            std::iter::once(5..100 * M).collect::<Vec<_>>()
        );
        assert!(plan_ranges(7, 7, 16 * M, 8).is_empty());
        // A mid-size file is spread over every connection.
        let r = plan_ranges(0, 40 * M, 16 * M, 8);
        assert!(r.len() >= 8 && contiguous(&r, 0, 40 * M), "{r:?}");
        // A large file: full ranges, then smaller pieces at the end.
        let r = plan_ranges(3, 1024 * M, 16 * M, 8);
        assert!(contiguous(&r, 3, 1024 * M));
        assert!(r.iter().all(|x| x.end - x.start <= 16 * M));
        assert_eq!(r.first().unwrap().end - 3, 16 * M);
        assert_eq!(r.last().unwrap().end - r.last().unwrap().start, 4 * M);
        let tail: u64 = r.iter().rev().take(32).map(|x| x.end - x.start).sum();
        assert_eq!(tail, 128 * M);
        // An explicitly small range size is honoured.
        let r = plan_ranges(0, 4 * M, 256 * 1024, 4);
        assert!(r.len() >= 16 && contiguous(&r, 0, 4 * M), "{}", r.len());
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
        let record = |n: u64| marks.lock().unwrap().push(n);
        let shared = Shared::new(
            &client,
            &source,
            &file,
            &path,
            30,
            5,
            &opts,
            &|_, _| {},
            &record,
            split_ranges(5, 30, 10),
            vec![0..2, 20..25],
        );
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
