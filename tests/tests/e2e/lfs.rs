//! The lfs backend through the `hubget` binary against hubsim: a snapshot of regular + LFS +
//! Xet-backed files (Xet files as plain bytes over the LFS bridge, no CAS traffic), resume from
//! a partial file (only the rest moves; also when the CDN ignores `Range`), 404/401 classified
//! into exit codes, the token rule.

use std::path::Path;

use hubget_tests::Run;
use hubget_tests::hub::{Dl, fixtures};
use hubsim::{FixtureSpec, HubSim, Origin, Storage};

const REPO: &str = "acme/tiny";

/// A hubsim with acme/tiny and acme/private, and an environment to run `hubget` in.
fn dl() -> Dl {
    let mut spec = FixtureSpec::minimal();
    spec.repos.extend(
        fixtures()
            .repos
            .into_iter()
            .filter(|r| r.id == "acme/private"),
    );
    Dl::with(HubSim::builder().fixtures(spec))
}

/// `hubget download <args> --backend lfs --no-fallback --json`, logging at info.
fn on_lfs(dl: &Dl, args: &[&str]) -> Run {
    let lfs_only = ["--backend", "lfs", "--no-fallback", "--json"];
    dl.run_env(&[args, &lfs_only].concat(), &[("RUST_LOG", "info")])
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn lfs_snapshot_of_regular_lfs_and_xet_files() {
    let dl = dl();
    let sim = &dl.sim;
    let r = on_lfs(&dl, &[REPO]);
    r.ok();
    let tiny = sim.info().repo(REPO).unwrap();
    for kind in [Storage::Regular, Storage::Lfs, Storage::Xet] {
        assert!(tiny.files.iter().any(|f| f.storage == kind));
    }
    let done = r.of("file_done");
    assert_eq!(done.len(), tiny.files.len(), "{}", r.stderr);
    for f in &tiny.files {
        let path = dl.snapshot_file(REPO, &f.path);
        assert!(
            read(&path) == sim.content(REPO, &f.path),
            "{} content",
            f.path
        );
        let e = done.iter().find(|e| e["path"] == f.path.as_str()).unwrap();
        assert_eq!(e["backend"], "lfs", "{}", f.path);
        let origin = if f.storage == Storage::Regular {
            sim.hub_url()
        } else {
            sim.cdn_url()
        };
        assert_eq!(e["source"], origin, "{}", f.path);
    }
    let c = sim.counters();
    assert!(
        c.requests_to(Origin::Hub, "lfs_batch") >= 1,
        "the batch API was used"
    );
    assert_eq!(
        c.bytes_from(Origin::Cas),
        0,
        "Xet-backed files came over the LFS bridge"
    );
    assert!(!c.auth_seen.cdn);
}

/// Puts the first `offset` bytes of `lfs.bin` in the cache as an interrupted run left them,
/// with the host's resume state; returns the whole content.
fn plant_partial(dl: &Dl, offset: usize) -> Vec<u8> {
    let sim = &dl.sim;
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    let content = sim.content(REPO, &f.path);
    let blobs = dl.blobs(REPO);
    std::fs::create_dir_all(&blobs).unwrap();
    let partial = blobs.join(format!("{}.hubget-partial", f.sha256));
    std::fs::write(&partial, &content[..offset]).unwrap();
    let state = serde_json::json!({
        "version": 1, "etag": f.sha256, "size": f.size, "commit": tiny.head, "checkpoint": offset,
    });
    std::fs::write(
        blobs.join(format!("{}.hubget-partial.json", f.sha256)),
        state.to_string(),
    )
    .unwrap();
    content.to_vec()
}

#[test]
fn lfs_resumes_from_a_partial_file() {
    let dl = dl();
    let sim = &dl.sim;
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    // The first 1.5 MiB are on disk from an interrupted run, with the host's resume state.
    let offset = 3 * 512 * 1024;
    let content = plant_partial(&dl, offset);
    sim.reset_counters();
    let r = on_lfs(&dl, &[REPO, "lfs.bin"]);
    r.ok();
    let rest = f.size - offset as u64;
    let done = r.of("file_done");
    assert_eq!(done[0]["bytes_transferred"], rest, "{}", r.stderr);
    assert_eq!(
        sim.counters().bytes_from(Origin::Cdn),
        rest,
        "only the rest moved"
    );
    assert!(read(&dl.snapshot_file(REPO, "lfs.bin")) == content);
    let start = r.of("file_start");
    assert_eq!(start[0]["offset"], offset as u64);
}

#[test]
fn lfs_resumes_when_the_cdn_ignores_range() {
    let dl = dl();
    let sim = &dl.sim;
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    // 1 MiB left: one range request; 2.5 MiB left: parallel ranges (8 connections by default).
    for (offset, parallel) in [(3 * 1024 * 1024 + 100, false), (3 * 512 * 1024, true)] {
        // A fresh cache each round.
        let _ = std::fs::remove_dir_all(dl.cache());
        let content = plant_partial(&dl, offset);
        sim.faults().clear();
        let id = sim.faults().add(hubsim::Fault::always(
            Origin::Cdn,
            "/lfs/",
            hubsim::FaultAction::IgnoreRange,
        ));
        sim.reset_counters();
        let r = on_lfs(&dl, &[REPO, "lfs.bin"]);
        assert_eq!(r.code, Some(0), "offset {offset}: {}", r.stderr);
        assert!(
            read(&dl.snapshot_file(REPO, "lfs.bin")) == content,
            "offset {offset}: content"
        );
        assert_eq!(r.of("file_start")[0]["offset"], offset as u64);
        let done = r.of("file_done");
        assert_eq!(done[0]["backend"], "lfs");
        let transferred = done[0]["bytes_transferred"].as_u64().unwrap();
        assert!(
            transferred >= f.size - offset as u64,
            "offset {offset}: {transferred} network bytes"
        );
        assert!(
            r.of("fallback").is_empty() && r.of("retry").is_empty(),
            "offset {offset}: handled inside the backend\n{}",
            r.stderr
        );
        let c = sim.counters();
        let asked: Vec<_> = c
            .log
            .iter()
            .filter(|r| r.route == "lfs" && r.method == "GET")
            .collect();
        assert!(!asked.is_empty());
        assert!(
            asked.iter().all(|r| r.range.is_some() && r.status == 200),
            "offset {offset}: every request asked for a range and got the whole body"
        );
        let fired = sim.faults().fired(id) as usize;
        assert_eq!(fired, asked.len());
        if parallel {
            assert!(
                fired >= 2,
                "offset {offset}: parallel ranges first, then one connection ({fired} requests)"
            );
            assert!(
                r.stderr.contains("ignores Range"),
                "offset {offset}: the switch to one connection is logged\n{}",
                r.stderr
            );
        } else {
            assert_eq!(fired, 1, "offset {offset}: one request, the prefix skipped");
        }
    }
}

#[test]
fn lfs_classifies_not_found_and_auth() {
    let dl = dl();
    let sim = &dl.sim;
    let r = on_lfs(&dl, &[REPO, "no-such-file.bin"]);
    assert_eq!(r.code, Some(3), "missing file → not found\n{}", r.stderr);
    assert!(
        r.of("error").iter().any(|e| e["kind"] == "not-found"),
        "{}",
        r.stdout
    );
    let r = on_lfs(&dl, &[REPO, "--revision", "no-such-branch"]);
    assert_eq!(
        r.code,
        Some(3),
        "missing revision → not found\n{}",
        r.stderr
    );

    let r = on_lfs(&dl, &["acme/private"]);
    assert_eq!(
        r.code,
        Some(4),
        "private without a token → auth\n{}",
        r.stderr
    );
    assert!(
        r.of("error").iter().any(|e| e["kind"] == "auth"),
        "{}",
        r.stdout
    );

    sim.reset_counters();
    let r = on_lfs(&dl, &["acme/private", "--token", sim.token()]);
    r.ok();
    let c = sim.counters();
    assert!(c.auth_seen.hub, "the token went to the Hub");
    assert!(!c.auth_seen.cdn, "and never to the CDN");
    assert!(
        !r.stderr.contains(sim.token()),
        "the token is never printed"
    );
}

#[test]
fn lfs_recovers_from_server_errors_and_cut_connections() {
    let dl = dl();
    let sim = &dl.sim;
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    let content = sim.content(REPO, &f.path);
    let faults = [
        hubsim::FaultAction::Status { code: 503 },
        hubsim::FaultAction::CutAfter { bytes: 200_000 },
    ];
    for action in faults {
        sim.faults()
            .add(hubsim::Fault::new(Origin::Cdn, "/lfs/", action).times(2));
    }
    sim.reset_counters();
    let r = on_lfs(&dl, &[REPO, "lfs.bin"]);
    r.ok();
    assert_eq!(
        sim.faults().fired_total(),
        4,
        "every fault met the download"
    );
    assert!(read(&dl.snapshot_file(REPO, "lfs.bin")) == content);
    let done = r.of("file_done");
    assert_eq!(done[0]["backend"], "lfs");
    assert!(r.of("fallback").is_empty(), "recovered inside the backend");
}
