//! The progress sink of a backend call: per-file counters ([`Track`]) fed by the backend's
//! events, and the activity clock the stall watchdog reads. It runs inside plugin code, so it
//! never panics and never blocks on output.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hubget_plugin_api::protocol::{RangeWritten, RetryNote, merge_ranges};
use hubget_plugin_api::{EventKind, ProgressEvent, ProgressSink};

use super::stall::StallClock;

/// Per-file counters fed by the progress sink.
#[derive(Default)]
pub(super) struct Track {
    pub(super) written: AtomicU64,
    pub(super) network: AtomicU64,
    pub(super) checkpoint: AtomicU64,
    /// Ranges past the checkpoint reported written (`RANGE_WRITTEN`), merged, and a counter
    /// bumped on every change (so that the state is saved again).
    pub(super) ranges: Mutex<(Vec<std::ops::Range<u64>>, u64)>,
    /// The latest backend `RETRY` message not reported yet.
    pub(super) retry: Mutex<Option<String>>,
}

impl Track {
    pub(super) fn take_retry(&self) -> Option<String> {
        self.retry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The progress sink of one call: maps item indices to file counters and records activity
/// for the stall watchdog. Never panics, never blocks on output (it runs inside plugin code):
/// backend retries are left in the file's [`Track`] for the call's loop to report.
pub(super) struct Sink {
    pub(super) tracks: Vec<Arc<Track>>,
    pub(super) t0: Instant,
    /// The last progress, in ms since `t0`.
    pub(super) activity_ms: Arc<AtomicU64>,
    /// The watchdog's clock (announced retry waits).
    pub(super) stall: Arc<Mutex<StallClock>>,
    pub(super) backend: String,
    /// The backend reads local directories (`Features::LOCAL`): no network bytes.
    pub(super) local: bool,
    /// The token, only to redact it from log lines.
    pub(super) token: Option<String>,
}

impl ProgressSink for Sink {
    fn on_event(&self, event: ProgressEvent) {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let Some(track) = self.tracks.get(event.index as usize) else {
                return;
            };
            match event.kind {
                EventKind::BYTES => {
                    track.written.fetch_add(event.bytes, Ordering::Relaxed);
                    // "0 if unknown": count the file bytes, except for local backends.
                    let net = if event.network_bytes > 0 || self.local {
                        event.network_bytes
                    } else {
                        event.bytes
                    };
                    track.network.fetch_add(net, Ordering::Relaxed);
                    // Only bytes of the file are progress: network bytes that complete nothing
                    // (a chunk trickled for ever) must not keep the watchdog quiet.
                    if event.bytes > 0 {
                        self.touch();
                    }
                }
                EventKind::CHECKPOINT => {
                    track.checkpoint.fetch_max(event.bytes, Ordering::Relaxed);
                    self.touch();
                }
                EventKind::RANGE_WRITTEN => {
                    if let Some(range) =
                        RangeWritten::parse(&event.message).map(RangeWritten::range)
                    {
                        let mut r = track.ranges.lock().unwrap_or_else(PoisonError::into_inner);
                        let mut all = std::mem::take(&mut r.0);
                        all.push(range);
                        r.0 = merge_ranges(all);
                        r.1 += 1;
                    }
                    self.touch();
                }
                EventKind::RETRY => {
                    let message = event.message.to_string();
                    if let Some(delay) = RetryNote::parse(&message).delay {
                        let now = self.t0.elapsed();
                        let mut clock = self.stall.lock().unwrap_or_else(PoisonError::into_inner);
                        clock.progress(Duration::from_millis(
                            self.activity_ms.load(Ordering::Relaxed),
                        ));
                        clock.retry(now, delay);
                    }
                    log::debug!("{}: retrying: {}", self.backend, self.redact(&message));
                    *track.retry.lock().unwrap_or_else(PoisonError::into_inner) = Some(message);
                }
                EventKind::INFO | EventKind::STARTED if !event.message.is_empty() => {
                    log::debug!("{}: {}", self.backend, self.redact(&event.message));
                }
                _ => {}
            }
        }));
    }
}

impl Sink {
    fn redact(&self, text: &str) -> String {
        crate::redact::redact(text, self.token.as_deref())
    }

    fn touch(&self) {
        let ms = self.t0.elapsed().as_millis() as u64;
        self.activity_ms.fetch_max(ms, Ordering::Relaxed);
    }
}
