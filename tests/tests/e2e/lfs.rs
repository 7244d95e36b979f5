//! The lfs backend through the `hubget` binary against hubsim: a snapshot of regular + LFS +
//! Xet-backed files (Xet files as plain bytes over the LFS bridge, no CAS traffic), resume from
//! a partial file (only the rest moves; also when the CDN ignores `Range`), 404/401 classified
//! into exit codes, the token rule.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hubsim::{FixtureSpec, HubSim, HubSimHandle, Origin, Storage};
use serde_json::Value;

const REPO: &str = "acme/tiny";

fn sim() -> HubSimHandle {
    let spec = FixtureSpec::minimal().repo(
        FixtureSpec::default_set(1)
            .repos
            .into_iter()
            .find(|r| r.id == "acme/private")
            .expect("acme/private in the default set"),
    );
    HubSim::start_blocking(HubSim::builder().fixtures(spec)).expect("hubsim")
}

/// `target/debug`, where `cargo build --workspace` put `hubget` and the plugins.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/debug/deps/..")
        .to_path_buf()
}

/// An isolated home with its own cache.
struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp home"),
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Runs `hubget download <args> --json --backend lfs --no-fallback` against `sim`.
    fn download(&self, sim: &HubSim, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
        let mut cmd =
            Command::new(bin_dir().join(format!("hubget{}", std::env::consts::EXE_SUFFIX)));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("HF_HOME", self.dir.path().join("hf"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("xdg"))
            .env("XDG_CACHE_HOME", self.dir.path().join("xdg-cache"))
            .env("HUBGET_PLUGIN_DIR", bin_dir())
            .env("RUST_LOG", "info")
            .arg("download")
            .args(args)
            .args(["--endpoint", sim.hub_url()])
            .arg("--cache-dir")
            .arg(self.cache())
            .args(["--backend", "lfs", "--no-fallback", "--json"])
            .stdin(Stdio::null());
        let out = cmd.output().expect("run hubget");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let events = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect();
        (
            out.status.code(),
            events,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn snapshot(&self, repo_folder: &str, commit: &str, path: &str) -> PathBuf {
        self.cache()
            .join(repo_folder)
            .join("snapshots")
            .join(commit)
            .join(path)
    }
}

/// The bytes hubsim serves for `f` (CDN for LFS/Xet files, `resolve` for regular ones).
fn expected(sim: &HubSim, commit: &str, f: &hubsim::FileInfo) -> Vec<u8> {
    if f.storage == Storage::Regular {
        raw_get(&format!(
            "{}/{REPO}/resolve/{commit}/{}",
            sim.hub_url(),
            f.path
        ))
    } else {
        raw_get(&format!("{}/lfs/{}", sim.cdn_url(), f.sha256))
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn events<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn lfs_snapshot_of_regular_lfs_and_xet_files() {
    let sim = sim();
    let home = Home::new();
    let (code, ev, stderr) = home.download(&sim, &[REPO]);
    assert_eq!(code, Some(0), "{stderr}");
    let tiny = sim.info().repo(REPO).unwrap();
    for kind in [Storage::Regular, Storage::Lfs, Storage::Xet] {
        assert!(tiny.files.iter().any(|f| f.storage == kind));
    }
    let done = events(&ev, "file_done");
    assert_eq!(done.len(), tiny.files.len(), "{stderr}");
    for f in &tiny.files {
        let path = home.snapshot("models--acme--tiny", &tiny.head, &f.path);
        assert!(
            read(&path) == expected(&sim, &tiny.head, f),
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
fn plant_partial(home: &Home, sim: &HubSim, offset: usize) -> Vec<u8> {
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    let content = expected(sim, &tiny.head, f);
    let blobs = home.cache().join("models--acme--tiny").join("blobs");
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
    content
}

#[test]
fn lfs_resumes_from_a_partial_file() {
    let sim = sim();
    let home = Home::new();
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    // The first 1.5 MiB are on disk from an interrupted run, with the host's resume state.
    let offset = 3 * 512 * 1024;
    let content = plant_partial(&home, &sim, offset);
    sim.reset_counters();
    let (code, ev, stderr) = home.download(&sim, &[REPO, "lfs.bin"]);
    assert_eq!(code, Some(0), "{stderr}");
    let rest = f.size - offset as u64;
    let done = events(&ev, "file_done");
    assert_eq!(done[0]["bytes_transferred"], rest, "{stderr}");
    assert_eq!(
        sim.counters().bytes_from(Origin::Cdn),
        rest,
        "only the rest moved"
    );
    assert!(read(&home.snapshot("models--acme--tiny", &tiny.head, "lfs.bin")) == content);
    let start = events(&ev, "file_start");
    assert_eq!(start[0]["offset"], offset as u64);
}

#[test]
fn lfs_resumes_when_the_cdn_ignores_range() {
    let sim = sim();
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    // 1 MiB left: one range request; 2.5 MiB left: parallel ranges (8 connections by default).
    for (offset, parallel) in [(3 * 1024 * 1024 + 100, false), (3 * 512 * 1024, true)] {
        let home = Home::new();
        let content = plant_partial(&home, &sim, offset);
        sim.faults().clear();
        let id = sim.faults().add(hubsim::Fault::always(
            Origin::Cdn,
            "/lfs/",
            hubsim::FaultAction::IgnoreRange,
        ));
        sim.reset_counters();
        let (code, ev, stderr) = home.download(&sim, &[REPO, "lfs.bin"]);
        assert_eq!(code, Some(0), "offset {offset}: {stderr}");
        assert!(
            read(&home.snapshot("models--acme--tiny", &tiny.head, "lfs.bin")) == content,
            "offset {offset}: content"
        );
        assert_eq!(events(&ev, "file_start")[0]["offset"], offset as u64);
        let done = events(&ev, "file_done");
        assert_eq!(done[0]["backend"], "lfs");
        let transferred = done[0]["bytes_transferred"].as_u64().unwrap();
        assert!(
            transferred >= f.size - offset as u64,
            "offset {offset}: {transferred} network bytes"
        );
        assert!(
            events(&ev, "fallback").is_empty() && events(&ev, "retry").is_empty(),
            "offset {offset}: handled inside the backend\n{stderr}"
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
                stderr.contains("ignores Range"),
                "offset {offset}: the switch to one connection is logged\n{stderr}"
            );
        } else {
            assert_eq!(fired, 1, "offset {offset}: one request, the prefix skipped");
        }
    }
}

/// A plain HTTP/1.1 GET of a public URL (no token), for expected contents.
fn raw_get(url: &str) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (host, path) = url
            .strip_prefix("http://")
            .and_then(|u| u.split_once('/'))
            .expect("http URL");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
        let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        buf.split_off(at)
    })
}

#[test]
fn lfs_classifies_not_found_and_auth() {
    let sim = sim();
    let home = Home::new();
    let (code, ev, stderr) = home.download(&sim, &[REPO, "no-such-file.bin"]);
    assert_eq!(code, Some(3), "missing file → not found\n{stderr}");
    assert!(
        events(&ev, "error")
            .iter()
            .any(|e| e["kind"] == "not-found"),
        "{ev:?}"
    );
    let (code, _, stderr) = home.download(&sim, &[REPO, "--revision", "no-such-branch"]);
    assert_eq!(code, Some(3), "missing revision → not found\n{stderr}");

    let (code, ev, stderr) = home.download(&sim, &["acme/private"]);
    assert_eq!(code, Some(4), "private without a token → auth\n{stderr}");
    assert!(
        events(&ev, "error").iter().any(|e| e["kind"] == "auth"),
        "{ev:?}"
    );

    sim.reset_counters();
    let (code, _, stderr) = home.download(&sim, &["acme/private", "--token", sim.token()]);
    assert_eq!(code, Some(0), "{stderr}");
    let c = sim.counters();
    assert!(c.auth_seen.hub, "the token went to the Hub");
    assert!(!c.auth_seen.cdn, "and never to the CDN");
    assert!(!stderr.contains(sim.token()), "the token is never printed");
}

#[test]
fn lfs_recovers_from_server_errors_and_cut_connections() {
    let sim = sim();
    let home = Home::new();
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file("lfs.bin").unwrap();
    let content = expected(&sim, &tiny.head, f);
    let faults = [
        hubsim::FaultAction::Status { code: 503 },
        hubsim::FaultAction::CutAfter { bytes: 200_000 },
    ];
    for action in faults {
        sim.faults()
            .add(hubsim::Fault::new(Origin::Cdn, "/lfs/", action).times(2));
    }
    sim.reset_counters();
    let (code, ev, stderr) = home.download(&sim, &[REPO, "lfs.bin"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        sim.faults().fired_total(),
        4,
        "every fault met the download"
    );
    assert!(read(&home.snapshot("models--acme--tiny", &tiny.head, "lfs.bin")) == content);
    let done = events(&ev, "file_done");
    assert_eq!(done[0]["backend"], "lfs");
    assert!(
        events(&ev, "fallback").is_empty(),
        "recovered inside the backend"
    );
}
