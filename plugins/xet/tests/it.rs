//! The xet backend against hubsim (a local Hub with Hugging Face's real Xet CAS), called
//! directly through the SDK trait: no host, no plugin loading.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use abi_stable::std_types::{ROption, RString};
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::testing::{
    RecordingProgress, batch, done as ok, error as err, fetch_unobserved, item,
};
use hubget_plugin_api::{
    CancelToken, ErrorKind, HostSettings, Manifest, ManifestFile, PluginError, RepoType,
    ResolveRequest,
};
use hubget_xet::Backend;
use hubsim::{
    CommitSpec, Content, Fault, FaultAction, FileSpec, FixtureSpec, HubSim, HubSimHandle, Origin,
    RepoKind, RepoSpec, Shaping, Storage,
};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

fn start(spec: FixtureSpec, shaping: Shaping) -> HubSimHandle {
    HubSim::start_blocking(HubSim::builder().fixtures(spec).shape(shaping)).expect("hubsim starts")
}

/// `acme/tiny` plus `acme/big`: one Xet file of `big_mib` MiB.
fn with_big(big_mib: u64) -> FixtureSpec {
    FixtureSpec::minimal().repo(RepoSpec {
        id: "acme/big".into(),
        kind: RepoKind::Model,
        private: false,
        gated: false,
        commits: vec![CommitSpec {
            message: "big".into(),
            files: vec![FileSpec {
                path: "big.bin".into(),
                storage: Storage::Xet,
                content: Content::Random {
                    size: big_mib * MIB,
                    seed: 77,
                    patches: vec![],
                },
            }],
            delete: vec![],
        }],
        branches: Default::default(),
        tags: Default::default(),
        prs: Default::default(),
    })
}

fn backend(sim: &HubSim, config: &str) -> Backend {
    let settings = HostSettings {
        endpoint: sim.hub_url().to_owned(),
        token: Some(sim.token().to_owned()),
        max_attempts: 2,
        ..HostSettings::default()
    };
    Backend::new(settings, config).expect("backend starts")
}

fn resolve(backend: &Backend, repo: &str) -> Manifest {
    let request = ResolveRequest {
        repo_type: RepoType::MODEL,
        repo_id: repo.into(),
        revision: "main".into(),
        options_json: RString::new(),
    };
    backend
        .resolve(&request, &CancelToken::new())
        .expect("resolve works")
}

fn file<'a>(manifest: &'a Manifest, path: &str) -> &'a ManifestFile {
    manifest
        .file(path)
        .unwrap_or_else(|| panic!("{path} in the manifest"))
}

/// A partial file holding `prefix` (the host creates it before `fetch`).
/// Downloads acme/big's `big.bin` whole into `dir`: the true bytes (checked against the
/// manifest's sha256) and what a whole file costs from the CAS.
fn whole_big_file(
    sim: &HubSim,
    backend: &Backend,
    manifest: &Manifest,
    dir: &Path,
) -> (Vec<u8>, u64) {
    let big = file(manifest, "big.bin");
    let path = partial(dir, "full", b"");
    sim.reset_counters();
    let fb = batch("acme/big", &manifest.commit, vec![item(big, &path, 0)]);
    ok(&fetch_unobserved(backend, &fb)[0]);
    assert_eq!(sha256_of(&path), big.sha256.as_ref().unwrap().as_str());
    let cas = sim.counters().bytes_from(Origin::Cas);
    (std::fs::read(&path).unwrap(), cas)
}

/// acme/tiny (hubsim's minimal set), unshaped: the hubsim, the backend with `config` against
/// it, and the repository's manifest.
fn tiny_repo(config: &str) -> (HubSimHandle, Backend, Manifest) {
    started(FixtureSpec::minimal(), "acme/tiny", config)
}

/// acme/big (one 8 MiB Xet file, `big.bin`) beside acme/tiny, as [`tiny_repo`].
fn big_repo(config: &str) -> (HubSimHandle, Backend, Manifest) {
    started(with_big(8), "acme/big", config)
}

fn started(spec: FixtureSpec, repo: &str, config: &str) -> (HubSimHandle, Backend, Manifest) {
    let sim = start(spec, Shaping::default());
    let backend = backend(&sim, config);
    let manifest = resolve(&backend, repo);
    (sim, backend, manifest)
}

fn partial(dir: &Path, name: &str, prefix: &[u8]) -> PathBuf {
    let path = dir.join(format!("{name}.incomplete"));
    std::fs::write(&path, prefix).unwrap();
    path
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let digest = Sha256::digest(&bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The expected sha256 of a file at `main`, from hubsim's own fixture info.
fn expected_sha(sim: &HubSim, repo: &str, path: &str) -> String {
    sim.info().file(repo, path).sha256
}

#[test]
fn xet_files_arrive_byte_exact_from_the_cas_and_other_files_from_the_hub() {
    let (sim, backend, manifest) = tiny_repo("");
    let xet_a = file(&manifest, "xet-a.bin");
    let weights = file(&manifest, "w.safetensors");
    let lfs = file(&manifest, "lfs.bin");
    let config = file(&manifest, "config.json");
    assert!(xet_a.xet_hash.is_some() && weights.xet_hash.is_some());
    assert!(lfs.xet_hash.is_none() && config.xet_hash.is_none());

    let dir = tempfile::tempdir().unwrap();
    let paths = [
        partial(dir.path(), "xet-a", b""),
        partial(dir.path(), "lfs", b""),
        partial(dir.path(), "w", b""),
        partial(dir.path(), "config", b""),
    ];
    let items = vec![
        item(xet_a, &paths[0], 0),
        item(lfs, &paths[1], 0),
        item(weights, &paths[2], 0),
        item(config, &paths[3], 0),
    ];
    sim.reset_counters();
    let recorder = RecordingProgress::new();
    let outcomes = backend.fetch(
        &batch("acme/tiny", &manifest.commit, items),
        &recorder.progress(),
        &CancelToken::new(),
    );
    assert_eq!(
        outcomes.iter().map(|o| o.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );

    for (index, path, name) in [(0, &paths[0], "xet-a.bin"), (2, &paths[2], "w.safetensors")] {
        let done = ok(&outcomes[index]);
        assert_eq!(
            sha256_of(path),
            expected_sha(&sim, "acme/tiny", name),
            "{name}"
        );
        assert_eq!(
            done.source.as_str(),
            sim.cas_url(),
            "{name} came from the CAS"
        );
        let size = std::fs::metadata(path).unwrap().len();
        assert_eq!(
            recorder.bytes(index as u32),
            size,
            "BYTES deltas add up for {name}"
        );
        assert_eq!(recorder.checkpoints(index as u32).last(), Some(&size));
        assert!(done.bytes_transferred > 0, "{name}: network bytes reported");
    }
    // The compressible file moved fewer network bytes than its size.
    assert!(ok(&outcomes[2]).bytes_transferred < weights.size);

    // Files not stored in Xet are plain Hub files: from `resolve` (the CDN for LFS).
    for (index, path, name) in [(1, &paths[1], "lfs.bin"), (3, &paths[3], "config.json")] {
        let done = ok(&outcomes[index]);
        assert_eq!(
            sha256_of(path),
            expected_sha(&sim, "acme/tiny", name),
            "{name}"
        );
        assert_eq!(done.extra_json.as_str(), r#"{"via":"resolve"}"#, "{name}");
        let size = std::fs::metadata(path).unwrap().len();
        assert_eq!(
            recorder.bytes(index as u32),
            size,
            "BYTES deltas add up for {name}"
        );
    }

    let counters = sim.counters();
    assert!(
        counters.requests_to(Origin::Cas, "fetch_term") > 0,
        "{counters:?}"
    );
    assert_eq!(
        counters.requests_to(Origin::Cdn, "xet_bridge"),
        0,
        "no CDN bridge"
    );
    assert!(
        counters.requests_to(Origin::Cdn, "lfs") > 0,
        "the LFS file through resolve and its CDN redirect"
    );
    assert_eq!(counters.requests_to(Origin::Hub, "xet_read_token"), 1);
    assert_eq!(
        counters.requests_to(Origin::Cas, "telemetry"),
        0,
        "telemetry is off"
    );
    assert!(counters.bytes_from(Origin::Cas) > 0);
}

#[test]
fn one_batch_mixes_a_fresh_file_and_a_resumed_one() {
    let (sim, backend, manifest) = tiny_repo("");
    let xet_a = file(&manifest, "xet-a.bin");
    let weights = file(&manifest, "w.safetensors");
    let dir = tempfile::tempdir().unwrap();

    // The true bytes of w.safetensors, for the prefix the host would have kept.
    let whole = partial(dir.path(), "whole", b"");
    let outcomes = backend.fetch(
        &batch(
            "acme/tiny",
            &manifest.commit,
            vec![item(weights, &whole, 0)],
        ),
        &RecordingProgress::new().progress(),
        &CancelToken::new(),
    );
    ok(&outcomes[0]);
    let prefix = std::fs::read(&whole).unwrap()[..MIB as usize + 5].to_vec();

    // xet-a.bin from scratch and w.safetensors from 1 MiB + 5, in one call.
    let fresh = partial(dir.path(), "xet-a", b"");
    let resumed = partial(dir.path(), "w", &prefix);
    let recorder = RecordingProgress::new();
    let outcomes = backend.fetch(
        &batch(
            "acme/tiny",
            &manifest.commit,
            vec![
                item(xet_a, &fresh, 0),
                item(weights, &resumed, prefix.len() as u64),
            ],
        ),
        &recorder.progress(),
        &CancelToken::new(),
    );
    ok(&outcomes[0]);
    ok(&outcomes[1]);
    assert_eq!(
        sha256_of(&fresh),
        expected_sha(&sim, "acme/tiny", "xet-a.bin")
    );
    assert_eq!(
        sha256_of(&resumed),
        expected_sha(&sim, "acme/tiny", "w.safetensors")
    );
    assert_eq!(recorder.bytes(0), xet_a.size);
    assert_eq!(recorder.bytes(1), weights.size - prefix.len() as u64);
    assert_eq!(recorder.checkpoints(1).last(), Some(&weights.size));
}

/// Fetches `xet-a.bin` of `acme/tiny` through `fetch` with the CAS token given (the first
/// reconstruction query answered with `refuse` when set: hubsim's CAS takes any token); returns
/// the Hub's xet-read-token requests made meanwhile.
fn fetch_with_token(
    access_token: &str,
    expires_in: u64,
    refuse: Option<u16>,
) -> Vec<hubsim::RequestRecord> {
    let (sim, _, manifest) = tiny_repo("");
    let tuning = hubget_xet::fetch::Tuning::new(4 * MIB, 4);
    fetch_file_with_token(
        (&sim, &manifest, "acme/tiny", "xet-a.bin", 1),
        tuning,
        (access_token, expires_in),
        refuse,
    )
}

/// [`fetch_with_token`] for any `(sim, manifest, repo, path)`, in segments of `tuning`.
/// Fetches `copies` copies of one file at once (each its own job and partial file) with a CAS
/// token as given; returns the token requests the Hub saw.
fn fetch_file_with_token(
    (sim, manifest, repo, path_in_repo, copies): (&HubSim, &Manifest, &str, &str, u32),
    tuning: hubget_xet::fetch::Tuning,
    (access_token, expires_in): (&str, u64),
    refuse: Option<u16>,
) -> Vec<hubsim::RequestRecord> {
    use hubget_hub_http::{HttpClient, HubApi, XetToken};
    use hubget_xet::cas::Cas;
    use hubget_xet::fetch::{Job, fetch};

    let xet_a = file(manifest, path_in_repo);
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<_> = (0..copies)
        .map(|i| partial(dir.path(), &format!("x{i}"), b""))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let settings = HostSettings::default();
    let client = HttpClient::new(&settings).unwrap();
    let hub = HubApi::new(sim.hub_url(), Some(sim.token()), client).unwrap();
    let token = XetToken {
        access_token: access_token.into(),
        exp: now + expires_in,
        cas_url: sim.cas_url().to_owned(),
    };
    let cas = Cas::new(hub, RepoType::MODEL, repo, &manifest.commit, token);
    let jobs = paths
        .iter()
        .enumerate()
        .map(|(i, path)| Job {
            index: i as u32,
            hash: xet_a.xet_hash.as_ref().unwrap().to_string(),
            size: xet_a.size,
            path: path.clone(),
            offset: 0,
            fetch: std::iter::once(0..xet_a.size).collect(),
            local: 0,
            known: None,
        })
        .collect();
    sim.reset_counters();
    if let Some(code) = refuse {
        sim.faults().add(Fault::new(
            Origin::Cas,
            "reconstructions",
            FaultAction::Status { code },
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(fetch(
        &cas,
        jobs,
        &tuning,
        &RecordingProgress::new().progress(),
        &CancelToken::new(),
    ));
    for ((_, result), path) in results.iter().zip(&paths) {
        result.as_ref().expect("download works");
        assert_eq!(sha256_of(path), expected_sha(sim, repo, path_in_repo));
    }
    let c = sim.counters();
    c.log
        .into_iter()
        .filter(|r| r.origin == Origin::Hub && r.route == "xet_read_token")
        .collect()
}

#[test]
fn a_cas_token_about_to_expire_is_renewed_from_the_hub_with_the_hub_token() {
    let renewals = fetch_with_token("expiring", 5, None);
    assert!(!renewals.is_empty(), "the token was renewed first");
    assert!(renewals.iter().all(|r| r.auth), "with the Hub token");
}

#[test]
fn an_expiring_token_is_renewed_once_for_all_parallel_segments() {
    // Four copies of the file at once, each asked in windows of 1 MiB (three queries each),
    // every query with a token about to expire.
    let (sim, _, manifest) = big_repo("");
    let tuning = hubget_xet::fetch::Tuning::new(MIB, 4);
    let renewals = fetch_file_with_token(
        (&sim, &manifest, "acme/big", "big.bin", 4),
        tuning,
        ("expiring", 5),
        None,
    );
    assert_eq!(
        renewals.len(),
        1,
        "single-flight renewal, kept for the rest"
    );
}

#[test]
fn a_cas_token_the_cas_refuses_is_renewed_once() {
    let renewals = fetch_with_token("refused", 3600, Some(401));
    assert_eq!(renewals.len(), 1, "renewed after the CAS's 401");
}

#[test]
fn a_cas_token_far_from_expiry_is_used_as_it_is() {
    assert!(fetch_with_token("valid", 3600, None).is_empty());
}

#[test]
fn a_file_with_a_redacted_xet_hash_comes_from_the_hub_without_a_cas_token() {
    let (sim, backend, manifest) = tiny_repo("");
    let mut redacted = file(&manifest, "xet-a.bin").clone();
    redacted.xet_hash = ROption::RSome("*".repeat(64).into());
    let dir = tempfile::tempdir().unwrap();
    let path = partial(dir.path(), "x", b"");
    let outcomes = backend.fetch(
        &batch(
            "acme/tiny",
            &manifest.commit,
            vec![item(&redacted, &path, 0)],
        ),
        &RecordingProgress::new().progress(),
        &CancelToken::new(),
    );
    assert_eq!(ok(&outcomes[0]).extra_json.as_str(), r#"{"via":"resolve"}"#);
    assert_eq!(sha256_of(&path), redacted.sha256.as_ref().unwrap().as_str());
    assert_eq!(sim.counters().requests_to(Origin::Hub, "xet_read_token"), 0);
}

#[test]
fn resume_from_an_offset_fetches_only_the_rest() {
    let (sim, backend, manifest) = big_repo("");
    let big = file(&manifest, "big.bin");
    let dir = tempfile::tempdir().unwrap();
    let (full, full_cas_bytes) = whole_big_file(&sim, &backend, &manifest, dir.path());

    // The host kept the first 6 MiB; the backend must write only the rest.
    let offset = 6 * MIB + 123;
    let path = partial(dir.path(), "resumed", &full[..offset as usize]);
    sim.reset_counters();
    let recorder = RecordingProgress::new();
    let outcomes = backend.fetch(
        &batch("acme/big", &manifest.commit, vec![item(big, &path, offset)]),
        &recorder.progress(),
        &CancelToken::new(),
    );
    let done = ok(&outcomes[0]);
    assert_eq!(sha256_of(&path), big.sha256.as_ref().unwrap().as_str());
    assert_eq!(
        recorder.bytes(0),
        big.size - offset,
        "BYTES count only the rest"
    );
    let checkpoints = recorder.checkpoints(0);
    assert!(checkpoints.iter().all(|c| *c > offset && *c <= big.size));
    assert_eq!(checkpoints.last(), Some(&big.size));

    assert_eq!(
        sim.counters().requests_to(Origin::Hub, "xet_read_token"),
        0,
        "the CAS token of the first fetch is reused"
    );
    let cas_bytes = sim.counters().bytes_from(Origin::Cas);
    assert!(
        cas_bytes < full_cas_bytes / 2,
        "resume fetched {cas_bytes} CAS bytes, a whole file is {full_cas_bytes}"
    );
    // Wire bytes: the xorb ranges (random data does not compress; chunk headers add a little),
    // which hubsim counted too, beside the reconstruction answers.
    assert!(
        done.bytes_transferred >= big.size - offset && done.bytes_transferred <= cas_bytes,
        "{} wire bytes reported, {cas_bytes} counted by the CAS",
        done.bytes_transferred
    );
    assert_eq!(sim.counters().requests_to(Origin::Cdn, "xet_bridge"), 0);
}

/// Fetches acme/big whole with `config`; returns the CAS's reconstruction queries and xorb
/// GETs, after checking the file, its progress and the CAS bytes.
fn fetch_big_counting(config: &str) -> (u64, u64) {
    let (sim, backend, manifest) = big_repo(config);
    let big = file(&manifest, "big.bin");
    let dir = tempfile::tempdir().unwrap();
    let path = partial(dir.path(), "big", b"");
    sim.reset_counters();
    let recorder = RecordingProgress::new();
    let outcomes = backend.fetch(
        &batch("acme/big", &manifest.commit, vec![item(big, &path, 0)]),
        &recorder.progress(),
        &CancelToken::new(),
    );
    let done = ok(&outcomes[0]);
    assert_eq!(sha256_of(&path), big.sha256.as_ref().unwrap().as_str());
    assert_eq!(done.source.as_str(), sim.cas_url());
    assert_eq!(recorder.bytes(0), big.size);
    let checkpoints = recorder.checkpoints(0);
    assert!(
        checkpoints.windows(2).all(|w| w[0] < w[1]),
        "{checkpoints:?}"
    );
    assert_eq!(checkpoints.last(), Some(&big.size));
    let c = sim.counters();
    // Window edges cost at most a chunk each: the CAS serves about the file once.
    assert!(c.bytes_from(Origin::Cas) < big.size + big.size / 10);
    assert_eq!(c.requests_to(Origin::Cdn, "xet_bridge"), 0);
    let reconstructions = c.requests_to(Origin::Cas, "reconstructions_v2")
        + c.requests_to(Origin::Cas, "reconstructions_v1");
    (reconstructions, c.requests_to(Origin::Cas, "fetch_term"))
}

#[test]
fn a_file_costs_one_reconstruction_query_shared_with_the_reuse_planner() {
    // acme/big (8 MiB, one xorb): the reuse planner's whole-file answer is the download's.
    assert_eq!(fetch_big_counting(""), (1, 1));
}

#[test]
fn without_reuse_a_file_is_asked_in_growing_windows() {
    // Windows of 1 MiB, 2 MiB, then the rest: three queries, each window's part of the one
    // xorb fetched once.
    assert_eq!(
        fetch_big_counting("reuse = false\nwindow_mib = 1\n"),
        (3, 3)
    );
    // The default window covers the whole file.
    assert_eq!(fetch_big_counting("reuse = false\n"), (1, 1));
}

/// Starts a fetch of acme/big's 16 MiB at 1 MiB/s (about 16 s), cancels it once the CAS has
/// served some bytes, and returns how long `fetch` took to return after the cancel, the item's
/// error and the recorder.
fn cancel_midway(sim: &HubSim, config: &str) -> (Duration, PluginError, RecordingProgress) {
    let backend = backend(sim, config);
    let manifest = resolve(&backend, "acme/big");
    let big = file(&manifest, "big.bin").clone();
    let dir = tempfile::tempdir().unwrap();
    let path = partial(dir.path(), "big", b"");
    sim.reset_counters();
    let cancel = CancelToken::new();
    let recorder = RecordingProgress::new();
    let outcomes = std::thread::scope(|scope| {
        let canceller = scope.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(10);
            while sim.counters().bytes_from(Origin::Cas) < 256 * 1024 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Give the progress poller a tick to report what arrived.
            std::thread::sleep(Duration::from_millis(300));
            cancel.cancel();
            Instant::now()
        });
        let outcomes = backend.fetch(
            &batch("acme/big", &manifest.commit, vec![item(&big, &path, 0)]),
            &recorder.progress(),
            &cancel,
        );
        let returned = Instant::now();
        let cancelled_at = canceller.join().unwrap();
        (outcomes, returned.saturating_duration_since(cancelled_at))
    });
    let (outcomes, took) = outcomes;
    assert!(recorder.bytes(0) < big.size, "cancelled before the end");
    (took, err(&outcomes[0]).clone(), recorder)
}

#[test]
fn cancellation_returns_promptly() {
    let shaping = Shaping {
        rate_per_conn: Some(MIB),
        rate_total: Some(MIB),
        latency_ms: 0,
    };
    let sim = start(with_big(16), shaping);
    // Windows of 4, 8 and 4 MiB, their ranges in parallel.
    let (took, e, _) = cancel_midway(&sim, "reuse = false\nwindow_mib = 4\n");
    assert_eq!(e.kind, ErrorKind::CANCELLED, "{e}");
    assert!(
        took < Duration::from_secs(2),
        "fetch returned {took:?} after cancel"
    );

    // One 16 MiB window (the file is one term): its bytes are decoded and written as they
    // arrive, so file and wire progress both show before the end.
    let (took, e, recorder) = cancel_midway(&sim, "window_mib = 16\n");
    assert_eq!(e.kind, ErrorKind::CANCELLED, "{e}");
    assert!(
        took < Duration::from_secs(2),
        "fetch returned {took:?} after cancel"
    );
    assert!(
        recorder.network_bytes(0) > 0 && recorder.bytes(0) > 0,
        "progress inside one term: {} network, {} written",
        recorder.network_bytes(0),
        recorder.bytes(0)
    );
}

#[test]
fn a_stopped_cas_is_a_retryable_network_error() {
    let (sim, backend, manifest) = tiny_repo("");
    let xet_a = file(&manifest, "xet-a.bin");
    sim.stop_cas();
    let dir = tempfile::tempdir().unwrap();
    let path = partial(dir.path(), "x", b"");
    let started = Instant::now();
    let outcomes = fetch_unobserved(
        &backend,
        &batch("acme/tiny", &manifest.commit, vec![item(xet_a, &path, 0)]),
    );
    let e = err(&outcomes[0]);
    assert!(e.retryable, "{e}");
    assert!(
        matches!(e.kind, ErrorKind::NETWORK | ErrorKind::TIMEOUT),
        "{e}"
    );
    assert!(!e.message.contains(sim.token()), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn cas_server_errors_are_retryable_server_errors() {
    let (sim, backend, manifest) = tiny_repo("");
    let xet_a = file(&manifest, "xet-a.bin");
    sim.faults().add(Fault::always(
        Origin::Cas,
        "reconstructions",
        FaultAction::Status { code: 503 },
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = partial(dir.path(), "x", b"");
    let outcomes = fetch_unobserved(
        &backend,
        &batch("acme/tiny", &manifest.commit, vec![item(xet_a, &path, 0)]),
    );
    let e = err(&outcomes[0]);
    assert!(e.retryable, "{e}");
    assert_eq!(e.kind, ErrorKind::SERVER, "{e}");
    assert!(sim.faults().fired_total() > 0);
}

#[test]
fn a_bad_config_table_is_a_config_error() {
    let settings = HostSettings::default();
    let e = Backend::new(settings, "max_concurrent_downloads = 3\n")
        .err()
        .expect("unknown key refused");
    assert_eq!(e.kind, ErrorKind::CONFIG);
    assert!(e.message.contains("max_concurrent_downloads"), "{e}");
}

#[test]
fn written_ranges_are_not_fetched_again() {
    let (sim, backend, manifest) = big_repo("reuse = false\n");
    let big = file(&manifest, "big.bin");
    let dir = tempfile::tempdir().unwrap();
    let (truth, full_cas) = whole_big_file(&sim, &backend, &manifest, dir.path());

    // An earlier run wrote 2..6 MiB (past a zero checkpoint): the host names it in the options.
    let (a, b) = (2 * MIB as usize, 6 * MIB as usize);
    let mut data = vec![0u8; truth.len()];
    data[a..b].copy_from_slice(&truth[a..b]);
    let path = partial(dir.path(), "ranges", &data);
    let mut options = hubget_plugin_api::protocol::FetchOptions::default();
    options
        .written_ranges
        .insert(0, std::iter::once(a as u64..b as u64).collect());
    let mut with_ranges = batch("acme/big", &manifest.commit, vec![item(big, &path, 0)]);
    with_ranges.options_json = options.to_json().into();
    sim.reset_counters();
    let recorder = RecordingProgress::new();
    let outcomes = backend.fetch(&with_ranges, &recorder.progress(), &CancelToken::new());
    ok(&outcomes[0]);
    assert_eq!(sha256_of(&path), big.sha256.as_ref().unwrap().as_str());
    let cas = sim.counters().bytes_from(Origin::Cas);
    assert!(
        cas < full_cas * 3 / 4,
        "the written half is not fetched again: {cas} of {full_cas} CAS bytes"
    );
    // What was written is reported: the checkpoint reaches the end (spans written past it on
    // the way, when a poll saw them, lie inside the file; the unit tests of `Segments` pin
    // their rules).
    assert_eq!(recorder.checkpoints(0).last(), Some(&big.size));
    assert!(
        recorder
            .ranges_written(0)
            .iter()
            .all(|r| r.start < r.end && r.end <= big.size)
    );
}

#[test]
fn reconstructions_are_asked_on_v2_and_on_v1_when_the_cas_has_no_v2() {
    let (sim, backend, manifest) = big_repo("");
    let dir = tempfile::tempdir().unwrap();
    whole_big_file(&sim, &backend, &manifest, dir.path());
    let c = sim.counters();
    assert!(
        c.requests_to(Origin::Cas, "reconstructions_v2") >= 1,
        "{c:?}"
    );
    assert_eq!(c.requests_to(Origin::Cas, "reconstructions_v1"), 0);

    // A CAS without the V2 route: one V2 query (the whole file here), then V1 for the rest of
    // the run.
    let (sim, backend, manifest) = big_repo("window_mib = 16\n");
    sim.faults().add(Fault::always(
        Origin::Cas,
        "/v2/reconstructions",
        FaultAction::Status { code: 404 },
    ));
    whole_big_file(&sim, &backend, &manifest, dir.path());
    let c = sim.counters();
    assert_eq!(c.requests_to(Origin::Cas, "reconstructions_v2"), 1, "{c:?}");
    assert!(
        c.requests_to(Origin::Cas, "reconstructions_v1") >= 1,
        "{c:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    whole_big_file(&sim, &backend, &manifest, dir.path());
    let c = sim.counters();
    assert_eq!(
        c.requests_to(Origin::Cas, "reconstructions_v2"),
        0,
        "remembered: {c:?}"
    );
}

#[test]
fn a_fetch_range_several_terms_use_crosses_the_wire_once() {
    // `rep.bin` is one 2 MiB block three times over (patches with the block's own seed repeat
    // its bytes): the CAS keeps the block once, and the file's later terms point back into the
    // range that holds it.
    let block = 2 * MIB;
    let repeats = FixtureSpec::from_toml(&format!(
        "[[repos]]\nid = \"acme/repeats\"\ntype = \"model\"\n[[repos.commits]]\nmessage = \"a block \
         thrice\"\nfiles = [{{ path = \"rep.bin\", storage = \"xet\", content = {{ kind = \"random\", \
         size = {size}, seed = 31, patches = [{{ offset = {block}, len = {block}, seed = 31 }}, \
         {{ offset = {two}, len = {block}, seed = 31 }}] }} }}]\n",
        size = 3 * block,
        two = 2 * block,
    ))
    .unwrap();
    // One connection: one piece, so every term of the file comes from one reconstruction.
    let (sim, backend, manifest) = started(
        FixtureSpec::minimal().with(repeats),
        "acme/repeats",
        "parallel_segments = 1\nreuse = false\n",
    );
    let rep = file(&manifest, "rep.bin");
    let dir = tempfile::tempdir().unwrap();
    let path = partial(dir.path(), "rep", b"");
    sim.reset_counters();
    let fb = batch("acme/repeats", &manifest.commit, vec![item(rep, &path, 0)]);
    ok(&fetch_unobserved(&backend, &fb)[0]);
    assert_eq!(sha256_of(&path), rep.sha256.as_ref().unwrap().as_str());
    let c = sim.counters();
    let xorb_bytes = c.bytes_by_route.get("cas:fetch_term").copied().unwrap_or(0);
    // The block once (plus the chunks where the copies meet, and chunk headers), not thrice.
    assert!(
        xorb_bytes < block + block / 2,
        "{xorb_bytes} xorb bytes for a {block}-byte block used three times: {c:?}"
    );
}

#[test]
fn a_coarsely_trimmed_answer_is_read_right_and_costs_at_most_the_trim_per_query() {
    // big.bin resumed at 6 MiB + 123, from a CAS trimming chunk by chunk and from one whose
    // answers reach 512 KiB further back (several chunks): the same bytes land, and the coarse
    // CAS costs at most its trim per reconstruction query more.
    let trim = 512 * 1024;
    let resume = |sim: &HubSim| {
        let backend = backend(sim, "reuse = false\n");
        let manifest = resolve(&backend, "acme/big");
        let big = file(&manifest, "big.bin");
        let dir = tempfile::tempdir().unwrap();
        let full = sim.content("acme/big", "big.bin");
        let offset = 6 * MIB + 123;
        let path = partial(dir.path(), "resumed", &full[..offset as usize]);
        sim.reset_counters();
        let fb = batch("acme/big", &manifest.commit, vec![item(big, &path, offset)]);
        ok(&fetch_unobserved(&backend, &fb)[0]);
        assert_eq!(sha256_of(&path), big.sha256.as_ref().unwrap().as_str());
        let c = sim.counters();
        let queries = c.requests_to(Origin::Cas, "reconstructions_v2")
            + c.requests_to(Origin::Cas, "reconstructions_v1");
        (
            c.bytes_by_route.get("cas:fetch_term").copied().unwrap_or(0),
            queries,
        )
    };
    let fine = start(with_big(8), Shaping::default());
    let (fine_bytes, _) = resume(&fine);
    let coarse =
        HubSim::start_blocking(HubSim::builder().fixtures(with_big(8)).coarse_trim(trim)).unwrap();
    let (coarse_bytes, queries) = resume(&coarse);
    assert!(coarse_bytes > fine_bytes, "the coarse CAS did reach back");
    assert!(
        coarse_bytes <= fine_bytes + trim * queries + 128 * 1024,
        "{coarse_bytes} xorb bytes coarse, {fine_bytes} fine, {queries} queries"
    );
}
