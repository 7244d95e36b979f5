//! Tuning aid (not a test): the xet backend's throughput against an in-process, shaped hubsim.
//!
//! `cargo run --release -p hubget-xet --example xet_throughput -- [SIZE_MIB] [RUNS] [CONFIG_TOML]`
//! Shaping: 40 MB/s per connection, 200 MB/s in total, 20 ms latency (issue 6's benchmark link;
//! override with `RATE_PER_CONN`, `RATE_TOTAL`, `LATENCY_MS`).
//! Prints wall time and the fraction of the total cap per run. Peak RSS is not meaningful here
//! (hubsim's CAS lives in the same process): `bench/xet/run.py` measures that.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RString, RVec};
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::{
    CancelToken, FetchBatch, FetchItem, HostSettings, ProgressEvent, ProgressSink, ProgressSink_TO,
    RepoType, ResolveRequest,
};
use hubsim::{
    CommitSpec, Content, FileSpec, FixtureSpec, HubSim, RepoKind, RepoSpec, Shaping, Storage,
};

struct Null;
impl ProgressSink for Null {
    fn on_event(&self, _event: ProgressEvent) {}
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size_mib: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(256);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let config = args.get(3).cloned().unwrap_or_default();
    let rate_total = env_or("RATE_TOTAL", 200_000_000);
    let spec = FixtureSpec {
        repos: vec![RepoSpec {
            id: "bench/big".into(),
            kind: RepoKind::Model,
            private: false,
            gated: false,
            commits: vec![CommitSpec {
                message: "w".into(),
                files: vec![FileSpec {
                    path: "w.bin".into(),
                    storage: Storage::Xet,
                    content: Content::Random {
                        size: size_mib * 1024 * 1024,
                        seed: 6,
                        patches: vec![],
                    },
                }],
                delete: vec![],
            }],
            branches: Default::default(),
            tags: Default::default(),
            prs: Default::default(),
        }],
    };
    let t = Instant::now();
    let sim = HubSim::start_blocking(HubSim::builder().fixtures(spec).shape(Shaping {
        rate_per_conn: Some(env_or("RATE_PER_CONN", 40_000_000)),
        rate_total: Some(rate_total),
        latency_ms: env_or("LATENCY_MS", 20),
    }))
    .expect("hubsim");
    println!("hubsim up in {:.1} s", t.elapsed().as_secs_f64());
    let settings = HostSettings {
        endpoint: sim.hub_url().to_owned(),
        ..HostSettings::default()
    };
    let backend = hubget_xet::Backend::new(settings, &config).expect("backend");
    let manifest = backend
        .resolve(
            &ResolveRequest {
                repo_type: RepoType::MODEL,
                repo_id: "bench/big".into(),
                revision: "main".into(),
                options_json: RString::new(),
            },
            &CancelToken::new(),
        )
        .expect("resolve");
    let file = manifest.files[0].clone();
    let dir = tempfile::tempdir().unwrap();
    for run in 0..runs {
        let path = dir.path().join(format!("w{run}"));
        std::fs::write(&path, b"").unwrap();
        let batch = FetchBatch {
            repo_type: RepoType::MODEL,
            repo_id: "bench/big".into(),
            commit: manifest.commit.clone(),
            revision: "main".into(),
            items: RVec::from(vec![FetchItem {
                file: file.clone(),
                partial_path: path.display().to_string().into(),
                offset: 0,
            }]),
            options_json: RString::new(),
        };
        sim.reset_counters();
        let progress = ProgressSink_TO::from_ptr(RArc::new(Null), TD_Opaque);
        let t = Instant::now();
        let out = backend.fetch(&batch, &progress, &CancelToken::new());
        let wall = t.elapsed().as_secs_f64();
        let ok = out[0].result.is_ok();
        let c = sim.counters();
        let conns = c.requests_to(hubsim::Origin::Cas, "fetch_term");
        println!(
            "run {run}: ok={ok} {wall:.2} s, {:.2} of cap, {} fetch_term requests, {} CAS bytes",
            file.size as f64 / wall / rate_total as f64,
            conns,
            c.bytes_from(hubsim::Origin::Cas)
        );
        std::fs::remove_file(&path).ok();
    }
}
