//! One copy of every Xet file in the cache: huggingface_hub 2.4's shared blob store
//! (`<cache>/blobs/<xx>/<xet hash>`), written and read by hubget and by the pinned Python
//! client in both directions, with `hf cache verify` and `hf cache rm` on the result.
//!
//! The fixture: `acme/tiny`, and `acme/twin`, which holds `xet-a.bin` of `acme/tiny` under
//! another path (same bytes, same Xet hash) and a file of its own.

use std::path::{Path, PathBuf};

use hubsim::{HubSim, Origin};
use serde_json::Value;

use hubget_tests::assert_contains;
use hubget_tests::hub::{
    Dl, SHARED_PATH, TINY, TWIN, hashes, hf_ok, python, sha256_file, store_entry, twin_fixtures,
};

fn dl() -> Dl {
    Dl::with(HubSim::builder().fixtures(twin_fixtures()))
}

fn repo_blob(dl: &Dl, folder: &str, sha256: &str) -> PathBuf {
    dl.repo_dir(folder).join("blobs").join(sha256)
}

/// The size of the file acme/tiny and acme/twin share, as hubsim describes it.
fn shared_size(dl: &Dl) -> u64 {
    dl.file(TINY, "xet-a.bin").size
}

/// CDN + CAS bytes since the last reset.
fn wire_bytes(dl: &Dl) -> u64 {
    let c = dl.sim.counters();
    c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas)
}

/// The store entry `blob` links to (it must be a symlink into the store).
#[track_caller]
fn assert_links_to_store(blob: &Path, entry: &Path) {
    let meta = std::fs::symlink_metadata(blob).expect("repo blob");
    assert!(
        meta.file_type().is_symlink(),
        "{} is a symlink",
        blob.display()
    );
    let target = std::fs::read_link(blob).unwrap();
    assert!(target.is_relative(), "{target:?} is relative");
    assert_eq!(
        blob.parent().unwrap().join(&target).canonicalize().unwrap(),
        entry.canonicalize().unwrap()
    );
}

fn refs(entry: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(entry.with_extension("refs"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

fn reused_done(events: &[Value], path: &str) -> Value {
    events
        .iter()
        .find(|e| e["event"] == "file_done" && e["path"] == path)
        .unwrap_or_else(|| panic!("no file_done for {path}: {events:?}"))
        .clone()
}

#[test]
fn hubget_publishes_xet_files_and_a_second_repo_moves_zero_bytes_for_the_identical_one() {
    let dl = dl();
    dl.run(&[TINY]).ok();
    let (xet_hash, sha) = hashes(&dl, TINY, "xet-a.bin");
    let entry = store_entry(&dl, &xet_hash);
    assert_eq!(
        std::fs::read_to_string(dl.cache().join("blobs/.huggingface-shared-blobs")).unwrap(),
        "1\n"
    );
    assert_links_to_store(&repo_blob(&dl, "models--acme--tiny", &sha), &entry);
    // Regular (non-Xet) files stay per repo.
    let tiny = dl.sim.info().repo(TINY).unwrap().clone();
    let config = tiny.file("config.json").unwrap();
    assert!(
        std::fs::symlink_metadata(repo_blob(&dl, "models--acme--tiny", &config.git_oid))
            .unwrap()
            .is_file()
    );

    // The plan says the twin's copy comes from the store; the run moves only the rest.
    let dry = dl.run(&[TWIN, "--dry-run", "--json"]);
    dry.ok();
    let plan = &dry.of("plan")[0];
    let planned = plan["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == SHARED_PATH)
        .unwrap();
    assert_eq!(planned["status"], "shared_store");
    assert_eq!(planned["remaining"], 0);
    assert_eq!(plan["shared_store_bytes"], shared_size(&dl));

    dl.sim.reset_counters();
    let r = dl.run(&[TWIN, "--json"]);
    r.ok();
    let events = r.events();
    let done = reused_done(&events, SHARED_PATH);
    assert_eq!(done["bytes_transferred"], 0);
    assert_eq!(done["backend"], "shared-store");
    assert_eq!(PathBuf::from(done["reused_from"].as_str().unwrap()), entry);
    let end = r.of("done");
    assert_eq!(end[0]["files_reused"], 1);
    assert_eq!(end[0]["bytes_reused"], shared_size(&dl));
    let wire = wire_bytes(&dl);
    assert!(
        wire < shared_size(&dl),
        "only the twin's own files moved ({wire} bytes on the wire)"
    );
    assert_links_to_store(&repo_blob(&dl, "models--acme--twin", &sha), &entry);
    assert_eq!(
        refs(&entry),
        vec![
            format!("models--acme--tiny/blobs/{sha}"),
            format!("models--acme--twin/blobs/{sha}"),
        ]
    );
    let local = dl.snapshot_file(TWIN, SHARED_PATH);
    assert_eq!(sha256_file(&local), sha);

    // The human summary line says what the store saved.
    let dl2 = dl;
    let fresh = dl2.env.path("other-cache");
    std::fs::create_dir_all(&fresh).unwrap();
    let cache = fresh.display().to_string();
    dl2.run(&[TINY, "xet-a.bin", "--cache-dir", &cache]).ok();
    let r = dl2.run(&[TWIN, "--cache-dir", &cache]);
    r.ok();
    assert_contains(&r.stderr, "1 file reused, 3.0 MiB not downloaded");
}

#[test]
fn hubget_reuses_pythons_entries_and_python_reuses_hubgets() {
    let dl = dl();
    // Python first: it publishes tiny's Xet files. One worker: huggingface_hub 2.4 creates the
    // store's marker without a lock, and two of its threads publishing the first files at once
    // can each remove the other's temporary marker (one file then stays unshared).
    python(
        &dl,
        r#"
import json
from huggingface_hub import snapshot_download
print(json.dumps({"root": snapshot_download("acme/tiny", max_workers=1)}))
"#,
        &[],
    );
    let (xet_hash, sha) = hashes(&dl, TINY, "xet-a.bin");
    let entry = store_entry(&dl, &xet_hash);
    assert!(entry.is_file(), "Python published {}", entry.display());
    dl.sim.reset_counters();
    let r = dl.run(&[TWIN, "--json"]);
    r.ok();
    assert_eq!(
        reused_done(&r.events(), SHARED_PATH)["bytes_transferred"],
        0
    );
    assert_links_to_store(&repo_blob(&dl, "models--acme--twin", &sha), &entry);
    assert!(wire_bytes(&dl) < shared_size(&dl));

    // And the other way: hubget first (a fresh cache), Python takes the twin from the store.
    let dl = self::dl();
    dl.run(&[TINY]).ok();
    dl.sim.reset_counters();
    python(
        &dl,
        r#"
import json
from huggingface_hub import snapshot_download
print(json.dumps({"root": snapshot_download("acme/twin")}))
"#,
        &[],
    );
    let entry = store_entry(&dl, &xet_hash);
    assert_links_to_store(&repo_blob(&dl, "models--acme--twin", &sha), &entry);
    assert!(
        wire_bytes(&dl) < shared_size(&dl),
        "Python did not download the identical file again"
    );

    // `hf cache verify` passes on both repos.
    for repo in [TINY, TWIN] {
        hf_ok(&dl, &["cache", "verify", repo]);
    }
    // `hf cache rm` of one repo keeps the other's files intact.
    hf_ok(&dl, &["cache", "rm", &format!("model/{TINY}"), "--yes"]);
    assert!(!dl.repo_dir("models--acme--tiny").exists());
    let twin_file = dl.snapshot_file(TWIN, SHARED_PATH);
    assert_eq!(sha256_file(&twin_file), sha);
    hf_ok(&dl, &["cache", "verify", TWIN]);
    // hubget finds the twin complete: nothing moves.
    dl.sim.reset_counters();
    dl.run(&[TWIN]).ok();
    assert_eq!(wire_bytes(&dl), 0);
}

#[test]
fn a_bad_entry_is_never_linked_and_the_downloaded_file_takes_its_place() {
    let dl = dl();
    dl.run(&[TINY]).ok();
    let (xet_hash, sha) = hashes(&dl, TINY, "xet-a.bin");
    let entry = store_entry(&dl, &xet_hash);
    // Another tool's bad entry: right size, wrong content.
    let mut data = std::fs::read(&entry).unwrap();
    data[1000] ^= 0xff;
    let mut perms = std::fs::metadata(&entry).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&entry, perms).unwrap();
    std::fs::write(&entry, &data).unwrap();

    dl.sim.reset_counters();
    let r = dl.run(&[TWIN, "--json"]);
    r.ok();
    let warnings = r.of("warning");
    assert!(
        warnings.iter().any(|w| w["message"]
            .as_str()
            .unwrap()
            .contains(&entry.display().to_string())),
        "the warning names the bad entry: {warnings:?}"
    );
    let done = reused_done(&r.events(), SHARED_PATH);
    assert!(done["reused_from"].is_null());
    assert!(done["bytes_transferred"].as_u64().unwrap() > 0);
    let local = dl.snapshot_file(TWIN, SHARED_PATH);
    assert_eq!(sha256_file(&local), sha);
    // The download hashes to the entry's name and the entry's content does not: the entry is
    // replaced (as huggingface_hub's `replace_existing` does), so the real content is not kept
    // out of the store by a bad copy, and the repo links to it.
    assert_eq!(sha256_file(&entry), sha, "the bad entry was replaced");
    assert_links_to_store(&repo_blob(&dl, "models--acme--twin", &sha), &entry);
    assert_eq!(sha256_file(&dl.snapshot_file(TINY, "xet-a.bin")), sha);
}

#[test]
fn disabled_store_keeps_per_repo_blobs_and_local_dirs_copy_from_the_store() {
    let dl = dl();
    dl.run_env(&[TINY], &[("HF_HUB_DISABLE_SHARED_BLOBS", "1")])
        .ok();
    let (xet_hash, sha) = hashes(&dl, TINY, "xet-a.bin");
    assert!(!dl.cache().join("blobs").exists(), "no store when disabled");
    assert!(
        std::fs::symlink_metadata(repo_blob(&dl, "models--acme--tiny", &sha))
            .unwrap()
            .is_file()
    );

    // With the store on, a --local-dir download copies from it (no link into the cache).
    let dl = self::dl();
    dl.run(&[TINY, "xet-a.bin"]).ok();
    let out = dl.env.path("out");
    dl.sim.reset_counters();
    let r = dl.run(&[
        TWIN,
        SHARED_PATH,
        "--local-dir",
        &out.display().to_string(),
        "--json",
    ]);
    r.ok();
    assert_eq!(
        reused_done(&r.events(), SHARED_PATH)["bytes_transferred"],
        0
    );
    assert_eq!(wire_bytes(&dl), 0);
    let file = out.join(SHARED_PATH);
    assert!(std::fs::symlink_metadata(&file).unwrap().is_file());
    assert_eq!(sha256_file(&file), sha);
    // A local dir's files are the user's, writable like the LFS and regular ones (the store's
    // entry is read-only; its mode is not copied).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_ne!(mode & 0o200, 0, "{mode:o}");
    assert!(store_entry(&dl, &xet_hash).is_file());
}

#[test]
fn removing_a_repo_by_hand_keeps_the_other_repos_files() {
    let dl = dl();
    dl.run(&[TINY]).ok();
    dl.run(&[TWIN]).ok();
    let (_, sha) = hashes(&dl, TINY, "xet-a.bin");
    // As docs/download.md describes: delete the repo folder.
    std::fs::remove_dir_all(dl.repo_dir("models--acme--tiny")).unwrap();
    let twin_file = dl.snapshot_file(TWIN, SHARED_PATH);
    assert_eq!(sha256_file(&twin_file), sha);
    hf_ok(&dl, &["cache", "verify", TWIN]);
    // And tiny comes back from the store without a download of that file.
    dl.sim.reset_counters();
    let r = dl.run(&[TINY, "xet-a.bin", "--json"]);
    r.ok();
    assert_eq!(
        reused_done(&r.events(), "xet-a.bin")["bytes_transferred"],
        0
    );
    assert_eq!(wire_bytes(&dl), 0);
}

#[test]
fn a_link_planted_at_a_local_dir_partial_is_never_written_through() {
    let dl = dl();
    dl.run(&[TINY, "xet-a.bin"]).ok();
    let (_, sha) = hashes(&dl, TINY, "xet-a.bin");
    let out = dl.env.path("out");
    let victim = dl.env.home().join(".profile");
    std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
    std::fs::write(&victim, "the victim's own file").unwrap();
    // A co-user plants a link where the copy from the store goes.
    let partial = out
        .join(".cache/huggingface/download")
        .join(format!("{SHARED_PATH}.{sha}.hubget-partial"));
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    let _ = dl.run(&[TWIN, SHARED_PATH, "--local-dir", &out.display().to_string()]);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "the victim's own file"
    );
    let landed = out.join(SHARED_PATH);
    if let Ok(meta) = std::fs::symlink_metadata(&landed) {
        assert!(meta.is_file(), "the landed file is never the planted link");
        assert_eq!(sha256_file(&landed), sha);
    }
}
