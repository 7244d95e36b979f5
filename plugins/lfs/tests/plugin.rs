//! The lfs backend against hubsim, called directly through the SDK trait (no host, no
//! loading): snapshots of regular + LFS + Xet-backed files, one batch request per fetch,
//! resume from an offset, the resolve path, classification, offline and cancel.

use std::path::Path;

use abi_stable::std_types::{ROption, RString};
use hubget_lfs::Backend;
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::testing::{
    BatchBuilder, RecordingProgress, done, error as err, fetch_unobserved,
};
use hubget_plugin_api::{
    CancelToken, ErrorKind, EventKind, FetchBatch, HostSettings, Manifest, ManifestFile,
    PluginError, RepoType, ResolveRequest,
};
use hubsim::{HubSim, HubSimHandle, Origin, Storage};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

fn start() -> HubSimHandle {
    HubSim::start_blocking(HubSim::builder()).expect("hubsim starts")
}

fn backend(sim: &HubSim, token: bool, config: &str) -> Backend {
    let settings = HostSettings {
        endpoint: sim.hub_url().to_owned(),
        token: token.then(|| sim.token().to_owned()),
        connections_per_file: 4,
        range_size: MIB,
        read_timeout_secs: 5,
        ..HostSettings::default()
    };
    Backend::new(settings, config).expect("backend")
}

fn resolve(b: &Backend, repo: &str, rev: &str) -> Result<hubget_plugin_api::Manifest, PluginError> {
    b.resolve(
        &ResolveRequest {
            repo_type: RepoType::MODEL,
            repo_id: repo.into(),
            revision: rev.into(),
            options_json: RString::new(),
        },
        &CancelToken::new(),
    )
}

/// The LFS files of a manifest (those with a sha256).
fn lfs_files(m: &Manifest) -> Vec<ManifestFile> {
    m.files
        .iter()
        .filter(|f| f.sha256.is_some())
        .cloned()
        .collect()
}

/// A batch of `files` of `repo` at `commit`, nothing on disk yet.
fn fresh_batch(repo: &str, commit: &str, files: &[ManifestFile], dir: &Path) -> FetchBatch {
    batch(repo, commit, files, dir, |_| (0, vec![]))
}

/// A batch of `files`, each with a partial file in `dir` holding `prefix(file)` bytes of
/// `content(file)`.
fn batch(
    repo: &str,
    commit: &str,
    files: &[ManifestFile],
    dir: &Path,
    prefix: impl Fn(&ManifestFile) -> (u64, Vec<u8>),
) -> FetchBatch {
    let builder = BatchBuilder::new(repo, commit, dir);
    files
        .iter()
        .fold(builder, |b, f| {
            let (offset, bytes) = prefix(f);
            b.item(f.clone(), &bytes[..offset as usize])
        })
        .build()
}

fn sha256_of(path: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

#[test]
fn capabilities_are_honest() {
    let sim = start();
    let caps = backend(&sim, false, "").capabilities();
    assert_eq!(
        caps.repo_types.as_slice(),
        [
            RepoType::MODEL,
            RepoType::DATASET,
            RepoType::SPACE,
            RepoType::KERNEL
        ]
    );
    let f = caps.features;
    assert!(f.contains(hubget_plugin_api::Features::RESOLVE | hubget_plugin_api::Features::RESUME));
    assert!(f.contains(hubget_plugin_api::Features::PARALLEL_RANGES));
    assert!(f.contains(hubget_plugin_api::Features::NON_XET_FILES));
    assert!(
        !f.contains(hubget_plugin_api::Features::XET),
        "Xet files come as plain bytes"
    );
    let e = Backend::new(HostSettings::default(), "bogus = 1")
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::CONFIG);
}

#[test]
fn snapshot_of_regular_lfs_and_xet_files_uses_one_batch_request() {
    let sim = start();
    let b = backend(&sim, false, "range_size_mib = 1");
    let m = resolve(&b, "acme/tiny", "main").unwrap();
    let tiny = sim.info().repo("acme/tiny").unwrap();
    assert_eq!(m.commit.as_str(), tiny.head);
    for kind in [Storage::Regular, Storage::Lfs, Storage::Xet] {
        assert!(
            tiny.files.iter().any(|f| f.storage == kind),
            "fixture has {kind:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let fb = fresh_batch("acme/tiny", &tiny.head, &m.files, dir.path());
    sim.reset_counters();
    let rec = RecordingProgress::new();
    let out = b.fetch(&fb, &rec.progress(), &CancelToken::new());
    assert_eq!(out.len(), m.files.len());
    for (i, (o, item)) in out.iter().zip(fb.items.iter()).enumerate() {
        assert_eq!(o.index as usize, i);
        let d = done(o);
        let want = tiny.file(item.file.path.as_str()).unwrap();
        assert_eq!(
            sha256_of(item.partial_path.as_str()),
            want.sha256,
            "{}",
            want.path
        );
        assert_eq!(d.bytes_transferred, want.size, "{}", want.path);
        assert_eq!(rec.bytes(o.index), want.size, "{}", want.path);
        assert_eq!(rec.events_of(o.index, EventKind::STARTED).len(), 1);
        let expect_source = if want.storage == Storage::Regular {
            sim.hub_url()
        } else {
            sim.cdn_url()
        };
        assert_eq!(d.source.as_str(), expect_source, "{}", want.path);
        let cps = rec.events_of(o.index, EventKind::CHECKPOINT);
        if want.size > 0 {
            assert_eq!(
                cps.last().map(|e| e.bytes),
                Some(want.size),
                "{}",
                want.path
            );
        }
    }
    let c = sim.counters();
    assert_eq!(
        c.requests_to(Origin::Hub, "lfs_batch"),
        1,
        "one batch request for the fetch"
    );
    assert_eq!(
        c.bytes_from(Origin::Cas),
        0,
        "Xet-backed files come over the bridge, not the CAS"
    );
    let lfs_files = tiny
        .files
        .iter()
        .filter(|f| f.storage != Storage::Regular)
        .count() as u64;
    assert!(
        c.requests_to(Origin::Cdn, "lfs") > lfs_files,
        "large files were split into ranges"
    );
    assert!(!c.auth_seen.cdn);
}

#[test]
fn resume_moves_only_the_rest_and_checkpoints_advance() {
    let sim = start();
    let b = backend(&sim, true, "connections = 3\nrange_size_mib = 1");
    let m = resolve(&b, "acme/tiny", "main").unwrap();
    let f = m.file("lfs.bin").unwrap().clone();
    let content = sim.content("acme/tiny", "lfs.bin").to_vec();
    let offset = MIB + MIB / 2 + 7;
    let dir = tempfile::tempdir().unwrap();
    let fb = batch(
        "acme/tiny",
        m.commit.as_str(),
        std::slice::from_ref(&f),
        dir.path(),
        |_| (offset, content.clone()),
    );
    sim.reset_counters();
    let rec = RecordingProgress::new();
    let out = b.fetch(&fb, &rec.progress(), &CancelToken::new());
    let d = done(&out[0]);
    let rest = f.size - offset;
    assert_eq!(d.bytes_transferred, rest);
    assert_eq!(
        sim.counters().bytes_from(Origin::Cdn),
        rest,
        "only the rest moved"
    );
    assert_eq!(rec.bytes(0), rest);
    let cps: Vec<u64> = rec
        .events_of(0, EventKind::CHECKPOINT)
        .iter()
        .map(|e| e.bytes)
        .collect();
    assert!(
        cps.windows(2).all(|w| w[0] < w[1]) && cps.last() == Some(&f.size),
        "{cps:?}"
    );
    assert_eq!(
        sha256_of(fb.items[0].partial_path.as_str()),
        f.sha256.as_ref().unwrap().as_str()
    );
}

#[test]
fn without_the_batch_api_lfs_files_come_through_resolve() {
    let sim = start();
    let b = backend(&sim, true, "use_batch_api = false");
    let m = resolve(&b, "acme/tiny", "main").unwrap();
    let files = lfs_files(&m);
    let dir = tempfile::tempdir().unwrap();
    let fb = fresh_batch("acme/tiny", m.commit.as_str(), &files, dir.path());
    sim.reset_counters();
    let out = fetch_unobserved(&b, &fb);
    for (o, item) in out.iter().zip(fb.items.iter()) {
        assert_eq!(done(o).source.as_str(), sim.cdn_url());
        assert_eq!(
            sha256_of(item.partial_path.as_str()),
            item.file.sha256.as_ref().unwrap().as_str()
        );
    }
    let c = sim.counters();
    assert_eq!(c.requests_to(Origin::Hub, "lfs_batch"), 0);
    assert!(c.requests_to(Origin::Hub, "resolve") >= files.len() as u64);
    assert!(
        c.auth_seen.hub && !c.auth_seen.cdn,
        "token to the Hub only, not after the 302"
    );
}

#[test]
fn errors_are_classified_per_file() {
    let sim = start();
    let anon = backend(&sim, false, "");
    let e = resolve(&anon, "acme/private", "main").unwrap_err();
    assert_eq!(e.kind, ErrorKind::AUTH);
    let e = resolve(&anon, "acme/tiny", "nope").unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_FOUND);

    let m = resolve(&anon, "acme/tiny", "main").unwrap();
    let good = m.file("config.json").unwrap().clone();
    let missing_regular = ManifestFile {
        path: "missing.txt".into(),
        ..good.clone()
    };
    let lfs = m.file("lfs.bin").unwrap().clone();
    let missing_lfs = ManifestFile {
        path: "gone.bin".into(),
        sha256: ROption::RSome("0".repeat(64).into()),
        ..lfs.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let fb = fresh_batch(
        "acme/tiny",
        m.commit.as_str(),
        &[good, missing_regular, lfs, missing_lfs],
        dir.path(),
    );
    let out = fetch_unobserved(&anon, &fb);
    done(&out[0]);
    assert_eq!(err(&out[1]).kind, ErrorKind::NOT_FOUND);
    assert!(err(&out[1]).message.contains("missing.txt"));
    done(&out[2]);
    assert_eq!(
        err(&out[3]).kind,
        ErrorKind::NOT_FOUND,
        "per-object batch error"
    );

    // A private repo's files without a token.
    let authed = backend(&sim, true, "");
    let pm = resolve(&authed, "acme/private", "main").unwrap();
    let fb = fresh_batch("acme/private", pm.commit.as_str(), &pm.files, dir.path());
    for o in fetch_unobserved(&anon, &fb).iter() {
        assert_eq!(err(o).kind, ErrorKind::AUTH, "{}", err(o));
    }
    for o in fetch_unobserved(&authed, &fb).iter() {
        done(o);
    }
}

#[test]
fn offline_and_cancelled_fetches_do_no_network() {
    let sim = start();
    let b = backend(&sim, false, "");
    let m = resolve(&b, "acme/tiny", "main").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let fb = fresh_batch("acme/tiny", m.commit.as_str(), &m.files, dir.path());
    sim.reset_counters();
    let cancel = CancelToken::new();
    cancel.cancel();
    for o in b
        .fetch(&fb, &RecordingProgress::new().progress(), &cancel)
        .iter()
    {
        assert_eq!(err(o).kind, ErrorKind::CANCELLED);
    }
    let offline = Backend::new(
        HostSettings {
            endpoint: sim.hub_url().into(),
            offline: true,
            ..HostSettings::default()
        },
        "",
    )
    .unwrap();
    for o in fetch_unobserved(&offline, &fb).iter() {
        assert_eq!(err(o).kind, ErrorKind::UNSUPPORTED);
    }
    assert_eq!(
        sim.counters().total_requests.hub + sim.counters().total_requests.cdn,
        0
    );
}

#[test]
fn a_refused_href_is_refreshed_and_the_download_continues() {
    let sim = start();
    let b = backend(&sim, false, "connections = 1");
    let m = resolve(&b, "acme/tiny", "main").unwrap();
    let f = m.file("lfs.bin").unwrap().clone();
    let dir = tempfile::tempdir().unwrap();
    let fb = fresh_batch(
        "acme/tiny",
        m.commit.as_str(),
        std::slice::from_ref(&f),
        dir.path(),
    );
    sim.faults().add(hubsim::Fault::new(
        Origin::Cdn,
        "/lfs/",
        hubsim::FaultAction::Status { code: 403 },
    ));
    sim.reset_counters();
    let rec = RecordingProgress::new();
    let out = b.fetch(&fb, &rec.progress(), &CancelToken::new());
    done(&out[0]);
    assert_eq!(
        sha256_of(fb.items[0].partial_path.as_str()),
        f.sha256.as_ref().unwrap().as_str()
    );
    assert_eq!(
        sim.counters().requests_to(Origin::Hub, "lfs_batch"),
        2,
        "asked again once"
    );
    assert!(
        rec.events_of(0, EventKind::RETRY)
            .iter()
            .any(|e| e.message.contains("403")),
        "the refresh is reported"
    );
}

#[test]
fn retries_inside_the_download_reach_the_host_as_retry_events() {
    let sim = start();
    let b = backend(&sim, false, "connections = 1");
    let m = resolve(&b, "acme/tiny", "main").unwrap();
    let pick = |path: &str| m.file(path).unwrap().clone();
    let files = [pick("config.json"), pick("lfs.bin")];
    let dir = tempfile::tempdir().unwrap();
    let fb = fresh_batch("acme/tiny", m.commit.as_str(), &files, dir.path());
    let id = sim.faults().add(
        hubsim::Fault::new(
            Origin::Cdn,
            "/lfs/",
            hubsim::FaultAction::Status { code: 503 },
        )
        .times(2),
    );
    let rec = RecordingProgress::new();
    let out = b.fetch(&fb, &rec.progress(), &CancelToken::new());
    done(&out[0]);
    done(&out[1]);
    assert_eq!(sim.faults().fired(id), 2);
    assert_eq!(
        sha256_of(fb.items[1].partial_path.as_str()),
        files[1].sha256.as_ref().unwrap().as_str()
    );
    assert!(
        rec.events_of(0, EventKind::RETRY).is_empty(),
        "config.json had none"
    );
    let retries = rec.events_of(1, EventKind::RETRY);
    let sha = files[1].sha256.as_ref().unwrap();
    let messages: Vec<&str> = retries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages.len(), 2, "{messages:?}");
    for (i, message) in messages.iter().enumerate() {
        let head = format!(
            "GET {}/lfs/{sha}: 503 Service Unavailable; retrying in ",
            sim.cdn_url()
        );
        assert!(message.starts_with(&head), "{message}");
        assert!(
            message.ends_with(&format!(" ms (attempt {}/5)", i + 2)),
            "{message}"
        );
    }
    // Sent while the download ran (before its bytes), not after it.
    let all = rec.events();
    let first_bytes = all
        .iter()
        .position(|e| e.index == 1 && e.kind == EventKind::BYTES)
        .unwrap();
    let last_retry = all
        .iter()
        .rposition(|e| e.index == 1 && e.kind == EventKind::RETRY)
        .unwrap();
    assert!(last_retry < first_bytes);
}

#[test]
fn without_a_batch_api_at_the_endpoint_files_come_through_resolve() {
    let sim = start();
    let b = backend(&sim, false, "");
    let m = resolve(&b, "acme/tiny", "main").unwrap();
    let files = lfs_files(&m);
    let dir = tempfile::tempdir().unwrap();
    let fb = fresh_batch("acme/tiny", m.commit.as_str(), &files, dir.path());
    sim.faults().add(hubsim::Fault::new(
        Origin::Hub,
        "objects/batch",
        hubsim::FaultAction::Status { code: 404 },
    ));
    sim.reset_counters();
    let out = fetch_unobserved(&b, &fb);
    for (o, item) in out.iter().zip(fb.items.iter()) {
        assert_eq!(done(o).extra_json.as_str(), r#"{"via":"resolve"}"#);
        assert_eq!(
            sha256_of(item.partial_path.as_str()),
            item.file.sha256.as_ref().unwrap().as_str()
        );
    }
    let c = sim.counters();
    let batches: Vec<_> = c
        .log
        .iter()
        .filter(|r| r.path.contains("objects/batch"))
        .collect();
    assert_eq!(batches.len(), 1, "one batch request");
    assert_eq!(batches[0].status, 404);
    assert!(c.requests_to(Origin::Hub, "resolve") >= files.len() as u64);
}
