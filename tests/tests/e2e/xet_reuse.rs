//! Xet chunk reuse end to end (`--backend xet --no-fallback`, hubsim's real CAS): a file takes
//! every chunk it shares with files already on disk from those files, and only the rest crosses
//! the network. Across revisions (after xet or after lfs), within one snapshot, across repos;
//! a lying index is caught by the host's hash check, retried without reuse, and dropped; a stale
//! one (its blob gone) is passed over.

use std::path::PathBuf;

use hubsim::{FixtureSpec, HubSim, Origin};
use serde_json::Value;

use hubget_tests::assert_contains;
use hubget_tests::hub::{Dl, one_commit};

const MIB: u64 = 1024 * 1024;
const EVOLVING: &str = "acme/evolving";
const PAIR: &str = "acme/pair";
const BASE: &str = "acme/base";
const DERIVED: &str = "acme/derived";

fn specs() -> FixtureSpec {
    let mut spec = FixtureSpec::default_set(1);
    // acme/evolving: model.bin (Xet, 24 MiB) at v1, and with 3 MiB changed at main.
    spec.repos.retain(|r| r.id == EVOLVING);
    let (twenty, eight, five, two, one) = (20 * MIB, 8 * MIB, 5 * MIB, 2 * MIB, MIB);
    let pair = format!(
        r#"
  {{ path = "a.bin", storage = "xet", content = {{ kind = "random", size = {twenty}, seed = 6001 }} }},
  {{ path = "b.bin", storage = "xet", content = {{ kind = "random", size = {twenty}, seed = 6001, patches = [{{ offset = {five}, len = {one}, seed = 6002 }}] }} }},"#
    );
    let base = format!(
        r#"
  {{ path = "w.bin", storage = "xet", content = {{ kind = "random", size = {eight}, seed = 6100 }} }},"#
    );
    let derived = format!(
        r#"
  {{ path = "w.bin", storage = "xet", content = {{ kind = "random", size = {eight}, seed = 6100, patches = [{{ offset = {two}, len = {one}, seed = 6101 }}] }} }},"#
    );
    let mut extra = one_commit(
        PAIR,
        "model",
        "two files that differ in 1 MiB of 20 MiB",
        &pair,
    );
    extra
        .repos
        .extend(one_commit(BASE, "model", "base weights", &base).repos);
    let fine_tune = "a fine-tune that changed 1 MiB";
    extra
        .repos
        .extend(one_commit(DERIVED, "model", fine_tune, &derived).repos);
    spec.repos.extend(extra.repos);
    spec
}

/// A hubsim serving only `repos` of [`specs`]: each test uploads through hf-xet just the
/// repositories it uses.
fn dl(repos: &[&str]) -> Dl {
    let mut spec = specs();
    spec.repos.retain(|r| repos.contains(&r.id.as_str()));
    assert_eq!(spec.repos.len(), repos.len(), "unknown repo in {repos:?}");
    Dl::with(HubSim::builder().fixtures(spec))
}

/// Bytes the CAS sent since the last reset (xorb ranges and reconstruction answers).
fn cas_bytes(dl: &Dl) -> u64 {
    dl.sim.counters().bytes_from(Origin::Cas)
}

fn xet(dl: &Dl, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--backend", "xet", "--no-fallback", "--json"];
    all.extend_from_slice(args);
    let r = dl.run(&all);
    r.ok();
    r.events()
}

fn index_file(dl: &Dl, xet_hash: &str) -> PathBuf {
    dl.cache()
        .join(".hubget/xet/index")
        .join(&xet_hash[..2])
        .join(format!("{xet_hash}.json"))
}

fn xet_hash(dl: &Dl, repo: &str, rev: &str, path: &str) -> String {
    let info = dl.sim.info().repo(repo).unwrap().clone();
    let sha = match rev {
        "main" => info.head.clone(),
        tag => info.tags[tag].clone(),
    };
    let commit = info
        .commits
        .iter()
        .find(|c| c.sha == sha)
        .cloned()
        .unwrap_or_else(|| panic!("revision {rev}"));
    commit
        .files
        .iter()
        .find(|f| f.path == path)
        .and_then(|f| f.xet_hash.clone())
        .expect("a Xet file")
}

#[test]
fn a_revision_update_moves_little_more_than_the_changed_bytes() {
    let dl = dl(&[EVOLVING]);
    xet(&dl, &[EVOLVING, "model.bin", "--revision", "v1"]);
    dl.sim.reset_counters();
    xet(&dl, &[EVOLVING, "model.bin"]);
    let moved = cas_bytes(&dl);
    assert!(
        moved <= 13 * 3 * MIB / 10,
        "3 MiB changed of 24 MiB; the CAS sent {moved} bytes"
    );
}

#[test]
fn the_summary_says_what_chunk_reuse_saved() {
    let dl = dl(&[BASE, DERIVED]);
    xet(&dl, &[BASE]);
    let r = dl.run(&[DERIVED, "--backend", "xet", "--no-fallback"]);
    r.ok();
    assert_contains(
        &r.stderr,
        "taken from chunks already on disk, not downloaded",
    );
}

#[test]
fn a_revision_cached_by_lfs_is_indexed_and_reused_by_xet() {
    let dl = dl(&[EVOLVING]);
    dl.run(&[EVOLVING, "model.bin", "--revision", "v1"]).ok();
    let v1 = xet_hash(&dl, EVOLVING, "v1", "model.bin");
    assert!(!index_file(&dl, &v1).exists(), "lfs writes no chunk index");
    dl.sim.reset_counters();
    xet(&dl, &[EVOLVING, "model.bin"]);
    assert!(
        index_file(&dl, &v1).exists(),
        "rebuilt for the cached revision"
    );
    let moved = cas_bytes(&dl);
    assert!(moved <= 13 * 3 * MIB / 10, "the CAS sent {moved} bytes");
    // Rebuilt with one batch query (as xet-core asks), not one whole-file query per file.
    let c = dl.sim.counters();
    assert_eq!(
        c.requests_to(Origin::Cas, "reconstructions_batch"),
        1,
        "{:?}",
        c.requests
    );
}

#[test]
fn two_near_identical_files_of_one_snapshot_share_their_chunks() {
    let dl = dl(&[PAIR]);
    xet(&dl, &[PAIR]);
    let moved = cas_bytes(&dl);
    assert!(
        moved <= 13 * 21 * MIB / 10,
        "20 MiB + 1 MiB of distinct content; the CAS sent {moved} bytes"
    );
}

#[test]
fn a_file_near_identical_to_another_repos_moves_only_the_difference() {
    let dl = dl(&[BASE, DERIVED]);
    xet(&dl, &[BASE]);
    dl.sim.reset_counters();
    let events = xet(&dl, &[DERIVED]);
    let moved = cas_bytes(&dl);
    assert!(
        moved <= 13 * MIB / 10,
        "1 MiB changed of 8 MiB; the CAS sent {moved} bytes"
    );
    let done = events.iter().find(|e| e["event"] == "file_done").unwrap();
    assert_eq!(done["backend"], "xet");
    assert!(
        done["bytes_local"].as_u64().unwrap() >= 6 * MIB,
        "the shared chunks came from disk: {done}"
    );
    let end = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(end["bytes_local"], done["bytes_local"]);
    assert!(
        done["bytes_transferred"].as_u64().unwrap() < 2 * MIB,
        "{done}"
    );
}

#[test]
fn a_lying_index_is_caught_retried_without_reuse_and_dropped() {
    let dl = dl(&[BASE, DERIVED]);
    xet(&dl, &[BASE]);
    let base = xet_hash(&dl, BASE, "main", "w.bin");
    // Make the base's index lie consistently: swap the first and last chunk lengths of its
    // first term (the sums still add up; the offsets of the chunks between are wrong).
    xet(&dl, &[DERIVED]); // computes and saves the base's chunk lengths
    let path = index_file(&dl, &base);
    let mut entry: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let lens = entry["chunk_lens"][0]
        .as_array_mut()
        .expect("chunk lengths saved");
    let last = lens.len() - 1;
    assert_ne!(lens[0], lens[last], "two different lengths to swap");
    lens.swap(0, last);
    std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();

    // A fresh cache of the derived repo (the base stays cached).
    std::fs::remove_dir_all(dl.repo_dir("models--acme--derived")).unwrap();
    let derived = xet_hash(&dl, DERIVED, "main", "w.bin");
    let _ = std::fs::remove_file(dl.cache().join("blobs").join(&derived[..2]).join(&derived));
    assert!(index_file(&dl, &derived).exists());
    let r = dl.run(&[DERIVED, "--backend", "xet", "--no-fallback", "--json"]);
    r.ok();
    let retries = r.of("retry");
    assert_eq!(
        retries.len(),
        1,
        "one retry after the failed check: {}",
        r.stdout
    );
    assert_eq!(retries[0]["error"]["kind"], "integrity");
    assert!(!path.exists(), "the lying entry is dropped");
    // So is the retried file's own entry (it may be the one that lied), and the retry that
    // succeeded does not save it again: the next run asks the CAS.
    assert!(
        !index_file(&dl, &derived).exists(),
        "the retried file's own entry is not saved again"
    );
    let done = r.of("file_done");
    assert_eq!(done[0]["backend"], "xet");
}

#[test]
fn a_stale_index_whose_blob_is_gone_costs_a_full_fetch_and_no_error() {
    let dl = dl(&[BASE, DERIVED]);
    xet(&dl, &[BASE]);
    let base = xet_hash(&dl, BASE, "main", "w.bin");
    assert!(index_file(&dl, &base).exists());
    // The base leaves the cache (pruned by hand) but its index entry stays.
    std::fs::remove_dir_all(dl.repo_dir("models--acme--base")).unwrap();
    std::fs::remove_file(hubget_tests::hub::store_entry(&dl, &base)).unwrap();
    dl.sim.reset_counters();
    let events = xet(&dl, &[DERIVED]);
    let done = events.iter().find(|e| e["event"] == "file_done").unwrap();
    assert_eq!(done["backend"], "xet");
    assert_eq!(done["bytes_local"].as_u64().unwrap_or(0), 0, "{done}");
    assert!(
        cas_bytes(&dl) >= 8 * MIB,
        "every byte fetched: {}",
        cas_bytes(&dl)
    );
    let head = dl.head(DERIVED);
    hubget_tests::hub::assert_cache_layout(&dl, DERIVED, &head, None);
}
