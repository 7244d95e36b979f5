//! The mirror backend through the `hubget` binary: endpoint failover (down, 503, dying mid-run),
//! a corrupted mirror caught by the host's verification, a directory mirror serving a second
//! cache with zero network traffic, and the Hub token rule for mirrors.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hubget_tests::{TestEnv, assert_rate_capped, done_rate};
use hubsim::{Fault, FaultAction, FixtureSpec, HubSim, HubSimHandle, Origin, Shaping};
use serde_json::Value;

const REPO: &str = "acme/tiny";

fn sim() -> HubSimHandle {
    HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::minimal())).expect("hubsim")
}

/// `hubget download REPO <extra> --json` in `env` (an isolated environment from the testkit),
/// into `cache`, with `endpoint` as the Hub and `config` as the config file when given.
fn download(
    env: &TestEnv,
    config: Option<&Path>,
    cache: &Path,
    endpoint: &str,
    extra: &[&str],
) -> Command {
    let mut cmd = env.command();
    cmd.arg("download").arg(REPO).args(extra);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.arg("--cache-dir")
        .arg(cache)
        .args(["--endpoint", endpoint, "--json"])
        .env("RUST_LOG", "info");
    cmd
}

/// Runs `cmd`, checks that it succeeded, and returns its output and JSON events.
fn succeeded(mut cmd: Command) -> (Output, Vec<Value>) {
    let out = cmd.output().unwrap();
    assert_success(&out);
    let events = events(&out);
    (out, events)
}

/// The `[plugins.mirror]` config with `body` and the backend order.
fn mirror_config(order: &[&str], body: &str) -> String {
    let order: Vec<String> = order.iter().map(|b| format!("{b:?}")).collect();
    format!(
        "[backends]\norder = [{}]\n\n[plugins.mirror]\n{body}\n",
        order.join(", ")
    )
}

fn toml_list(items: &[&str]) -> String {
    let items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// The JSON events of a run.
fn events(out: &Output) -> Vec<Value> {
    hubget_tests::Run::from_output(out.clone()).events()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "hubget failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file of acme/tiny at main is in `snapshots/<head>/` of `cache` with the right sha256,
/// as the `file_done` events say.
fn assert_complete(sim: &HubSimHandle, cache: &Path, done: &[&Value]) {
    let repo = sim.info().repo(REPO).unwrap();
    let snapshot = cache.join("models--acme--tiny/snapshots").join(&repo.head);
    for f in &repo.files {
        let path = snapshot.join(&f.path);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The bytes on disk are the repository's, whatever hubget reported.
        assert_eq!(bytes, sim.content(REPO, &f.path), "{}", f.path);
        assert!(
            done.iter().any(|e| e["path"] == f.path.as_str()),
            "no file_done for {}",
            f.path
        );
    }
}

/// A URL on which nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn first_endpoint_failing_second_serves_everything() {
    let failing = sim();
    let good = sim();
    failing.faults().add(Fault::always(
        Origin::Hub,
        "",
        FaultAction::Status { code: 503 },
    ));
    let dead = dead_url();
    let env = TestEnv::new();
    let config = env.write_config(&mirror_config(
        &["mirror", "lfs"],
        &format!(
            "endpoints = {}\n",
            toml_list(&[&dead, failing.hub_url(), good.hub_url()])
        ),
    ));
    let cache = env.path("cache");
    // The Hub itself is unreachable: only the mirror can serve this run.
    let (out, ev) = succeeded(download(
        &env,
        Some(&config),
        &cache,
        &dead_url(),
        &["--backend", "mirror", "--no-fallback"],
    ));
    let plan = of_kind(&ev, "plan");
    assert_eq!(plan[0]["resolved_by"], "mirror");
    let done = of_kind(&ev, "file_done");
    assert_eq!(done.len(), good.info().repo(REPO).unwrap().files.len());
    for d in &done {
        assert_eq!(d["backend"], "mirror", "{d}");
        assert_eq!(d["source"], good.hub_url(), "{d}");
    }
    assert_complete(&good, &cache, &done);
    assert!(
        failing.counters().total_requests.hub >= 1,
        "the failing mirror was tried"
    );
    assert_eq!(failing.counters().bytes_from(Origin::Cdn), 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{} marked down", failing.hub_url())),
        "health changes are logged:\n{stderr}"
    );
}

#[test]
fn first_endpoint_dying_mid_run_the_run_completes() {
    // The first mirror is slow (2 MiB/s in all), so it dies with transfers in flight.
    let dying = HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::minimal()).shape(
        Shaping {
            rate_total: Some(2 << 20),
            ..Shaping::default()
        },
    ))
    .expect("hubsim");
    let good = sim();
    let dying_url = dying.hub_url().to_owned();
    let env = TestEnv::new();
    let config = env.write_config(&mirror_config(
        &["mirror"],
        &format!("endpoints = {}\n", toml_list(&[&dying_url, good.hub_url()])),
    ));
    let cache = env.path("cache");
    let child: Child = download(
        &env,
        Some(&config),
        &cache,
        &dead_url(),
        &["--backend", "mirror", "--no-fallback"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while dying.counters().bytes_from(Origin::Cdn) < 512 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the first mirror never served a byte"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let served_before_death = dying.counters().bytes_from(Origin::Cdn);
    drop(dying);
    let out = child.wait_with_output().unwrap();
    assert_success(&out);
    let ev = events(&out);
    let done = of_kind(&ev, "file_done");
    assert_complete(&good, &cache, &done);
    assert!(
        done.iter().any(|d| d["source"] == good.hub_url()),
        "the second mirror took over: {done:?}"
    );
    let total: u64 = good.info().repo(REPO).unwrap().size();
    assert!(served_before_death > 0 && served_before_death < total);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{dying_url} marked down")),
        "the death was noticed and logged:\n{stderr}"
    );
}

#[test]
fn a_mirror_serving_corrupted_bytes_is_caught_and_the_next_backend_serves_the_file() {
    let hub = sim();
    let bad_mirror = sim();
    bad_mirror.faults().add(Fault::always(
        Origin::Cdn,
        "/lfs/",
        FaultAction::FlipByte {
            offset: Some(12_345),
        },
    ));
    let env = TestEnv::new();
    let config = env.write_config(&mirror_config(
        &["mirror", "lfs"],
        &format!("endpoints = {}\n", toml_list(&[bad_mirror.hub_url()])),
    ));
    let cache = env.path("cache");
    let (_, ev) = succeeded(download(
        &env,
        Some(&config),
        &cache,
        hub.hub_url(),
        &["lfs.bin"],
    ));
    assert!(
        bad_mirror.faults().fired_total() >= 1,
        "the mirror did send flipped bytes"
    );
    let fallback = of_kind(&ev, "fallback");
    assert!(
        fallback.iter().any(|f| f["from"] == "mirror"
            && f["to"] == "lfs"
            && f["error"]["kind"] == "integrity"),
        "the host caught the corruption and fell back: {fallback:?}"
    );
    let done = of_kind(&ev, "file_done");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["backend"], "lfs");
    let want = hub.info().repo(REPO).unwrap().file("lfs.bin").unwrap();
    assert_eq!(done[0]["sha256"], want.sha256.as_str());
    let blob = cache.join("models--acme--tiny/blobs").join(&want.sha256);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), want.size);
    assert!(
        hub.counters().bytes_from(Origin::Cdn) >= want.size,
        "lfs fetched it from the Hub"
    );
}

#[test]
fn a_directory_mirror_filled_by_hubget_serves_a_second_cache_with_zero_traffic() {
    let hub = sim();
    let env = TestEnv::new();
    let team = env.path("team-cache");
    // An earlier, ordinary hubget download fills the team cache.
    succeeded(download(&env, None, &team, hub.hub_url(), &[]));

    // resolve_from_dirs = "always": the directory resolves and serves; hubsim sees nothing.
    hub.reset_counters();
    let config = env.write_config(&mirror_config(
        &["mirror", "lfs", "xet"],
        &format!(
            "dirs = {}\nresolve_from_dirs = \"always\"\n",
            toml_list(&[team.to_str().unwrap()])
        ),
    ));
    let second = env.path("cache-2");
    let (_, ev) = succeeded(download(&env, Some(&config), &second, hub.hub_url(), &[]));
    assert_eq!(of_kind(&ev, "plan")[0]["resolved_by"], "mirror");
    let done = of_kind(&ev, "file_done");
    for d in &done {
        assert_eq!(d["backend"], "mirror", "{d}");
        assert_eq!(d["source"], team.to_str().unwrap(), "{d}");
        // A local (directory) backend's 0 is taken at face value, not replaced by file bytes.
        assert_eq!(
            d["bytes_transferred"], 0,
            "a directory copy is no traffic: {d}"
        );
    }
    assert_complete(&hub, &second, &done);
    let summary = of_kind(&ev, "done");
    assert!(
        summary[0]["bytes"].as_u64().unwrap() > 0,
        "{:?}",
        summary[0]
    );
    assert_eq!(summary[0]["bytes_transferred"], 0, "{:?}", summary[0]);
    let c = hub.counters();
    assert_eq!(
        (
            c.total_requests.hub,
            c.total_requests.cdn,
            c.total_requests.cas
        ),
        (0, 0, 0),
        "zero network traffic: {:?}",
        c.log
    );

    // The default policy: the Hub resolves (two metadata calls), the directory serves every byte.
    hub.reset_counters();
    let config = env.write_config(&mirror_config(
        &["mirror", "lfs", "xet"],
        &format!("dirs = {}\n", toml_list(&[team.to_str().unwrap()])),
    ));
    let third = env.path("cache-3");
    let (_, ev) = succeeded(download(&env, Some(&config), &third, hub.hub_url(), &[]));
    assert_ne!(of_kind(&ev, "plan")[0]["resolved_by"], "mirror");
    let done = of_kind(&ev, "file_done");
    assert!(done.iter().all(|d| d["backend"] == "mirror"), "{done:?}");
    assert!(done.iter().all(|d| d["bytes_transferred"] == 0), "{done:?}");
    assert_complete(&hub, &third, &done);
    let c = hub.counters();
    assert_eq!(
        c.requests_to(Origin::Hub, "resolve"),
        0,
        "no file came from the Hub"
    );
    assert_eq!((c.total_requests.cdn, c.total_requests.cas), (0, 0));
}

#[test]
fn the_hub_token_reaches_a_mirror_only_when_configured() {
    let hub = sim();
    let mirror = sim();
    let token = hub.token().to_owned();
    for (send, expect) in [(false, false), (true, true)] {
        mirror.reset_counters();
        let env = TestEnv::new();
        let config = env.write_config(&mirror_config(
            &["mirror"],
            &format!(
                "endpoints = [{{ url = {:?}, send_hub_token = {send} }}]\n",
                mirror.hub_url()
            ),
        ));
        let cache = env.path("cache");
        let mut cmd = download(
            &env,
            Some(&config),
            &cache,
            hub.hub_url(),
            &[
                "config.json",
                "lfs.bin",
                "--backend",
                "mirror",
                "--no-fallback",
            ],
        );
        cmd.env("HF_TOKEN", &token);
        let (out, _) = succeeded(cmd);
        let c = mirror.counters();
        assert!(c.total_requests.hub > 0, "the mirror served the run");
        assert_eq!(c.auth_seen.hub, expect, "send_hub_token = {send}");
        assert!(!c.auth_seen.cdn, "never to the mirror's CDN");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(&token), "the token never appears in output");
    }
}

#[test]
fn limit_rate_caps_mirror_endpoint_downloads() {
    let good = sim();
    let env = TestEnv::new();
    let config = env.write_config(&mirror_config(
        &["mirror", "lfs"],
        &format!("endpoints = {}\n", toml_list(&[good.hub_url()])),
    ));
    let cache = env.path("cache");
    let (_, ev) = succeeded(download(
        &env,
        Some(&config),
        &cache,
        &dead_url(),
        &[
            "lfs.bin",
            "--backend",
            "mirror",
            "--no-fallback",
            "--limit-rate",
            "1M",
        ],
    ));
    let done = of_kind(&ev, "file_done");
    assert_rate_capped(done_rate(done[0]), 1024.0 * 1024.0);
    assert!(
        of_kind(&ev, "warning").is_empty(),
        "the mirror honours the cap"
    );
}
