//! Endpoint mirrors against two hubsim instances: failover on connection refused, 503 and a
//! connection cut mid-file (continuing from the bytes written), health (a down endpoint is
//! skipped), the token rule, resume from the host's offset, offline mode.

use hubget_mirror::Mirror;
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::std_types::{RResult, RString};
use hubget_plugin_api::testing::done;
use hubget_plugin_api::{
    CancelToken, ErrorKind, Features, FetchBatch, HostSettings, ManifestFile, RepoType,
    ResolveRequest,
};
use hubsim::{Fault, FaultAction, FileInfo, FixtureSpec, HubSim, HubSimHandle, Origin};

use crate::common::*;

const REPO: &str = "acme/tiny";

fn sim() -> HubSimHandle {
    HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::minimal()))
        .expect("hubsim starts")
}

/// A URL on which nothing listens (connection refused).
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn settings(token: Option<&str>) -> HostSettings {
    HostSettings {
        token: token.map(str::to_owned),
        max_attempts: 2,
        connections_per_file: 4,
        range_size: 1024 * 1024,
        ..HostSettings::default()
    }
}

fn mirror_with(settings: HostSettings, toml: &str) -> Mirror {
    Mirror::new(settings, toml).expect("valid config")
}

fn endpoints(urls: &[&str], extra: &str) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!("endpoints = [{}]\n{extra}\n", list.join(", "))
}

fn req() -> ResolveRequest {
    ResolveRequest {
        repo_type: RepoType::MODEL,
        repo_id: REPO.into(),
        revision: "main".into(),
        options_json: "".into(),
    }
}

fn to_manifest_file(f: &FileInfo) -> ManifestFile {
    let lfs = f.storage != hubsim::Storage::Regular;
    ManifestFile {
        path: f.path.as_str().into(),
        size: f.size,
        git_oid: f.git_oid.as_str().into(),
        sha256: if lfs {
            Some(RString::from(f.sha256.as_str()))
        } else {
            None
        }
        .into(),
        xet_hash: None.into(),
    }
}

/// A batch of `paths` of acme/tiny at main, with partial files in `work` (empty, offset 0).
fn tiny_batch(
    sim: &HubSimHandle,
    work: &std::path::Path,
    paths: &[&str],
) -> (FetchBatch, Vec<Vec<u8>>) {
    let repo = sim.info().repo(REPO).unwrap();
    let contents: Vec<Vec<u8>> = paths.iter().map(|p| content_of(sim, p)).collect();
    let files: Vec<(ManifestFile, &[u8], u64)> = paths
        .iter()
        .zip(&contents)
        .map(|(p, c)| (to_manifest_file(repo.file(p).unwrap()), c.as_slice(), 0))
        .collect();
    (batch(REPO, &repo.head, work, &files), contents)
}

/// The true bytes of a file, downloaded straight from hubsim's resolve route.
fn content_of(sim: &HubSimHandle, path: &str) -> Vec<u8> {
    let url = format!("{}/{REPO}/resolve/main/{path}", sim.hub_url());
    let bytes = sim.runtime().block_on(async move {
        let client = hubget_hub_http::reqwest::Client::new();
        let mut url = hubget_hub_http::reqwest::Url::parse(&url).unwrap();
        // Follow the redirect to the CDN by hand (the client has redirects on by default).
        for _ in 0..3 {
            let r = client.get(url.clone()).send().await.unwrap();
            if r.status().is_redirection() {
                url = url.join(r.headers()["location"].to_str().unwrap()).unwrap();
                continue;
            }
            return r.bytes().await.unwrap().to_vec();
        }
        panic!("too many redirects");
    });
    sim.reset_counters();
    bytes
}

/// `"url"`, as it appears in JSON (so that a port is never matched as a prefix of another).
fn quoted(url: &str) -> String {
    format!("{url:?}")
}

#[test]
fn resolve_and_fetch_fail_over_from_a_dead_endpoint() {
    let good = sim();
    let dead = dead_url();
    let m = mirror_with(settings(None), &endpoints(&[&dead, good.hub_url()], ""));
    let caps = m.capabilities().features;
    assert!(caps.contains(Features::RESOLVE) && caps.contains(Features::RESUME));
    assert!(!caps.contains(Features::LOCAL), "endpoints are network");

    let manifest = m.resolve(&req(), &CancelToken::new()).unwrap();
    let repo = good.info().repo(REPO).unwrap();
    assert_eq!(manifest.commit.as_str(), repo.head);
    let lfs = manifest.file("lfs.bin").unwrap();
    let want = repo.file("lfs.bin").unwrap();
    assert_eq!(lfs.size, want.size);
    assert_eq!(
        lfs.sha256.as_ref().map(|s| s.as_str()).into_option(),
        Some(want.sha256.as_str())
    );
    assert!(
        manifest.extra_json.contains(&quoted(good.hub_url())),
        "{}",
        manifest.extra_json
    );

    let work = tempfile::tempdir().unwrap();
    let (b, contents) = tiny_batch(&good, work.path(), &["config.json", "lfs.bin", "xet-a.bin"]);
    let (p, rec) = progress();
    let out = fetch(&m, &b, &p);
    for (i, o) in out.iter().enumerate() {
        let d = done(o);
        assert_eq!(
            d.source.as_str(),
            good.hub_url(),
            "item {i} served by the live endpoint"
        );
        assert_eq!(
            std::fs::read(work.path().join(format!("{i}.partial"))).unwrap(),
            contents[i]
        );
        assert_eq!(rec.bytes(i as u32), contents[i].len() as u64);
        assert!(d.bytes_transferred >= contents[i].len() as u64);
    }
    // Xet files travel as plain bytes (the bridge), never through the CAS.
    let c = good.counters();
    assert_eq!(c.total_requests.cas, 0);
    assert!(c.requests_to(Origin::Hub, "resolve") >= 3);
}

#[test]
fn a_failing_endpoint_is_marked_down_and_skipped() {
    let bad = sim();
    let good = sim();
    assert_eq!(
        bad.info().repo(REPO).unwrap().head,
        good.info().repo(REPO).unwrap().head
    );
    bad.faults().add(Fault::always(
        Origin::Hub,
        "",
        FaultAction::Status { code: 503 },
    ));
    let m = mirror_with(
        settings(None),
        &endpoints(&[bad.hub_url(), good.hub_url()], "cooldown_secs = 600"),
    );
    let manifest = m.resolve(&req(), &CancelToken::new()).unwrap();
    assert_eq!(
        manifest.commit.as_str(),
        good.info().repo(REPO).unwrap().head
    );
    let first = bad.counters().total_requests.hub;
    assert!(first >= 1, "the first endpoint was tried");

    let work = tempfile::tempdir().unwrap();
    let (b, contents) = tiny_batch(
        &good,
        work.path(),
        &["README.md", "lfs.bin", "sub/dir/notes.txt"],
    );
    let (p, _) = progress();
    let out = fetch(&m, &b, &p);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(done(o).source.as_str(), good.hub_url());
        assert_eq!(
            std::fs::read(work.path().join(format!("{i}.partial"))).unwrap(),
            contents[i]
        );
    }
    assert_eq!(
        bad.counters().total_requests.hub,
        first,
        "an endpoint in its cool-down gets no more requests"
    );
}

#[test]
fn a_download_cut_mid_file_continues_on_the_next_endpoint() {
    let dying = sim();
    let good = sim();
    // The first endpoint's CDN sends 1 MiB of lfs.bin, cuts the connection, then fails for good.
    dying.faults().add(Fault::new(
        Origin::Cdn,
        "/lfs/",
        FaultAction::CutAfter { bytes: 1 << 20 },
    ));
    dying.faults().add(Fault::always(
        Origin::Cdn,
        "",
        FaultAction::Status { code: 503 },
    ));
    let mut s = settings(None);
    s.connections_per_file = 1; // one stream, so the cut leaves a clean 1 MiB prefix
    let m = mirror_with(s, &endpoints(&[dying.hub_url(), good.hub_url()], ""));
    let work = tempfile::tempdir().unwrap();
    let (b, contents) = tiny_batch(&good, work.path(), &["lfs.bin"]);
    let size = contents[0].len() as u64;
    let (p, rec) = progress();
    let out = fetch(&m, &b, &p);
    let d = done(&out[0]);
    assert_eq!(d.source.as_str(), good.hub_url());
    assert_eq!(
        std::fs::read(work.path().join("0.partial")).unwrap(),
        contents[0]
    );
    assert!(
        d.extra_json.contains(&quoted(dying.hub_url())),
        "both endpoints served: {}",
        d.extra_json
    );
    assert_eq!(rec.checkpoints(0).last().copied(), Some(size));
    // The second endpoint sent only what was missing.
    let from_good = good.counters().bytes_from(Origin::Cdn);
    assert!(
        from_good < size,
        "the good endpoint sent {from_good} of {size} bytes"
    );
    let ranges: Vec<String> = good
        .counters()
        .log
        .iter()
        .filter_map(|r| r.range.clone())
        .collect();
    assert!(
        ranges.iter().any(|r| !r.starts_with("bytes=0-")),
        "the next endpoint continued from an offset: {ranges:?}"
    );
}

#[test]
fn fetch_resumes_from_the_host_offset() {
    let good = sim();
    let m = mirror_with(settings(None), &endpoints(&[good.hub_url()], ""));
    let work = tempfile::tempdir().unwrap();
    let repo = good.info().repo(REPO).unwrap();
    let content = content_of(&good, "lfs.bin");
    let offset = 3_000_000u64;
    let b = batch(
        REPO,
        &repo.head,
        work.path(),
        &[(
            to_manifest_file(repo.file("lfs.bin").unwrap()),
            &content,
            offset,
        )],
    );
    let (p, rec) = progress();
    let out = fetch(&m, &b, &p);
    done(&out[0]);
    assert_eq!(
        std::fs::read(work.path().join("0.partial")).unwrap(),
        content
    );
    assert_eq!(rec.bytes(0), content.len() as u64 - offset);
    assert_eq!(
        good.counters().bytes_from(Origin::Cdn),
        content.len() as u64 - offset
    );
}

#[test]
fn the_hub_token_reaches_a_mirror_only_when_configured() {
    let secret = "hf_user_secret";
    // Default: not sent.
    let plain = sim();
    let m = mirror_with(settings(Some(secret)), &endpoints(&[plain.hub_url()], ""));
    m.resolve(&req(), &CancelToken::new()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (b, _) = tiny_batch(&plain, work.path(), &["config.json", "lfs.bin"]);
    let (p, _) = progress();
    fetch(&m, &b, &p).iter().for_each(|o| {
        done(o);
    });
    let c = plain.counters();
    assert!(c.total_requests.hub > 0);
    assert!(
        !c.auth_seen.hub && !c.auth_seen.cdn,
        "the Hub token leaked to a mirror"
    );

    // send_hub_token = true: sent to the endpoint's origin, never to its CDN.
    let trusted = sim();
    let toml = format!(
        "endpoints = [{{ url = {:?}, send_hub_token = true }}]\n",
        trusted.hub_url()
    );
    let m = mirror_with(settings(Some(secret)), &toml);
    m.resolve(&req(), &CancelToken::new()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let (b, _) = tiny_batch(&trusted, work.path(), &["lfs.bin"]);
    let (p, _) = progress();
    done(&fetch(&m, &b, &p)[0]);
    let c = trusted.counters();
    assert!(c.auth_seen.hub, "send_hub_token = true sends it");
    assert!(
        !c.auth_seen.cdn,
        "never across a redirect to another origin"
    );

    // An endpoint that is the Hub itself (the host's endpoint) gets the Hub token.
    let hub = sim();
    let mut s = settings(Some(secret));
    s.endpoint = hub.hub_url().to_owned();
    let m = mirror_with(s, &endpoints(&[hub.hub_url()], ""));
    m.resolve(&req(), &CancelToken::new()).unwrap();
    assert!(
        hub.counters().auth_seen.hub,
        "the Hub listed as a mirror gets its own token"
    );

    // An endpoint's own token is sent even without the Hub token.
    let own = sim();
    let toml = format!(
        "endpoints = [{{ url = {:?}, token = \"mirror-token\" }}]\n",
        own.hub_url()
    );
    let m = mirror_with(settings(None), &toml);
    m.resolve(&req(), &CancelToken::new()).unwrap();
    assert!(own.counters().auth_seen.hub);
}

#[test]
fn offline_endpoints_are_not_used() {
    let good = sim();
    let mut s = settings(None);
    s.offline = true;
    let m = mirror_with(s, &endpoints(&[good.hub_url()], ""));
    let err = m.resolve(&req(), &CancelToken::new()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED, "{err}");
    let work = tempfile::tempdir().unwrap();
    let (b, _) = tiny_batch(&good, work.path(), &["config.json"]);
    let (p, _) = progress();
    match &fetch(&m, &b, &p)[0].result {
        RResult::RErr(e) => assert_eq!(e.kind, ErrorKind::NOT_FOUND, "{e}"),
        RResult::ROk(_) => panic!("fetched while offline"),
    }
    assert_eq!(good.counters().total_requests.hub, 0);
}

#[test]
fn endpoints_that_lack_a_repo_pass_it_on_without_being_marked_down() {
    let empty = HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::default())).unwrap();
    let good = sim();
    let m = mirror_with(
        settings(None),
        &endpoints(&[empty.hub_url(), good.hub_url()], "cooldown_secs = 600"),
    );
    m.resolve(&req(), &CancelToken::new()).unwrap();
    m.resolve(&req(), &CancelToken::new()).unwrap();
    assert!(
        empty.counters().total_requests.hub >= 2,
        "a 404 does not start a cool-down: the first endpoint is asked every time"
    );
}

#[test]
fn health_changes_are_logged_and_a_recovered_endpoint_serves_again() {
    install_logger();
    let flaky = sim();
    let good = sim();
    flaky.faults().add(Fault::new(
        Origin::Hub,
        "/api/",
        FaultAction::Status { code: 503 },
    ));
    let m = mirror_with(
        settings(None),
        &endpoints(&[flaky.hub_url(), good.hub_url()], "cooldown_secs = 1"),
    );
    let first = m.resolve(&req(), &CancelToken::new()).unwrap();
    assert!(
        first.extra_json.contains(&quoted(good.hub_url())),
        "{}",
        first.extra_json
    );
    let logs = captured_logs();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("{} marked down", flaky.hub_url()))),
        "{logs:#?}"
    );
    // Within the cool-down the flaky endpoint is skipped.
    let asked = flaky.counters().total_requests.hub;
    m.resolve(&req(), &CancelToken::new()).unwrap();
    assert_eq!(flaky.counters().total_requests.hub, asked);
    // After it, the first endpoint is asked again, answers, and is logged up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let manifest = loop {
        let m = m.resolve(&req(), &CancelToken::new()).unwrap();
        if m.extra_json.contains(&quoted(flaky.hub_url())) {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint never came back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(
        manifest.commit.as_str(),
        good.info().repo(REPO).unwrap().head
    );
    let logs = captured_logs();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("{} is up again", flaky.hub_url()))),
        "{logs:#?}"
    );
}

#[test]
fn an_endpoint_killed_mid_download_continues_byte_exact_on_the_next() {
    // Host defaults: parallel ranges per file, so the bytes on disk are not one prefix when the
    // endpoint dies; only the downloader's low watermark says where to continue.
    install_logger();
    let dying = HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::minimal()).shape(
        hubsim::Shaping {
            rate_total: Some(2 << 20),
            ..Default::default()
        },
    ))
    .unwrap();
    let good = sim();
    let m = mirror_with(
        HostSettings::default(),
        &endpoints(&[dying.hub_url(), good.hub_url()], ""),
    );
    let work = tempfile::tempdir().unwrap();
    let paths = ["xet-a.bin", "lfs.bin", "w.safetensors"];
    let (b, contents) = tiny_batch(&good, work.path(), &paths);
    let (p, rec) = progress();
    let fetching = std::thread::spawn(move || fetch(&m, &b, &p));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while dying.counters().bytes_from(Origin::Cdn) < 100_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first endpoint never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let dying_url = dying.hub_url().to_owned();
    drop(dying);
    let out = fetching.join().unwrap();
    for (i, o) in out.iter().enumerate() {
        let d = done(o);
        assert_eq!(d.source.as_str(), good.hub_url(), "{}", paths[i]);
        let got = std::fs::read(work.path().join(format!("{i}.partial"))).unwrap();
        let first_diff = got.iter().zip(&contents[i]).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{} differs", paths[i]);
        assert_eq!(got.len(), contents[i].len());
        assert_eq!(
            rec.bytes(i as u32),
            contents[i].len() as u64,
            "{}: bytes past a hole are not reported twice",
            paths[i]
        );
    }
    let logs = captured_logs();
    assert!(
        logs.iter()
            .any(|l| l.contains(&format!("{dying_url} marked down"))),
        "{logs:#?}"
    );
}

#[test]
fn a_stalled_endpoint_times_out_on_its_own_timeout_and_fails_over() {
    let stalled = sim();
    let good = sim();
    stalled.faults().add(Fault::always(
        Origin::Cdn,
        "/lfs/",
        FaultAction::Stall {
            secs: 30.0,
            after_bytes: Some(100_000),
        },
    ));
    let toml = format!(
        "endpoints = [{{ url = {:?}, timeout_secs = 1 }}, {:?}]\n",
        stalled.hub_url(),
        good.hub_url()
    );
    let m = mirror_with(settings(None), &toml);
    let work = tempfile::tempdir().unwrap();
    let (b, contents) = tiny_batch(&good, work.path(), &["lfs.bin"]);
    let (p, _) = progress();
    let started = std::time::Instant::now();
    let out = fetch(&m, &b, &p);
    let d = done(&out[0]);
    assert_eq!(d.source.as_str(), good.hub_url());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "the 1 s endpoint timeout applied, not the 30 s stall: {:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read(work.path().join("0.partial")).unwrap(),
        contents[0]
    );
    assert!(stalled.faults().fired_total() >= 1);
}

#[test]
fn endpoints_that_do_not_resolve_still_serve_bytes() {
    let good = sim();
    let m = mirror_with(
        settings(None),
        &endpoints(&[good.hub_url()], "resolve_from_endpoints = false"),
    );
    assert!(!m.capabilities().features.contains(Features::RESOLVE));
    let err = m.resolve(&req(), &CancelToken::new()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED, "a quiet decline: {err}");
    assert_eq!(good.counters().total_requests.hub, 0);
    let work = tempfile::tempdir().unwrap();
    let (b, contents) = tiny_batch(&good, work.path(), &["lfs.bin"]);
    let (p, _) = progress();
    assert_eq!(done(&fetch(&m, &b, &p)[0]).source.as_str(), good.hub_url());
    assert_eq!(
        std::fs::read(work.path().join("0.partial")).unwrap(),
        contents[0]
    );
}
