//! A full disk through the `hubget` binary against hubsim: the cache is a small tmpfs, mounted
//! in a private mount namespace held by a helper process (`unshare -m` as root, `unshare -Urm`
//! otherwise) and reached through `/proc/<pid>/root`, so nothing leaks into the host's mounts
//! and the tmpfs disappears with the helper. A repository bigger than the tmpfs is refused
//! before any transfer (exit 7); a disk filled by another process during the transfer stops the
//! run with exit 7, the verified prefix kept, nothing in `blobs/`, and the next run fetches only
//! the rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hubget_tests::hub::{Dl, checkpoint, poll, wait};
use hubget_tests::{Run, assert_contains};
use hubsim::{Fault, FaultAction, FixtureSpec, HubSim, Origin, Shaping};
use serde_json::Value;

const REPO: &str = "acme/tiny";
const FOLDER: &str = "models--acme--tiny";
/// A Xet-backed file (~3 MiB): lfs fetches it over the LFS bridge, xet from the CAS, so a
/// full disk could be "retried" on a second backend.
const FILE: &str = "xet-a.bin";
const MIB: u64 = 1024 * 1024;
/// The disk-full exit code (README, docs/download.md).
const EXIT_DISK_FULL: i32 = 7;

/// A tmpfs of a given size in a private mount namespace, alive while this value is.
struct Tmpfs {
    holder: Child,
    /// The mount point as seen from the test's namespace (an empty directory).
    _dir: tempfile::TempDir,
    /// The tmpfs, reached through the holder's root.
    path: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the mount point");
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false);
        let flags = if root { "-m" } else { "-Urm" };
        let mut holder = Command::new("unshare")
            .arg(flags)
            .args([
                "sh",
                "-c",
                "mount -t tmpfs -o size=\"$1\" tmpfs \"$2\" && echo mounted && exec sleep 600",
                "sh",
                size,
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run unshare (util-linux) to set up a private tmpfs");
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().expect("stdout")).read_line(&mut line);
        if line.trim() != "mounted" {
            let _ = holder.kill();
            let _ = holder.wait();
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "cannot set up a {size} tmpfs with `unshare {flags}` (needs root, or unprivileged \
                 user namespaces): {}",
                err.trim()
            );
        }
        let path = PathBuf::from(format!("/proc/{}/root", holder.id()))
            .join(dir.path().strip_prefix("/").expect("absolute temp dir"));
        assert!(
            path.join(".").is_dir(),
            "the tmpfs is not reachable at {}",
            path.display()
        );
        Self {
            holder,
            _dir: dir,
            path,
        }
    }

    /// Writes `name` until the tmpfs is full; returns its size.
    fn fill(&self, name: &str) -> u64 {
        let mut f = std::fs::File::create(self.path.join(name)).expect("create the filler");
        let chunk = vec![0x5au8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filler: {e}"),
            }
        }
        written
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A hubsim with acme/tiny shaped by `shape`, and an environment to run `hubget` in.
fn dl(shape: Shaping) -> Dl {
    Dl::with(
        HubSim::builder()
            .fixtures(FixtureSpec::minimal())
            .shape(shape),
    )
}

/// `hubget download <args> --backend lfs --json` arguments with the cache in `cache`.
fn into<'a>(cache: &'a Path, args: &[&'a str]) -> Vec<&'a str> {
    let cache = cache.to_str().expect("a UTF-8 temp path");
    [args, &["--cache-dir", cache, "--backend", "lfs", "--json"]].concat()
}

/// Info-level logs (the tests read what hubget says about the disk).
const INFO: &[(&str, &str)] = &[("RUST_LOG", "info")];

/// The entries of `blobs/` other than partial files and their state.
fn installed_blobs(cache: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(cache.join(FOLDER).join("blobs")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains(".hubget-partial"))
        .collect()
}

/// The disk-full `error` event and `done` with exit code 7.
fn assert_disk_full_events(r: &Run) -> String {
    let error = r
        .of("error")
        .into_iter()
        .find(|e| e["path"].is_null())
        .unwrap_or_else(|| panic!("no command error event: {r:?}"));
    assert_eq!(error["kind"], "disk-full", "{error}");
    assert!(
        error["hint"].as_str().unwrap_or("").contains("--cache-dir"),
        "{error}"
    );
    let done = r.events().pop().expect("events");
    assert_eq!(done["event"], "done", "{done}");
    assert_eq!(done["exit_code"], EXIT_DISK_FULL, "{done}");
    error["message"].as_str().unwrap_or("").to_owned()
}

#[test]
fn disk_full_before_the_transfer_fails_fast_and_fetches_nothing() {
    let dl = dl(Shaping::default());
    let sim = &dl.sim;
    let fs = Tmpfs::new("2m");
    let cache = fs.path.join("cache");
    let size = sim.info().repo(REPO).unwrap().file("lfs.bin").unwrap().size;
    assert!(size > 2 * MIB, "lfs.bin must not fit in the tmpfs");

    // --dry-run: the shortfall is a warning, exit 0.
    let r = dl.run_env(&into(&cache, &[REPO, "lfs.bin", "--dry-run"]), INFO);
    r.code_is(0);
    assert!(
        r.of("warning").iter().any(|w| w["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("not enough free space in ")),
        "{}",
        r.stdout
    );

    sim.reset_counters();
    let r = dl.run_env(&into(&cache, &[REPO, "lfs.bin"]), INFO);
    r.code_is(EXIT_DISK_FULL);
    let message = assert_disk_full_events(&r);
    let expected = format!(
        "not enough free space in {}: {} still to fetch, ",
        cache.display(),
        hubget::commands::download::human_bytes(size)
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.ends_with(" free"), "{message}");
    assert!(
        r.stderr.contains(&format!("error: {expected}")),
        "one clear error line: {}",
        r.stderr
    );
    assert_contains(&r.stderr, "hint: free space in ");
    assert!(r.of("file_start").is_empty(), "{}", r.stdout);
    let c = sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn), 0, "nothing came from the CDN");
    assert!(
        c.log.iter().all(|l| l.origin != Origin::Cdn),
        "no CDN request at all"
    );
    assert!(installed_blobs(&cache).is_empty());
    assert!(
        !cache.join(FOLDER).join("blobs").exists(),
        "nothing was written into the cache"
    );
}

#[test]
fn disk_filled_during_the_transfer_stops_keeps_the_prefix_and_resumes() {
    // 1 MiB/s, and a 6 s pause after 2 MiB: the transfer cannot finish before the test has
    // seen a checkpoint and filled the disk.
    let dl = dl(Shaping {
        rate_per_conn: Some(MIB),
        ..Shaping::default()
    });
    let sim = &dl.sim;
    let fs = Tmpfs::new("6m");
    let cache = fs.path.join("cache");
    let tiny = sim.info().repo(REPO).unwrap();
    let f = tiny.file(FILE).unwrap().clone();
    assert!(
        f.xet_hash.is_some(),
        "{FILE} can go to lfs (LFS bridge) and to xet (CAS)"
    );
    sim.faults().add(Fault::new(
        Origin::Cdn,
        "/lfs/",
        FaultAction::Stall {
            secs: 6.0,
            after_bytes: Some(2 * MIB),
        },
    ));
    let state = cache
        .join(FOLDER)
        .join("blobs")
        .join(format!("{}.hubget-partial.json", f.sha256));
    let started = Instant::now();
    let child = dl.spawn(&into(&cache, &[REPO, FILE, "-x", "1"]), INFO);
    // The preflight passed (4 MiB < 6 MiB); wait for a persisted checkpoint, then another
    // process fills the disk.
    let blobs = cache.join(FOLDER).join("blobs");
    let persisted = || checkpoint(&blobs, &f.sha256).filter(|&cp| cp > 0);
    assert!(
        poll(Duration::from_secs(30), || persisted().is_some()),
        "no checkpoint was persisted"
    );
    let checkpoint = persisted().unwrap();
    assert!(checkpoint < f.size);
    let filler = fs.fill("filler");
    assert!(filler > 0);

    let r = wait(child, started);
    r.code_is(EXIT_DISK_FULL);
    let message = assert_disk_full_events(&r);
    assert!(
        message.starts_with(&format!("disk full: no space left in {}", cache.display())),
        "{message}"
    );
    assert!(message.contains("No space left on device"), "{message}");
    // Not sprayed: xet could serve the file too, but got no call; no retry, one CDN request.
    let plan = r.of("plan");
    assert!(
        plan[0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "xet"),
        "{}",
        plan[0]
    );
    assert!(
        r.of("file_start").iter().all(|s| s["backend"] == "lfs"),
        "{}",
        r.stdout
    );
    assert!(r.of("retry").is_empty(), "{}", r.stdout);
    let c = sim.counters();
    let cdn_requests = c.log.iter().filter(|l| l.origin == Origin::Cdn).count();
    assert_eq!(cdn_requests, 1, "one CDN request, no retry: {:?}", c.log);
    assert_eq!(c.bytes_from(Origin::Cas), 0);
    // Nothing unverified landed; the prefix and its state are kept.
    assert!(
        installed_blobs(&cache).is_empty(),
        "{:?}",
        installed_blobs(&cache)
    );
    assert!(
        !cache
            .join(FOLDER)
            .join("snapshots")
            .join(&tiny.head)
            .join(FILE)
            .exists()
    );
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(&state).expect("state kept"))
        .expect("state is JSON");
    let kept = kept["checkpoint"].as_u64().unwrap();
    assert!(kept >= checkpoint, "{kept} < {checkpoint}");

    // Space is freed: the next run resumes from the kept checkpoint and fetches only the rest.
    std::fs::remove_file(fs.path.join("filler")).unwrap();
    sim.faults().clear();
    sim.reset_counters();
    let r = dl.run_env(&into(&cache, &[REPO, FILE, "-x", "1"]), INFO);
    r.code_is(0);
    let start = r.of("file_start");
    assert_eq!(start.len(), 1, "{}", r.stdout);
    let offset = start[0]["offset"].as_u64().unwrap();
    assert_eq!(offset, kept, "resumed from the kept checkpoint");
    assert_eq!(
        sim.counters().bytes_from(Origin::Cdn),
        f.size - offset,
        "only what was missing moved"
    );
    let done = r.of("file_done");
    assert_eq!(done[0]["sha256"], f.sha256.as_str());
    assert_eq!(installed_blobs(&cache), vec![f.sha256.clone()]);
    let linked = cache
        .join(FOLDER)
        .join("snapshots")
        .join(&tiny.head)
        .join(FILE);
    assert_eq!(std::fs::metadata(linked).unwrap().len(), f.size);
}
