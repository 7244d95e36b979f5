//! The download engine end to end: the `hubget` binary with the real lfs/xet/mirror plugins
//! (from `target/debug`) against hubsim. Cache layout, `--local-dir`, filters, revisions,
//! resume after SIGKILL, corruption, stalls, 429, backend retries (`backend_retry` events, the
//! stall watchdog excusing an announced wait), auth, path traversal, offline mode, Ctrl-C, and
//! the token never showing up in output.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hubget_tests::hub::{
    BIG_LFS, Dl, TINY, assert_cache_layout, checkpoint, one_commit, poll, sha256_file, wait,
    written_ranges,
};
use hubget_tests::{assert_contains, assert_rate_capped, done_rate};
use hubsim::{Fault, FaultAction, HubSim, Origin};

#[test]
fn snapshot_lands_in_the_huggingface_cache_layout() {
    let dl = Dl::new();
    let head = dl.head(TINY);
    let r = dl.run(&[TINY, "--json"]);
    r.ok();
    let root = dl.repo_dir("models--acme--tiny");
    assert_cache_layout(&dl, TINY, &head, None);
    // refs/main holds the commit without a newline; the lock files live in .locks/<folder>/.
    assert_eq!(
        std::fs::read_to_string(root.join("refs/main")).unwrap(),
        head
    );
    assert!(dl.cache().join(".locks/models--acme--tiny").is_dir());
    // The JSON stream: every event has the schema; plan first, done last with the path.
    let events = r.events();
    assert!(events.iter().all(|e| e["schema"] == 1), "{}", r.stdout);
    assert_eq!(events.first().unwrap()["event"], "plan");
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["exit_code"], 0);
    let snapshot = root.join("snapshots").join(&head);
    assert_eq!(done["path"], snapshot.display().to_string());
    let file_done = r.of("file_done");
    assert_eq!(
        file_done.len(),
        dl.sim.info().repo(TINY).unwrap().files.len()
    );
    for e in &file_done {
        for key in [
            "path",
            "backend",
            "source",
            "bytes",
            "bytes_transferred",
            "sha256",
            "secs",
        ] {
            assert!(!e[key].is_null(), "file_done lacks {key}: {e}");
        }
    }
    // Without --json the last line of stdout is the snapshot folder, and a second run finds
    // everything complete: no file bytes move.
    dl.sim.reset_counters();
    let again = dl.run(&[TINY]);
    again.ok();
    assert_eq!(again.last_line(), snapshot.display().to_string());
    let c = dl.sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas), 0);
    assert_eq!(c.requests_to(Origin::Hub, "resolve"), 0, "{:?}", c.requests);
}

#[test]
fn a_kernel_repository_downloads_from_an_hf_address() {
    let files = r##"
  { path = "README.md", content = { kind = "text", text = "# flash\n" } },
  { path = "build/torch-cuda/_ops.py", content = { kind = "text", text = "ops = 1\n" } },
  { path = "build/torch-cuda/kernel.so", storage = "lfs", content = { kind = "random", size = 300000, seed = 5 } },"##;
    let spec = one_commit("acme/flash", "kernel", "a kernel build", files);
    let dl = Dl::with(HubSim::builder().fixtures(spec));
    let head = dl.head("acme/flash");
    // Type, revision and a folder in one argument, as the hf CLI takes them.
    let r = dl.run(&["hf://kernels/acme/flash@main/build/", "--json"]);
    r.ok();
    let snapshot = dl
        .repo_dir("kernels--acme--flash")
        .join("snapshots")
        .join(&head);
    assert_eq!(
        std::fs::read_to_string(snapshot.join("build/torch-cuda/_ops.py")).unwrap(),
        "ops = 1\n"
    );
    assert_eq!(
        std::fs::read(snapshot.join("build/torch-cuda/kernel.so")).unwrap(),
        dl.sim.content("acme/flash", "build/torch-cuda/kernel.so")
    );
    assert!(
        !snapshot.join("README.md").exists(),
        "only the folder asked for"
    );
}

#[test]
fn a_dataset_folder_from_an_hf_address_lands_in_the_datasets_folder() {
    let files = r##"
  { path = "README.md", content = { kind = "text", text = "# rows\n" } },
  { path = "data/train/a.txt", content = { kind = "text", text = "a\n" } },
  { path = "data/validation/b.txt", content = { kind = "text", text = "b\n" } },
  { path = "data/validation/c.bin", storage = "lfs", content = { kind = "random", size = 70000, seed = 9 } },"##;
    let spec = one_commit("acme/rows", "dataset", "rows", files);
    let dl = Dl::with(HubSim::builder().fixtures(spec));
    let head = dl.head("acme/rows");
    let r = dl.run(&["hf://datasets/acme/rows/data/validation/"]);
    r.ok();
    let snapshot = dl
        .repo_dir("datasets--acme--rows")
        .join("snapshots")
        .join(&head);
    for f in ["data/validation/b.txt", "data/validation/c.bin"] {
        assert_eq!(
            std::fs::read(snapshot.join(f)).unwrap(),
            dl.sim.content("acme/rows", f),
            "{f}"
        );
    }
    assert!(
        !snapshot.join("data/train/a.txt").exists(),
        "only the folder"
    );
    assert!(!snapshot.join("README.md").exists(), "only the folder");
    assert_eq!(
        std::fs::read_to_string(dl.repo_dir("datasets--acme--rows").join("refs/main")).unwrap(),
        head
    );
    // The folder named without its `/` is a file name, as in `hf download`; the error says the
    // repository has a folder of that name and shows the address with the `/`.
    let r = dl.run(&["hf://datasets/acme/rows/data/validation"]);
    r.code_is(3);
    assert_contains(&r.stderr, "data/validation/");
}

#[test]
fn a_pull_request_revision_lands_under_its_commit_and_ref() {
    let dl = Dl::new();
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let pr = info.prs["refs/pr/1"].clone();
    dl.run(&[TINY, "--revision", "refs/pr/1"]).ok();
    let repo = dl.repo_dir("models--acme--tiny");
    // huggingface_hub names the ref file after the revision: `refs/refs/pr/1`.
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/refs/pr/1")).unwrap(),
        pr
    );
    let commit = info.commit(&pr).expect("the PR's commit");
    for f in &commit.files {
        assert_eq!(
            std::fs::metadata(repo.join("snapshots").join(&pr).join(&f.path))
                .unwrap()
                .len(),
            f.size,
            "{}",
            f.path
        );
    }
}

#[test]
fn local_dir_gets_real_files_and_huggingface_metadata() {
    let dl = Dl::new();
    let head = dl.head(TINY);
    let dir = dl.env.path("out");
    let dir_s = dir.to_str().unwrap();
    let r = dl.run(&[TINY, "--local-dir", dir_s]);
    r.ok();
    assert_eq!(r.last_line(), dir_s);
    let info = dl.sim.info().repo(TINY).unwrap();
    for f in &info.files {
        let p = dir.join(&f.path);
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file(), "{} is a real file", f.path);
        assert_eq!(sha256_file(&p), f.sha256);
        let md = std::fs::read_to_string(
            dir.join(".cache/huggingface/download")
                .join(format!("{}.metadata", f.path)),
        )
        .unwrap();
        let lines: Vec<&str> = md.lines().collect();
        let etag = if f.storage == hubsim::Storage::Regular {
            &f.git_oid
        } else {
            &f.sha256
        };
        assert_eq!(lines.len(), 3, "{md}");
        assert_eq!(lines[0], head);
        assert_eq!(lines[1], etag);
        assert!(lines[2].parse::<f64>().is_ok(), "{md}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join(".cache/huggingface/.gitignore")).unwrap(),
        "*"
    );
    assert!(
        !dl.cache().join("models--acme--tiny").exists(),
        "nothing in the cache"
    );
    // Re-running skips complete files.
    dl.sim.reset_counters();
    dl.run(&[TINY, "--local-dir", dir_s]).ok();
    let c = dl.sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas), 0);
    // Offline, the local dir answers by itself.
    dl.sim.reset_counters();
    let r = dl.run(&[TINY, "--local-dir", dir_s, "--offline"]);
    r.ok();
    assert_eq!(r.last_line(), dir_s);
    let r = dl.run(&[TINY, "sub/dir/notes.txt", "--local-dir", dir_s, "--offline"]);
    r.ok();
    assert_eq!(
        r.last_line(),
        dir.join("sub/dir/notes.txt").display().to_string()
    );
    dl.run(&[TINY, "nope.txt", "--local-dir", dir_s, "--offline"])
        .code_is(6);
    assert_eq!(dl.sim.counters().total_requests.hub, 0);
}

#[test]
fn include_exclude_and_single_file() {
    let dl = Dl::new();
    let head = dl.head(TINY);
    dl.run(&[TINY, "--include", "*.json", "--include", "sub/"])
        .ok();
    dl.assert_landed(TINY, &["config.json", "sub/dir/notes.txt"]);
    let snap = dl
        .repo_dir("models--acme--tiny")
        .join("snapshots")
        .join(&head);
    assert!(!snap.join("lfs.bin").exists() && !snap.join("README.md").exists());
    // Filters that match nothing: success, a warning, nothing fetched.
    let r = dl.run(&[TINY, "--include", "*.nothing", "--json"]);
    r.ok();
    let warning = &r.of("warning")[0];
    assert!(
        warning["message"].as_str().unwrap().contains("matches"),
        "{}",
        r.stdout
    );
    assert!(r.of("file_done").is_empty());

    let dl = Dl::new();
    dl.run(&[TINY, "--exclude", "*.bin", "--exclude", "*.safetensors"])
        .ok();
    dl.assert_landed(TINY, &["README.md", "config.json", "sub/dir/notes.txt"]);

    // One file: the last line is the file itself; globs are ignored with a warning.
    let dl = Dl::new();
    let r = dl.run(&[TINY, "lfs.bin", "--include", "*.json"]);
    r.ok();
    let file = dl
        .repo_dir("models--acme--tiny")
        .join("snapshots")
        .join(&head)
        .join("lfs.bin");
    assert_eq!(r.last_line(), file.display().to_string());
    assert_contains(&r.stderr, "ignored");
    dl.assert_landed(TINY, &["lfs.bin"]);

    // A file the revision does not have: exit 3 and the .no_exist marker.
    let r = dl.run(&[TINY, "nope.txt"]);
    r.code_is(3);
    assert!(
        dl.repo_dir("models--acme--tiny")
            .join(".no_exist")
            .join(&head)
            .join("nope.txt")
            .is_file()
    );
}

#[test]
fn tag_and_commit_sha_revisions() {
    let dl = Dl::new();
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let tag_sha = info.tags["v1.0"].clone();
    dl.run(&[TINY, "--revision", "v1.0"]).ok();
    let root = dl.repo_dir("models--acme--tiny");
    assert_eq!(
        std::fs::read_to_string(root.join("refs/v1.0")).unwrap(),
        tag_sha
    );
    assert_cache_layout(&dl, TINY, &tag_sha, None);

    let dev_sha = info.branches["dev/feature"].clone();
    let r = dl.run(&[TINY, "--revision", &dev_sha, "feature.txt"]);
    r.ok();
    assert!(
        r.last_line()
            .ends_with(&format!("snapshots/{dev_sha}/feature.txt")),
        "{}",
        r.stdout
    );
    assert!(
        !root.join("refs").join(&dev_sha).exists(),
        "no ref for a commit sha"
    );
    // A branch with a slash gets a nested ref.
    dl.run(&[TINY, "--revision", "dev/feature", "feature.txt"])
        .ok();
    assert_eq!(
        std::fs::read_to_string(root.join("refs/dev/feature")).unwrap(),
        dev_sha
    );
}

#[test]
fn resume_after_sigkill_fetches_only_the_rest() {
    // 8 MiB at 2 MiB/s: about 4 s, time enough to kill it midway.
    let dl = Dl::shaped(2 * 1024 * 1024);
    let f = dl.file("acme/resume", "big.bin");
    let blobs = dl.blobs("acme/resume");
    let args = [BIG_LFS, &["--connections", "1"]].concat();
    let cp = dl.kill_past_a_quarter(&args, &f);
    // The partial is hubget's own name: huggingface_hub < 1.18 resumes `<etag>.incomplete` by
    // appending, which would land our unverified bytes past the checkpoint.
    let names: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.ends_with(".incomplete")),
        "{names:?}"
    );
    assert!(
        names.contains(&format!("{}.hubget-partial", f.sha256)),
        "{names:?}"
    );
    let first_run_bytes = dl.sim.counters().bytes_from(Origin::Cdn);
    dl.sim.reset_counters();

    let r = dl.run(&[&args[..], &["--json"]].concat());
    r.ok();
    let second = dl.sim.counters().bytes_from(Origin::Cdn);
    let rest = f.size - cp;
    // Only the rest moved (the margin covers bytes written after the last persisted checkpoint
    // being fetched again).
    assert!(
        second >= rest && second <= rest + 512 * 1024,
        "second run moved {second}, rest was {rest} (cp {cp}, first run {first_run_bytes})"
    );
    assert_eq!(r.of("file_start")[0]["offset"], cp);
    dl.assert_landed("acme/resume", &["big.bin"]);
}

/// What [`kill_with_ranges_past_the_checkpoint`] leaves: the sim, the file, the blobs dir, the
/// args, the checkpoint and the written ranges at the kill.
struct Killed {
    dl: Dl,
    f: hubsim::FileInfo,
    blobs: PathBuf,
    args: Vec<&'static str>,
    cp: u64,
    written: Vec<(u64, u64)>,
}

/// Starts `big.bin` of `acme/resume` over 4 connections (1 MiB ranges) with the first range's
/// request stalled, so ranges past the checkpoint complete; SIGKILLs hubget once the state
/// records at least 3 MiB of them.
fn kill_with_ranges_past_the_checkpoint() -> Killed {
    let dl = Dl::shaped(2 * 1024 * 1024);
    let f = dl.file("acme/resume", "big.bin");
    let blobs = dl.blobs("acme/resume");
    dl.sim.faults().add(Fault::new(
        Origin::Cdn,
        &f.sha256,
        FaultAction::Stall {
            secs: 60.0,
            after_bytes: None,
        },
    ));
    let args = [BIG_LFS, &["--connections", "4"]].concat();
    dl.kill_when(&args, || {
        let w: u64 = written_ranges(&blobs, &f.sha256)
            .iter()
            .map(|(a, b)| b - a)
            .sum();
        w >= 3 * 1024 * 1024
    });
    dl.sim.faults().clear();
    let cp = checkpoint(&blobs, &f.sha256).expect("state survives the kill");
    let written = written_ranges(&blobs, &f.sha256);
    assert!(cp < f.size, "killed before the end");
    Killed {
        dl,
        f,
        blobs,
        args,
        cp,
        written,
    }
}

#[test]
fn resume_after_sigkill_fetches_only_the_holes_between_parallel_ranges() {
    let Killed {
        dl,
        f,
        blobs,
        args,
        cp,
        written,
    } = kill_with_ranges_past_the_checkpoint();
    let on_disk: u64 = written.iter().map(|(a, b)| b - a).sum();
    assert!(
        written.iter().all(|&(a, b)| cp < a && a < b && b <= f.size),
        "ranges lie past the checkpoint: {cp} {written:?}"
    );
    let partial_len = std::fs::metadata(blobs.join(format!("{}.hubget-partial", f.sha256)))
        .unwrap()
        .len();
    assert!(
        written.iter().all(|&(_, b)| b <= partial_len),
        "{written:?}"
    );
    dl.sim.reset_counters();

    let r = dl.run(&[&args[..], &["--json"]].concat());
    r.ok();
    let second = dl.sim.counters().bytes_from(Origin::Cdn);
    let missing = f.size - cp - on_disk;
    // Only the holes moved: not the 'rest after the checkpoint' ({f.size} - {cp}).
    assert!(
        second >= missing && second <= missing + 64 * 1024,
        "second run moved {second}, missing was {missing} (cp {cp}, written {written:?})"
    );
    assert_eq!(r.of("file_start")[0]["offset"], cp);
    assert_eq!(
        r.of("file_done")[0]["sha256"],
        f.sha256.as_str(),
        "{}",
        r.stdout
    );
    dl.assert_landed("acme/resume", &["big.bin"]);
}

#[test]
fn a_corrupted_written_range_is_caught_by_verification_and_fetched_again_from_zero() {
    let Killed {
        dl,
        f,
        blobs,
        args,
        written,
        ..
    } = kill_with_ranges_past_the_checkpoint();
    // Flip bytes inside a range the state says is written: the next run trusts and skips it.
    let data = blobs.join(format!("{}.hubget-partial", f.sha256));
    let (a, b) = written[0];
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = ((a + b) / 2) as usize;
    for x in &mut bytes[mid..mid + 16] {
        *x ^= 0xFF;
    }
    std::fs::write(&data, &bytes).unwrap();

    // The check fails, the bytes and their ranges state are discarded, and the file is
    // fetched once more from zero on the same backend (the only one serving it): it lands.
    dl.sim.reset_counters();
    let r = dl.run(&[&args[..], &["--json"]].concat());
    r.ok();
    let retries = r.of("retry");
    assert_eq!(retries.len(), 1, "{}", r.stdout);
    assert_eq!(retries[0]["error"]["kind"], "integrity", "{}", r.stdout);
    assert!(
        retries[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("verification failed"),
        "{}",
        r.stdout
    );
    assert!(
        dl.sim.counters().bytes_from(Origin::Cdn) >= f.size,
        "the second attempt starts from zero"
    );
    assert_eq!(
        r.of("file_done")[0]["sha256"],
        f.sha256.as_str(),
        "{}",
        r.stdout
    );
    assert!(!data.exists(), "the bad partial is gone");
    dl.assert_landed("acme/resume", &["big.bin"]);
}

#[test]
fn a_second_verification_failure_on_the_only_backend_never_lands() {
    let dl = Dl::new();
    let f = dl.file("acme/resume", "big.bin");
    // Every CDN answer has a flipped byte: both attempts fail the check.
    dl.sim.faults().add(Fault::always(
        Origin::Cdn,
        "/lfs/",
        FaultAction::FlipByte { offset: None },
    ));
    let r = dl.run(&[BIG_LFS, &["--json"]].concat());
    assert_eq!(r.code, Some(5), "integrity failure: {}", r.stderr);
    assert_eq!(r.of("retry").len(), 1, "retried once: {}", r.stdout);
    let blobs = dl.blobs("acme/resume");
    assert!(!blobs.join(&f.sha256).exists(), "nothing unverified lands");
}

#[test]
fn a_one_time_flipped_byte_from_a_bad_proxy_is_retried_and_lands() {
    let dl = Dl::new();
    let f = dl.file("acme/resume", "big.bin");
    dl.sim
        .faults()
        .add(Fault::new(Origin::Cdn, "/lfs/", FaultAction::FlipByte { offset: None }).times(1));
    let r = dl.run(&[BIG_LFS, &["--json"]].concat());
    r.ok();
    assert_eq!(r.of("retry").len(), 1, "{}", r.stdout);
    assert_eq!(r.of("file_done")[0]["sha256"], f.sha256.as_str());
}

#[test]
fn ctrl_c_keeps_the_partial_file_and_exits_130() {
    ctrl_c_keeps_the_partial_file_and_the_next_run_resumes(&[]);
}

/// Ctrl-C (SIGINT to hubget) mid-download: exit 130, the partial file and its state kept,
/// and the next run resumes from the checkpoint. `env`: extra variables (the isolation mode).
pub fn ctrl_c_keeps_the_partial_file_and_the_next_run_resumes(env: &[(&str, &str)]) {
    let dl = Dl::shaped(1024 * 1024);
    let f = dl.file("acme/resume", "big.bin");
    let blobs = dl.blobs("acme/resume");
    let started = Instant::now();
    let child = dl.spawn(
        &[
            "acme/resume",
            "big.bin",
            "--backend",
            "lfs",
            "--no-fallback",
            "--json",
        ],
        env,
    );
    assert!(poll(Duration::from_secs(20), || checkpoint(
        &blobs, &f.sha256
    )
    .is_some_and(|c| c > 0)));
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let r = wait(child, started);
    r.code_is(130);
    let done = r.of("done");
    assert_eq!(done[0]["exit_code"], 130);
    assert!(
        blobs.join(format!("{}.hubget-partial", f.sha256)).exists(),
        "partial kept"
    );
    let kept = checkpoint(&blobs, &f.sha256).expect("state kept");
    assert!(kept > 0, "state kept");
    // Said to the person, not as a log record.
    assert_contains(&r.stderr, "Interrupted: stopping. Partial files are kept");
    assert!(!r.stderr.contains("WARN"), "{}", r.stderr);
    // The next run resumes from the kept partial: it starts at the checkpoint and the CDN
    // serves only the rest.
    dl.sim.reset_counters();
    let again = dl.run_env(
        &["acme/resume", "big.bin", "--backend", "lfs", "--json"],
        env,
    );
    again.ok();
    let offset = again.first("file_start")["offset"].as_u64().unwrap();
    assert!(offset >= kept, "resumed at {offset}, checkpoint {kept}");
    assert!(dl.sim.counters().bytes_from(Origin::Cdn) <= f.size - offset);
    assert_eq!(again.first("file_done")["sha256"], f.sha256.as_str());
}

/// A hubsim whose CDN answers every request for acme/tiny's `xet-a.bin` with `action` (lfs
/// gets it, xet reads the CAS).
fn xet_a_broken_on_the_cdn(action: FaultAction) -> Dl {
    let dl = Dl::new();
    let xet = dl.file(TINY, "xet-a.bin");
    dl.sim
        .faults()
        .add(Fault::always(Origin::Cdn, &xet.sha256, action));
    dl
}

#[test]
fn corruption_never_lands_and_the_next_backend_completes() {
    // lfs gets a flipped byte from the CDN; xet (through the CAS) serves it right.
    let dl = xet_a_broken_on_the_cdn(FaultAction::FlipByte { offset: Some(1000) });
    let r = dl.run(&[TINY, "xet-a.bin", "--json"]);
    r.ok();
    let fallback = r.of("fallback");
    assert_eq!(fallback[0]["from"], "lfs", "{}", r.stdout);
    assert_eq!(fallback[0]["to"], "xet");
    assert_eq!(fallback[0]["error"]["kind"], "integrity");
    assert!(
        fallback[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("sha256 mismatch")
    );
    assert_eq!(r.of("file_done")[0]["backend"], "xet");
    assert!(dl.sim.counters().bytes_from(Origin::Cas) > 0);
    dl.assert_landed(TINY, &["xet-a.bin"]);
}

/// A config where plugins try each request once (faults that fire every time fail fast).
fn quick(dl: &Dl) -> String {
    let path = dl.env.write_config("[download]\nmax_attempts = 1\n");
    path.to_str().unwrap().to_owned()
}

#[test]
fn wrong_length_and_truncated_bodies_never_land() {
    let dl = Dl::new();
    let xet = dl.file(TINY, "xet-a.bin");
    // Wrong length (body shorter than declared): lfs gives up, xet completes.
    let fault = FaultAction::WrongContentLength { delta: 5000 };
    dl.sim
        .faults()
        .add(Fault::always(Origin::Cdn, &xet.sha256, fault));
    let r = dl.run(&[TINY, "xet-a.bin", "--json", "--config", &quick(&dl)]);
    r.ok();
    assert_eq!(r.of("file_done")[0]["backend"], "xet", "{}", r.stdout);
    dl.assert_landed(TINY, &["xet-a.bin"]);
    // Truncated bodies (the connection cut after 100 kB, every time): whichever backend ends up
    // delivering it (lfs resumes ranges, xet reconstructs), what lands is verified.
    let dl = Dl::new();
    let fault = FaultAction::CutAfter { bytes: 100_000 };
    dl.sim
        .faults()
        .add(Fault::always(Origin::Cdn, &xet.sha256, fault));
    dl.run(&[TINY, "xet-a.bin", "--json", "--config", &quick(&dl)])
        .ok();
    dl.assert_landed(TINY, &["xet-a.bin"]);
    // A truncated LFS file that every backend gets from the same CDN (lfs, and xet for a file not
    // stored in Xet): exit 5 or 1, never lands.
    let lfs = dl.file(TINY, "lfs.bin");
    let dl = Dl::new();
    let fault = FaultAction::WrongContentLength { delta: -1000 };
    dl.sim
        .faults()
        .add(Fault::always(Origin::Cdn, &lfs.sha256, fault));
    let r = dl.run(&[TINY, "lfs.bin", "--config", &quick(&dl)]);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    // Both backends were tried (their failures are grouped when the messages agree, listed
    // one by one when they differ, as under load, where one of them may stall instead).
    let tried =
        |b: &str| r.stderr.contains(&format!("{b} (")) || r.stderr.contains(&format!("{b}, "));
    assert!(
        r.stderr.contains("lfs.bin") && tried("lfs") && tried("xet"),
        "{}",
        r.stderr
    );
    assert!(
        !dl.repo_dir("models--acme--tiny")
            .join("blobs")
            .join(&lfs.sha256)
            .exists()
    );
}

#[test]
fn when_every_backend_corrupts_the_error_names_each_check() {
    // Every backend corrupts: exit 5, each failure named, nothing in blobs/ or snapshots/.
    let dl = xet_a_broken_on_the_cdn(FaultAction::FlipByte { offset: Some(1000) });
    dl.sim.faults().add(Fault::always(
        Origin::Cas,
        "",
        FaultAction::FlipByte { offset: None },
    ));
    let r = dl.run(&[TINY, "xet-a.bin"]);
    r.code_is(5);
    assert!(
        r.stderr.contains("lfs (integrity)") && r.stderr.contains("xet ("),
        "{}",
        r.stderr
    );
    assert_contains(&r.stderr, "sha256 mismatch");
    dl.assert_never_landed(TINY, "xet-a.bin");
}

#[test]
fn a_stalled_backend_is_cancelled_and_another_completes() {
    let dl = xet_a_broken_on_the_cdn(FaultAction::Stall {
        secs: 120.0,
        after_bytes: Some(64 * 1024),
    });
    let r = dl.run(&[TINY, "xet-a.bin", "--stall-timeout", "2", "--json"]);
    r.ok();
    let fb = r.fallback_from("lfs");
    let message = fb["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("stalled"), "{fb}");
    assert_eq!(r.of("file_done")[0]["backend"], "xet");
    assert!(r.secs >= 2.0 && r.secs < 30.0, "took {}s", r.secs);
    dl.assert_landed(TINY, &["xet-a.bin"]);
}

/// A hubsim whose CDN answers the first request for acme/tiny's `lfs.bin` with a 429 asking to
/// retry after `secs`; and that file.
fn lfs_rate_limited_once(secs: u64) -> (Dl, hubsim::FileInfo) {
    let dl = Dl::new();
    let lfs = dl.file(TINY, "lfs.bin");
    let rate_limited = FaultAction::RateLimited {
        retry_after_secs: secs,
    };
    dl.sim
        .faults()
        .add(Fault::new(Origin::Cdn, &lfs.sha256, rate_limited));
    (dl, lfs)
}

#[test]
fn rate_limit_retry_after_is_honoured() {
    let (dl, lfs) = lfs_rate_limited_once(2);
    let r = dl.run(&[TINY, "lfs.bin", "--json"]);
    r.ok();
    let c = dl.sim.counters();
    assert!(c.log.iter().any(|l| l.status == 429), "the 429 was served");
    // The wait the backend announced is the server's, and the file stayed on lfs.
    let wait = r.first("backend_retry")["delay_ms"]
        .as_u64()
        .expect("delay");
    assert!(wait >= 2000, "waited {wait} ms, Retry-After was 2 s");
    assert!(r.secs >= 2.0, "waited {}s, Retry-After was 2s", r.secs);
    assert!(r.of("fallback").is_empty(), "{}", r.stdout);
    assert!(r.of("retry").is_empty(), "{}", r.stdout);
    assert_eq!(r.of("file_done")[0]["backend"], "lfs");
    assert_eq!(r.of("file_done")[0]["sha256"], lfs.sha256.as_str());
}

#[test]
fn backend_retries_are_reported_and_the_download_goes_on() {
    let dl = Dl::new();
    dl.sim
        .faults()
        .add(Fault::new(Origin::Cdn, "/lfs/", FaultAction::Status { code: 503 }).times(2));
    let r = dl.run(&[TINY, "lfs.bin", "--json"]);
    r.ok();
    assert_eq!(dl.sim.faults().fired_total(), 2, "both 503s were served");
    let retries = r.of("backend_retry");
    assert!(!retries.is_empty(), "{}", r.stdout);
    let mut attempts = Vec::new();
    for e in &retries {
        assert_eq!(e["schema"], 1);
        assert_eq!(e["path"], "lfs.bin", "{e}");
        assert_eq!(e["backend"], "lfs", "{e}");
        let attempt = e["attempt"].as_u64().expect("attempt parsed");
        assert!(
            attempt >= 2 && attempt <= e["max_attempts"].as_u64().unwrap(),
            "{e}"
        );
        assert!(e["delay_ms"].is_u64(), "{e}");
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains("503") && message.contains("retrying in"),
            "{e}"
        );
        attempts.push(attempt);
    }
    assert!(
        attempts.contains(&2),
        "the first retry is attempt 2: {attempts:?}"
    );
    // Inside the backend: no host retry, no fallback, the file lands from lfs.
    assert!(r.of("retry").is_empty(), "{}", r.stdout);
    assert!(r.of("fallback").is_empty(), "{}", r.stdout);
    let done = r.of("file_done");
    assert_eq!(done.len(), 1, "{}", r.stdout);
    assert_eq!(done[0]["backend"], "lfs");
    let events = r.events();
    let at = |kind: &str| events.iter().position(|e| e["event"] == kind).unwrap();
    assert!(at("backend_retry") < at("file_done"));
    dl.assert_landed(TINY, &["lfs.bin"]);
}

#[test]
fn an_announced_retry_wait_longer_than_the_stall_timeout_is_not_a_stall() {
    // lfs waits the 3 s Retry-After; the stall timeout is 2 s.
    let (dl, _) = lfs_rate_limited_once(3);
    let r = dl.run(&[TINY, "lfs.bin", "--stall-timeout", "2", "--json"]);
    r.ok();
    assert!(r.secs >= 3.0, "waited {}s, Retry-After was 3s", r.secs);
    assert!(r.of("fallback").is_empty(), "not cancelled: {}", r.stdout);
    let retries = r.of("backend_retry");
    assert!(
        retries.iter().any(|e| e["delay_ms"].as_u64() >= Some(3000)),
        "{}",
        r.stdout
    );
    assert_eq!(r.of("file_done")[0]["backend"], "lfs");
    dl.assert_landed(TINY, &["lfs.bin"]);
}

#[test]
fn a_refused_repo_names_each_cause_once_and_the_hint_once() {
    let dl = Dl::new();
    let r = dl.run(&["acme/nope"]);
    r.code_is(4);
    // lfs and xet fail the same way: one cause naming both; the token hint only on `hint:`.
    let lines: Vec<String> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:") || l.starts_with("hint:"))
        .map(|l| l.replace(dl.sim.hub_url(), "<hub>"))
        .collect();
    assert_eq!(
        lines,
        [
            format!(
                "error: access to model acme/nope@main was refused (lfs, xet: GET \
                 <hub>/api/models/acme/nope/revision/main: 401 Unauthorized [RepoNotFound]: \
                 {})",
                hubsim::REPO_NOT_FOUND
            ),
            "hint: private, gated or missing repository? set HF_TOKEN or pass --token".to_owned(),
        ],
        "{}",
        r.stderr
    );
    let r = dl.run(&["acme/nope", "--json"]);
    r.code_is(4);
    let error = &r.of("error")[0];
    assert_eq!(error["kind"], "auth");
    assert!(
        !error["message"].as_str().unwrap().contains("HF_TOKEN"),
        "{error}"
    );
}

#[test]
fn a_repo_asked_as_the_wrong_type_names_the_type_it_has() {
    let dl = Dl::new();
    // acme/space is a space: asked as a model, the error says so and how to ask.
    let r = dl.run(&["acme/space"]);
    assert_ne!(r.code, Some(0));
    let error = r.error_line().unwrap_or_default().to_owned();
    assert_contains(&error, "acme/space exists as a space (--repo-type space)");
    // The token hint stays on its own line.
    assert_contains(&r.stderr, "hint: private, gated or missing repository?");
    // A name that exists nowhere gets no such note.
    let r = dl.run(&["acme/nope"]);
    assert!(!r.stderr.contains("exists as"), "{}", r.stderr);
}

#[test]
fn private_and_gated_repos_without_token_are_auth_errors_with_a_hint() {
    let dl = Dl::new();
    let r = dl.run(&["acme/private"]);
    r.code_is(4);
    assert!(
        r.stderr.contains("hint:") && r.stderr.contains("token"),
        "{}",
        r.stderr
    );
    let r = dl.run(&["acme/private", "--json"]);
    r.code_is(4);
    let done = r.of("done");
    assert_eq!(done[0]["exit_code"], 4);
    assert_eq!(r.of("error")[0]["kind"], "auth");
    // A gated repo resolves without a token, but its files are refused: exit 4 and the hint too.
    let r = dl.run(&["acme/gated"]);
    r.code_is(4);
    assert_contains(&r.stderr, "hint:");
    let token = dl.sim.token().to_owned();
    dl.run_env(&["acme/gated"], &[("HF_TOKEN", &token)]).ok();
    dl.run_env(&["acme/private"], &[("HF_TOKEN", &token)]).ok();
}

#[test]
fn token_never_appears_in_output_even_at_trace_level() {
    let dl = Dl::new();
    let token = dl.sim.token().to_owned();
    let r = dl.run_env(
        &["acme/private", "--json", "-vvv"],
        &[("HF_TOKEN", &token), ("RUST_LOG", "trace")],
    );
    r.ok();
    assert!(r.stderr.len() > 1000, "trace logging is on");
    assert!(
        !r.stdout.contains(&token) && !r.stderr.contains(&token),
        "token leaked"
    );
    // A failing run with a wrong token does not print it either.
    let bad = "hf_wrong_token_value_12345";
    let r = dl.run_env(
        &["acme/private", "-vvv"],
        &[("HF_TOKEN", bad), ("RUST_LOG", "trace")],
    );
    assert_ne!(r.code, Some(0));
    assert!(
        !r.stdout.contains(bad) && !r.stderr.contains(bad),
        "token leaked:\n{}",
        r.stderr
    );
    assert!(
        !dl.sim.counters().auth_seen.cdn,
        "the token never went to the CDN"
    );
}

#[test]
fn path_traversal_entries_are_refused_and_nothing_lands_outside() {
    let dl = Dl::new();
    let r = dl.run(&["evil/traversal"]);
    assert_ne!(r.code, Some(0), "a refused entry is a failed file");
    assert_contains(&r.stderr, "refusing repository entry");
    // Refused by name: the rest of the download goes on.
    let head = dl.head("evil/traversal");
    assert!(
        dl.repo_dir("models--evil--traversal")
            .join("snapshots")
            .join(&head)
            .join("ok.txt")
            .is_file(),
        "{}",
        r.stderr
    );
    // Deep enough that `../../evil` from the local dir would still land inside the
    // environment the walk below covers.
    let dir = dl.env.path("a/b/c/ld");
    let r = dl.run(&["evil/traversal", "--local-dir", dir.to_str().unwrap()]);
    assert_ne!(r.code, Some(0));
    // Nothing named like the hostile entries anywhere in the environment or at the root.
    let mut found = Vec::new();
    let mut stack = vec![dl.env.path("")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if ["evil", "x", "path"].contains(&name.as_str()) {
                found.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(found.is_empty(), "{found:?}");
    assert!(!Path::new("/abs/path").exists());
    // The safe file of the same repo can still be fetched alone.
    dl.run(&["evil/traversal", "ok.txt"]).ok();
}

#[test]
fn offline_hit_makes_no_request_and_miss_names_the_cache() {
    let dl = Dl::new();
    let head = dl.head(TINY);
    dl.run(&[TINY]).ok();
    dl.sim.reset_counters();
    let r = dl.run_env(&[TINY], &[("HF_HUB_OFFLINE", "1")]);
    r.ok();
    let snapshot = dl
        .repo_dir("models--acme--tiny")
        .join("snapshots")
        .join(&head);
    assert_eq!(r.last_line(), snapshot.display().to_string());
    let r = dl.run(&[TINY, "config.json", "--offline", "--json"]);
    r.ok();
    assert_eq!(r.of("file_done")[0]["backend"], "cache");
    let c = dl.sim.counters();
    assert_eq!(
        c.total_requests.hub + c.total_requests.cdn + c.total_requests.cas,
        0,
        "zero network calls"
    );

    let r = dl.run(&[TINY, "--offline", "--revision", "v1.0"]);
    r.code_is(6);
    assert_contains(&r.stderr, &dl.cache().display().to_string());
    let r = dl.run(&["acme/private", "--offline"]);
    r.code_is(6);
    let r = dl.run(&[TINY, "nope.txt", "--offline"]);
    r.code_is(6);
    assert_eq!(dl.sim.counters().total_requests.hub, 0);
}

#[test]
fn dry_run_plans_and_fetches_nothing() {
    let dl = Dl::new();
    let r = dl.run(&[TINY, "--dry-run", "--json"]);
    r.ok();
    let plan = &r.of("plan")[0];
    assert_eq!(plan["dry_run"], true);
    assert_eq!(
        plan["files"].as_array().unwrap().len(),
        dl.sim.info().repo(TINY).unwrap().files.len()
    );
    assert_eq!(plan["backends"][0], "lfs");
    assert_eq!(plan["remaining_bytes"], plan["total_bytes"]);
    for f in plan["files"].as_array().unwrap() {
        assert_eq!(f["backend"], "lfs", "the first backend per file: {f}");
        assert_eq!(f["status"], "missing");
    }
    let r = dl.run(&[TINY, "--dry-run"]);
    r.ok();
    assert!(
        r.stdout.contains("lfs.bin") && r.stdout.contains("to fetch"),
        "{}",
        r.stdout
    );
    let c = dl.sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas), 0);
    assert!(!dl.repo_dir("models--acme--tiny").join("blobs").exists());
    // Every --json run ends with `done`, even a usage error before anything starts.
    let r = dl.run(&["not/a/repo/id", "--json"]);
    r.code_is(2);
    let events = r.events();
    assert_eq!(events.last().unwrap()["event"], "done", "{}", r.stdout);
    assert_eq!(events.last().unwrap()["exit_code"], 2);
    assert_eq!(r.of("error")[0]["kind"], "usage");
}

#[test]
fn a_call_that_ignores_cancellation_is_abandoned_not_joined() {
    // The test plugin `faulty` sleeps 60 s in fetch without looking at the cancel token; it
    // resolves nothing, so lfs resolves against hubsim and takes the file over.
    let dl = Dl::new();
    dl.env
        .install_plugin(&hubget_tests::test_plugin("faulty"), "faulty");
    let r = dl.run_config(
        "[backends]\norder = [\"faulty\", \"lfs\"]\n\n[plugins.faulty]\n\
         features = [\"non-xet-files\"]\nsleep_ms = 60000\nignore_cancel = true\n",
        &[TINY, "config.json", "--stall-timeout", "1", "--json"],
    );
    r.ok();
    let fb = r.fallback_from("faulty");
    assert_eq!(fb["to"], "lfs");
    let message = fb["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("ignored cancellation"), "{fb}");
    assert_eq!(r.of("file_done")[0]["backend"], "lfs");
    // Stall (1 s) + grace (3 s), not the plugin's 60 s sleep.
    assert!(r.secs >= 1.0 && r.secs < 20.0, "took {}s", r.secs);
    dl.assert_landed(TINY, &["config.json"]);
}

#[test]
fn spaces_land_in_their_own_cache_folder() {
    let dl = Dl::new();
    let info = dl.sim.info().repo("acme/space").unwrap().clone();
    let r = dl.run(&["acme/space", "--repo-type", "space"]);
    r.ok();
    let snapshot = dl
        .repo_dir("spaces--acme--space")
        .join("snapshots")
        .join(&info.head);
    assert_eq!(r.last_line(), snapshot.display().to_string());
    for f in &info.files {
        assert_eq!(sha256_file(&snapshot.join(&f.path)), f.sha256, "{}", f.path);
    }
    assert!(!dl.repo_dir("models--acme--space").exists());
    // The same id as a model does not exist; like the Hub, hubsim answers 401 RepoNotFound
    // (missing and private look the same without a token): exit 4 with the token hint.
    dl.run(&["acme/space"]).code_is(4);
}

/// The rate a `file_done` event shows (file bytes over seconds to verified).
#[test]
fn limit_rate_caps_the_whole_run_for_lfs_and_says_which_backends_ignore_it() {
    let dl = Dl::new();
    // 8 MiB over 8 connections, capped at 2 MiB/s for the run: about 4 s, not 8 connections' worth.
    let r = dl.run(&[BIG_LFS, &["--limit-rate", "2M", "--json"]].concat());
    r.ok();
    assert_rate_capped(done_rate(&r.first("file_done")), 2.0 * 1024.0 * 1024.0);
    assert!(
        r.of("warning").is_empty(),
        "lfs honours the cap: {}",
        r.stdout
    );

    // The same cap from the environment and from the config file; a bad value is a usage error.
    let r = dl.run_env(
        &[
            "acme/resume",
            "big.bin",
            "--backend",
            "lfs",
            "--no-fallback",
            "--force-download",
            "--json",
        ],
        &[("HUBGET_LIMIT_RATE", "4M")],
    );
    r.ok();
    assert_rate_capped(done_rate(&r.first("file_done")), 4.0 * 1024.0 * 1024.0);
    let r = dl.run_config(
        "[download]\nlimit_rate = \"3M\"\n",
        &[
            "acme/resume",
            "big.bin",
            "--backend",
            "lfs",
            "--no-fallback",
            "--force-download",
            "--json",
        ],
    );
    r.ok();
    assert_rate_capped(done_rate(&r.first("file_done")), 3.0 * 1024.0 * 1024.0);
    let r = dl.run(&["acme/resume", "--limit-rate", "fast"]);
    r.code_is(2);
    assert_contains(&r.stderr, "limit_rate");

    // A backend that does not say it honours the cap (a test plugin here) is named in a warning.
    dl.env
        .install_plugin(&hubget_tests::test_plugin("faulty"), "faulty");
    let r = dl.run_config(
        "[backends]\norder = [\"lfs\", \"faulty\"]\n\n[plugins.faulty]\nfeatures = [\"non-xet-files\"]\n",
        &[TINY, "config.json", "--limit-rate", "50M", "--json"],
    );
    r.ok();
    let w = r.of("warning");
    assert!(
        w.iter().any(|w| {
            let m = w["message"].as_str().unwrap();
            m.contains("not honoured by backend") && m.contains("faulty") && !m.contains("lfs")
        }),
        "{}",
        r.stdout
    );
}

#[test]
fn an_unreachable_hub_is_resolved_once_per_endpoint_and_fails_within_seconds() {
    let dl = Dl::new();
    // A Hub that accepts connections and drops them at once, counting them: every backend
    // resolving through it fails the same way, and the count says who asked.
    let refusing = RefusingServer::start();
    let run = |args: &[&str]| {
        let before = refusing.connections();
        let started = Instant::now();
        let r = dl.run(&[&[TINY, "--endpoint", refusing.url.as_str()][..], args].concat());
        assert_ne!(r.code, Some(0));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a clear error, not a hang"
        );
        (r, refusing.connections() - before)
    };
    // lfs alone: its own attempts.
    let (_, alone) = run(&["--backend", "lfs", "--no-fallback"]);
    assert!(alone >= 1);
    // The default order (lfs, then xet through the same Hub): xet is not asked again.
    let (r, both) = run(&[]);
    assert_eq!(
        both, alone,
        "the Hub was asked by one backend only: {}",
        r.stderr
    );
    let err = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        err.contains("backends `lfs` and `xet`"),
        "one cause for both backends of that endpoint: {err}"
    );
    assert_contains(&r.stderr, "hint: check the network");
    // A name that does not resolve: the same single cause (no timing: resolvers differ).
    let r = dl.run(&[TINY, "--endpoint", "http://no-such-host.invalid"]);
    assert_ne!(r.code, Some(0));
    let err = r
        .stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        err.contains("backends `lfs` and `xet`") && err.contains("cannot connect"),
        "{err}"
    );
}

/// A TCP server on 127.0.0.1 that accepts each connection and closes it at once, counting.
struct RefusingServer {
    url: String,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl RefusingServer {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { url, count }
    }

    fn connections(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_file_both_hub_backends_fail_on_comes_from_the_third_backend_of_the_default_order() {
    let dl = Dl::new();
    // A team's cache holding acme/tiny's lfs.bin: the directory mirror of the third backend.
    let team = dl.env.path("team-cache");
    dl.run(&[TINY, "lfs.bin", "--cache-dir", team.to_str().unwrap()])
        .ok();
    let lfs = dl.file(TINY, "lfs.bin");
    // The CDN now fails that file for good: lfs fails, and so does xet (an LFS file goes
    // through the same route).
    dl.sim.faults().add(Fault::always(
        Origin::Cdn,
        &lfs.sha256,
        FaultAction::Status { code: 404 },
    ));
    let config = dl.env.path("mirror-dir.toml");
    std::fs::write(
        &config,
        format!("[plugins.mirror]\ndirs = [{:?}]\n", team.to_str().unwrap()),
    )
    .unwrap();
    let r = dl.run(&[
        TINY,
        "lfs.bin",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    r.ok();
    let hops: Vec<(String, String)> = r
        .of("fallback")
        .iter()
        .map(|f| {
            (
                f["from"].as_str().unwrap().to_owned(),
                f["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        hops,
        [
            ("lfs".to_owned(), "xet".to_owned()),
            ("xet".to_owned(), "mirror".to_owned())
        ],
        "{}",
        r.stdout
    );
    let done = r.first("file_done");
    assert_eq!(done["backend"], "mirror");
    assert_eq!(done["sha256"], lfs.sha256.as_str());
}
