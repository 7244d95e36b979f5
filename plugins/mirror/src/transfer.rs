//! One download attempt from one endpoint, through hub-http's shared ranged downloader, with
//! what it achieved even when it failed: the contiguous prefix on disk (its last checkpoint,
//! which the downloader sends before it returns a failure), so that the next endpoint continues
//! from there, and the network bytes it received.
//!
//! Only the checkpoint says what is on disk: progress deltas of parallel ranges are not a
//! prefix (a later range may be complete while an earlier one has a hole).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hubget_hub_http::download::{Source, download_to_partial};
use hubget_hub_http::reqwest::Url;
use hubget_plugin_api::{CancelToken, FetchItem, PluginError, Progress, ProgressEvent};

use crate::endpoint::{Endpoint, Pool};

/// The result of one attempt.
#[derive(Debug)]
pub struct Attempt {
    /// Every byte of the partial file before this position is written (at least the offset).
    pub written: u64,
    /// Bytes received from the network during the attempt.
    pub network_bytes: u64,
    /// File bytes reported to the host so far minus the prefix on disk (`written - item
    /// offset`): positive when ranges past a hole were reported (the next attempt rewrites them
    /// and must not report them again), negative when written bytes were never reported (a range
    /// dropped before it flushed its progress).
    pub balance: i64,
    /// Whether the file is complete.
    pub result: Result<(), PluginError>,
}

/// Downloads `item` from `url` (a `resolve` URL of `endpoint`) starting at `offset`, forwarding
/// progress, checkpoints and written ranges to the host (skipping the ranges in `already`). `balance` is the previous attempt's
/// [`Attempt::balance`]: absorbed from (or added to) the byte counts reported now, so that the
/// host's count ends at the file size.
#[allow(clippy::too_many_arguments)]
pub fn download(
    pool: &Pool,
    endpoint: &Endpoint,
    url: Url,
    item: &FetchItem,
    offset: u64,
    already: &[std::ops::Range<u64>],
    balance: i64,
    index: u32,
    progress: &Progress,
    cancel: &CancelToken,
) -> Attempt {
    let written = AtomicU64::new(offset);
    let network = AtomicU64::new(0);
    let forwarded = AtomicU64::new(0);
    let adjust = Mutex::new(balance);
    // Skip the ranges written before; tell the host about each range written now.
    // The hook must own what it captures: finished ranges wait in a channel, forwarded from
    // this thread with the next progress call and when the download returns.
    let (range_tx, ranges) = std::sync::mpsc::channel::<std::ops::Range<u64>>();
    let range_tx = Mutex::new(range_tx);
    let ranges = Mutex::new(ranges);
    let forward_ranges = || {
        let ranges = ranges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Ok(r) = ranges.try_recv() {
            progress.on_event(ProgressEvent::range_written(index, r.start, r.end));
        }
    };
    let opts = &endpoint.download_options().clone().with_written(
        already.to_vec(),
        Some(std::sync::Arc::new(move |r: std::ops::Range<u64>| {
            let _ = range_tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .send(r);
        })),
    );
    let on_progress = |file_bytes: u64, net_bytes: u64| {
        network.fetch_add(net_bytes, Ordering::Relaxed);
        let file_bytes = settle(&adjust, file_bytes);
        forwarded.fetch_add(file_bytes, Ordering::Relaxed);
        progress.on_event(ProgressEvent::bytes(index, file_bytes, net_bytes));
        forward_ranges();
    };
    let on_checkpoint = |n: u64| {
        written.fetch_max(n, Ordering::Relaxed);
        progress.on_event(ProgressEvent::checkpoint(index, n));
        forward_ranges();
    };
    let mut source = Source::new(url);
    source.credential = endpoint.api().credential().cloned();
    let result = pool.runtime().block_on(download_to_partial(
        endpoint.api().client(),
        &source,
        Path::new(item.partial_path.as_str()),
        offset,
        item.file.size,
        opts,
        &on_progress,
        &on_checkpoint,
        cancel,
    ));
    forward_ranges();
    let result = result.map(|done| {
        written.fetch_max(item.file.size, Ordering::Relaxed);
        log::debug!(
            "{}: {} network bytes from {}",
            item.file.path,
            done.bytes_transferred,
            done.origin
        );
    });
    let written = written.load(Ordering::Relaxed).min(item.file.size);
    let mut balance =
        balance + forwarded.load(Ordering::Relaxed) as i64 - (written - offset) as i64;
    if written == item.file.size && balance < 0 {
        // Complete, but some written bytes were never reported: report them now.
        progress.on_event(ProgressEvent::bytes(index, balance.unsigned_abs(), 0));
        balance = 0;
    }
    Attempt {
        written,
        network_bytes: network.load(Ordering::Relaxed),
        balance,
        result,
    }
}

/// Applies the pending adjustment to a progress delta: a positive one absorbs bytes already
/// reported, a negative one adds bytes written but never reported.
fn settle(adjust: &Mutex<i64>, file_bytes: u64) -> u64 {
    let mut a = adjust.lock().unwrap_or_else(|e| e.into_inner());
    if *a > 0 {
        let absorbed = (*a as u64).min(file_bytes);
        *a -= absorbed as i64;
        file_bytes - absorbed
    } else {
        let added = a.unsigned_abs();
        *a = 0;
        file_bytes + added
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjustments_absorb_or_add_once() {
        let a = Mutex::new(10);
        assert_eq!(settle(&a, 4), 0);
        assert_eq!(settle(&a, 8), 2);
        assert_eq!(settle(&a, 5), 5);
        let a = Mutex::new(-7);
        assert_eq!(settle(&a, 1), 8);
        assert_eq!(settle(&a, 1), 1);
    }
}
