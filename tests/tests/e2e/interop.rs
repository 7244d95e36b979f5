//! Sharing one cache: the official Python client (`huggingface_hub` 2.4.0 + `hf_xet`, in the
//! virtualenv hubsim's fidelity check uses) reads what hubget downloaded in offline mode and
//! hubget reads what Python downloaded; two hubget processes on one repo at once.

use std::process::Command;
use std::time::{Duration, Instant};

use hubsim::Origin;

use hubget_tests::assert_contains;
use hubget_tests::hub::{Dl, TINY, assert_cache_layout, python, venv_python, wait};

const PY_SNAPSHOT: &str = r#"
import hashlib, json, os, sys
from huggingface_hub import snapshot_download, hf_hub_download
root = snapshot_download("acme/tiny")
out = {"root": root, "files": {}}
for dirpath, _, names in os.walk(root):
    for n in names:
        p = os.path.join(dirpath, n)
        rel = os.path.relpath(p, root)
        out["files"][rel] = hashlib.sha256(open(p, "rb").read()).hexdigest()
# hf_hub_download of each file resolves through refs/ and snapshots/ too.
for rel in list(out["files"]):
    p = hf_hub_download("acme/tiny", rel)
    assert hashlib.sha256(open(p, "rb").read()).hexdigest() == out["files"][rel], rel
print(json.dumps(out))
"#;

fn expected_files(dl: &Dl) -> std::collections::BTreeMap<String, String> {
    let info = dl.sim.info().repo(TINY).unwrap();
    info.files
        .iter()
        .map(|f| (f.path.clone(), f.sha256.clone()))
        .collect()
}

#[test]
fn python_offline_reads_what_hubget_downloaded() {
    let dl = Dl::new();
    dl.run(&[TINY]).ok();
    dl.sim.reset_counters();
    let got = python(&dl, PY_SNAPSHOT, &[("HF_HUB_OFFLINE", "1")]);
    let files: std::collections::BTreeMap<String, String> =
        serde_json::from_value(got["files"].clone()).unwrap();
    assert_eq!(files, expected_files(&dl));
    let head = dl.head(TINY);
    assert!(
        got["root"]
            .as_str()
            .unwrap()
            .ends_with(&format!("models--acme--tiny/snapshots/{head}"))
    );
    assert_eq!(
        dl.sim.counters().total_requests.hub,
        0,
        "Python stayed offline"
    );
}

#[test]
fn hubget_offline_reads_what_python_downloaded() {
    let dl = Dl::new();
    let online = python(&dl, PY_SNAPSHOT, &[]);
    let files: std::collections::BTreeMap<String, String> =
        serde_json::from_value(online["files"].clone()).unwrap();
    assert_eq!(files, expected_files(&dl), "Python downloaded everything");
    dl.sim.reset_counters();
    let r = dl.run(&[TINY, "--offline", "--json"]);
    r.ok();
    let done = r.of("file_done");
    let mut seen: Vec<String> = done
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, files.keys().cloned().collect::<Vec<_>>());
    for e in &done {
        let p = e["local_path"].as_str().unwrap();
        let data = std::fs::read(p).unwrap();
        assert_eq!(
            hubget::verify::sha256_hex(&data),
            files[e["path"].as_str().unwrap()]
        );
    }
    let single = dl.run(&[TINY, "lfs.bin", "--offline"]);
    single.ok();
    assert!(single.last_line().ends_with("/lfs.bin"));
    let c = dl.sim.counters();
    assert_eq!(
        c.total_requests.hub + c.total_requests.cdn + c.total_requests.cas,
        0
    );
    // And online, hubget finds Python's files complete: no file bytes move.
    dl.run(&[TINY]).ok();
    let c = dl.sim.counters();
    assert_eq!(
        c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas),
        0,
        "{:?}",
        c.requests
    );
}

#[test]
fn two_hubget_processes_on_one_repo_both_succeed_with_one_blob_each() {
    // A shaped link so that the two runs overlap.
    let dl = Dl::shaped(8 * 1024 * 1024);
    let started = Instant::now();
    let a = dl.spawn(&[TINY, "--json"], &[]);
    let b = dl.spawn(&[TINY, "--json"], &[]);
    let (a, b) = (wait(a, started), wait(b, started));
    a.ok();
    b.ok();
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_cache_layout(&dl, TINY, &dl.head(TINY), None);
    // Each file moved once: the second process waited for the lock and found the blob.
    let total: u64 = dl.sim.info().repo(TINY).unwrap().size();
    let c = dl.sim.counters();
    let moved = c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas);
    assert!(
        moved < total + total / 5,
        "moved {moved} bytes for {total} bytes of files"
    );
    let backends: Vec<String> = [&a, &b]
        .iter()
        .flat_map(|r| r.of("file_done"))
        .map(|e| e["backend"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        backends.iter().any(|b| b == "cache"),
        "one run found files the other fetched: {backends:?}"
    );
}

/// Starts Python holding `lock` with `filelock` (as `hf_hub_download` does) for `secs`;
/// returns once it holds it.
fn python_holding(lock: &std::path::Path, secs: f64) -> std::process::Child {
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    let script = format!(
        "import time\nfrom filelock import FileLock\nl = FileLock({:?})\nl.acquire()\n\
         print('locked', flush=True)\ntime.sleep({secs})\nl.release()\n",
        lock.display().to_string()
    );
    let mut child = Command::new(venv_python())
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    let mut line = String::new();
    let stdout = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

/// Python holds huggingface_hub's lock on a blob: hubget waits for it, says so, and only for a
/// bounded time.
#[test]
fn python_file_locks_exclude_hubget_with_a_bounded_wait() {
    let dl = Dl::new();
    let lfs = dl.file(TINY, "lfs.bin");
    let lock_of = |dl: &Dl| {
        dl.cache()
            .join(".locks/models--acme--tiny")
            .join(format!("{}.lock", lfs.sha256))
    };

    // Held for 5 s: hubget waits, warns (after 2 s of waiting), then completes.
    let mut py = python_holding(&lock_of(&dl), 5.0);
    let r = dl.run(&[TINY, "lfs.bin"]);
    r.ok();
    assert!(
        r.secs >= 2.0,
        "hubget did not wait for Python's lock ({}s)",
        r.secs
    );
    assert_contains(&r.stderr, "waiting for lock");
    py.wait().unwrap();

    // Held longer than lock_timeout_secs: a clear error naming the lock, nothing fetched.
    let dl = Dl::new();
    let mut py = python_holding(&lock_of(&dl), 30.0);
    let config = dl.env.write_config("[download]\nlock_timeout_secs = 1\n");
    let r = dl.run(&[TINY, "lfs.bin", "--config", config.to_str().unwrap()]);
    let _ = py.kill();
    let _ = py.wait();
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("timed out") && r.stderr.contains(".lock"),
        "{}",
        r.stderr
    );
    assert_eq!(dl.sim.counters().bytes_from(Origin::Cdn), 0);
}

/// A `--local-dir` written by hubget is up to date for Python: `snapshot_download(local_dir=..)`
/// (online) reads hubget's metadata files and downloads nothing.
#[test]
fn python_finds_hubget_local_dir_up_to_date() {
    let dl = Dl::new();
    let dir = dl.env.path("ld");
    dl.run(&[TINY, "--local-dir", dir.to_str().unwrap()]).ok();
    dl.sim.reset_counters();
    let script = format!(
        "import json\nfrom huggingface_hub import snapshot_download\n\
         print(json.dumps(snapshot_download('acme/tiny', local_dir={:?})))\n",
        dir.display().to_string()
    );
    let root = python(&dl, &script, &[]);
    assert_eq!(root.as_str().unwrap(), dir.display().to_string());
    let c = dl.sim.counters();
    let gets = c
        .requests_by_method
        .get("hub:resolve:GET")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas) + gets,
        0,
        "Python re-downloaded: {:?}",
        c.requests_by_method
    );
}

/// And the reverse: a local dir written by Python is complete for hubget (its metadata files).
#[test]
fn hubget_finds_python_local_dir_up_to_date() {
    let dl = Dl::new();
    let dir = dl.env.path("ld");
    let script = format!(
        "import json\nfrom huggingface_hub import snapshot_download\n\
         print(json.dumps(snapshot_download('acme/tiny', local_dir={:?})))\n",
        dir.display().to_string()
    );
    python(&dl, &script, &[]);
    dl.sim.reset_counters();
    let r = dl.run(&[TINY, "--local-dir", dir.to_str().unwrap(), "--json"]);
    r.ok();
    let plan = &r.of("plan")[0];
    assert_eq!(plan["remaining_bytes"], 0, "{plan}");
    let c = dl.sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas), 0);
    assert!(
        !c.requests_by_method.contains_key("hub:resolve:GET"),
        "{:?}",
        c.requests_by_method
    );
}
