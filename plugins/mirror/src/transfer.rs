//! One download attempt from one endpoint, through hub-http's shared ranged downloader, with
//! what it achieved even when it failed: the contiguous prefix on disk (its last checkpoint,
//! which the downloader sends before it returns a failure), so that the next endpoint continues
//! from there, and the network bytes it received.
//!
//! Only the checkpoint says what is on disk: progress deltas of parallel ranges are not a
//! prefix (a later range may be complete while an earlier one has a hole).

use std::path::Path;
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
    /// Whether the file is complete.
    pub result: Result<(), PluginError>,
}

/// Downloads `item` from `url` (a `resolve` URL of `endpoint`) starting at `offset`, forwarding
/// progress and checkpoints to the host.
#[allow(clippy::too_many_arguments)]
pub fn download(
    pool: &Pool,
    endpoint: &Endpoint,
    url: Url,
    item: &FetchItem,
    offset: u64,
    index: u32,
    progress: &Progress,
    cancel: &CancelToken,
) -> Attempt {
    let written = AtomicU64::new(offset);
    let network = AtomicU64::new(0);
    let opts = endpoint.download_options();
    let on_progress = |file_bytes: u64, net_bytes: u64| {
        network.fetch_add(net_bytes, Ordering::Relaxed);
        progress.on_event(ProgressEvent::bytes(index, file_bytes, net_bytes));
    };
    let on_checkpoint = |n: u64| {
        written.fetch_max(n, Ordering::Relaxed);
        progress.on_event(ProgressEvent::checkpoint(index, n));
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
    let result = result.map(|done| {
        written.fetch_max(item.file.size, Ordering::Relaxed);
        log::debug!(
            "{}: {} network bytes from {}",
            item.file.path,
            done.bytes_transferred,
            done.origin
        );
    });
    Attempt {
        written: written.load(Ordering::Relaxed).min(item.file.size),
        network_bytes: network.load(Ordering::Relaxed),
        result,
    }
}
