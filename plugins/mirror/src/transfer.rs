//! One download attempt from one endpoint, through hub-http's shared ranged downloader, with
//! what it achieved even when it failed: the contiguous prefix on disk (its last checkpoint,
//! which the downloader sends before it returns a failure), so that the next endpoint continues
//! from there, and the network bytes it received.
//!
//! Only the checkpoint says what is on disk: progress deltas of parallel ranges are not a
//! prefix (a later range may be complete while an earlier one has a hole).

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hubget_hub_http::HubApi;
use hubget_hub_http::download::{
    DownloadOptions, Event, ItemEvents, PartialTarget, Source, download_to_partial,
};
use hubget_plugin_api::{CancelToken, FetchItem, PluginError, ProgressEvent};

/// What one attempt fetches, and from where.
#[derive(Debug)]
pub struct Leg<'a> {
    /// The endpoint's API client (its HTTP client and credential).
    pub api: &'a HubApi,
    /// How the endpoint's downloads are split and retried.
    pub opts: &'a DownloadOptions,
    /// The file's `resolve` URL at the endpoint, with the endpoint's credential.
    pub source: Source,
    /// Every byte before it is on disk.
    pub offset: u64,
    /// Ranges past `offset` already on disk: not fetched again.
    pub already: &'a [Range<u64>],
    /// The previous attempt's [`Attempt::balance`]: absorbed from (or added to) the byte counts
    /// reported now, so that the host's count ends at the file size.
    pub balance: i64,
}

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

/// Downloads `item` along `leg` on `runtime`, sending progress, checkpoints, written ranges and
/// retries to the host through `to`.
pub fn download(
    runtime: &tokio::runtime::Runtime,
    leg: Leg<'_>,
    item: &FetchItem,
    to: ItemEvents<'_>,
    cancel: &CancelToken,
) -> Attempt {
    let offset = leg.offset;
    let written = AtomicU64::new(offset);
    let network = AtomicU64::new(0);
    let forwarded = AtomicU64::new(0);
    let adjust = Mutex::new(leg.balance);
    let opts = leg.opts.clone().with_written(leg.already.to_vec());
    let events = |event: Event| match event {
        Event::Bytes { file, network: net } => {
            network.fetch_add(net, Ordering::Relaxed);
            let file = settle(&adjust, file);
            forwarded.fetch_add(file, Ordering::Relaxed);
            to.send(Event::Bytes { file, network: net });
        }
        Event::Checkpoint(n) => {
            written.fetch_max(n, Ordering::Relaxed);
            to.send(event);
        }
        other => to.send(other),
    };
    let source = leg.source;
    let target = PartialTarget::of(item, offset);
    let result = runtime.block_on(download_to_partial(
        leg.api.client(),
        &source,
        target,
        &opts,
        &events,
        cancel,
    ));
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
        leg.balance + forwarded.load(Ordering::Relaxed) as i64 - (written - offset) as i64;
    if written == item.file.size && balance < 0 {
        // Complete, but some written bytes were never reported: report them now.
        to.progress
            .on_event(ProgressEvent::bytes(to.index, balance.unsigned_abs(), 0));
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
