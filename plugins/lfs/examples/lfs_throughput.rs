//! Transport-only throughput of the lfs backend, without the host: resolves a repo on a running
//! hubsim (or any Hub endpoint) and fetches one file through the backend into a temp file.
//!
//! ```text
//! cargo run --release -p hubget-lfs --example lfs_throughput -- \
//!     --endpoint http://127.0.0.1:PORT --repo bench/lfs-big --file big.bin [--connections 8]
//! ```
//! Prints one JSON line: seconds, MB/s, network bytes, peak RSS (VmHWM) in MB.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RResult, RString, RVec};
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::{
    CancelToken, EventKind, FetchBatch, FetchItem, HostSettings, ProgressEvent, ProgressSink,
    ProgressSink_TO, RepoType, ResolveRequest,
};

struct Count(Arc<AtomicU64>);

impl ProgressSink for Count {
    fn on_event(&self, event: ProgressEvent) {
        if event.kind == EventKind::BYTES {
            self.0.fetch_add(event.bytes, Ordering::Relaxed);
        }
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb * 1024.0 / 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let endpoint = arg(&args, "--endpoint").expect("--endpoint URL");
    let repo = arg(&args, "--repo").expect("--repo owner/name");
    let file = arg(&args, "--file").expect("--file path");
    let mut settings = HostSettings {
        endpoint,
        ..HostSettings::default()
    };
    if let Some(c) = arg(&args, "--connections") {
        settings.connections_per_file = c.parse().expect("--connections N");
    }
    let backend = hubget_lfs::Backend::new(settings, "").expect("backend");
    let cancel = CancelToken::new();
    let manifest = backend
        .resolve(
            &ResolveRequest {
                repo_type: RepoType::MODEL,
                repo_id: repo.as_str().into(),
                revision: "main".into(),
                options_json: RString::new(),
            },
            &cancel,
        )
        .expect("resolve");
    let f = manifest.file(&file).expect("file in the manifest").clone();
    let dir = tempfile::tempdir().expect("temp dir");
    let partial = dir.path().join("partial");
    std::fs::write(&partial, b"").expect("partial");
    let bytes = Arc::new(AtomicU64::new(0));
    let progress = ProgressSink_TO::from_ptr(RArc::new(Count(bytes.clone())), TD_Opaque);
    let batch = FetchBatch {
        repo_type: RepoType::MODEL,
        repo_id: repo.as_str().into(),
        commit: manifest.commit.clone(),
        revision: "main".into(),
        items: RVec::from(vec![FetchItem {
            file: f.clone(),
            partial_path: partial.to_str().expect("utf-8 path").into(),
            offset: 0,
        }]),
        options_json: RString::new(),
    };
    let t = Instant::now();
    let out = backend.fetch(&batch, &progress, &cancel);
    let secs = t.elapsed().as_secs_f64();
    let done = match &out[0].result {
        RResult::ROk(d) => d.clone(),
        RResult::RErr(e) => panic!("fetch failed: {e}"),
    };
    println!(
        "{}",
        serde_json::json!({
            "secs": secs,
            "mb_s": f.size as f64 / secs / 1e6,
            "size": f.size,
            "bytes_transferred": done.bytes_transferred,
            "progress_bytes": bytes.load(Ordering::Relaxed),
            "peak_rss_mb": peak_rss_mb(),
        })
    );
}
