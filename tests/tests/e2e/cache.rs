//! `hubget cache ls|verify|rm|prune` on caches written by hubget and by the pinned Python
//! client, checked afterwards with `hf cache verify`.

use std::path::Path;
use std::process::Stdio;

use hubsim::{HubSim, Origin};
use serde_json::Value;

use hubget_tests::hub::{Dl, TINY};
use hubget_tests::hub::{SHARED_PATH, TWIN, hashes, hf_ok, store_entry, twin_fixtures};
use hubget_tests::{Run, assert_contains};

fn dl() -> Dl {
    Dl::with(HubSim::builder().fixtures(twin_fixtures()))
}

/// `hubget cache <args>` in the test environment.
fn cache(dl: &Dl, args: &[&str]) -> Run {
    let started = std::time::Instant::now();
    let out = dl
        .env
        .command()
        .arg("cache")
        .args(args)
        .env("HUBGET_PLUGIN_DIR", hubget_tests::bin_dir())
        .env("HF_ENDPOINT", dl.sim.hub_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run hubget cache");
    Run::from(out, started)
}

fn json(r: &Run) -> Value {
    serde_json::from_str(r.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

/// Who filled the cache.
#[derive(Debug, Clone, Copy)]
enum Writer {
    Hubget,
    Python,
}

fn fill(dl: &Dl, writer: Writer, repo: &str) {
    match writer {
        Writer::Hubget => {
            dl.run(&[repo]).ok();
        }
        Writer::Python => {
            hf_ok(dl, &["download", repo]);
        }
    }
}

/// Flips one byte of the file behind `snapshot/<path>` (blobs are read-only).
fn flip(file: &Path) {
    let real = file.canonicalize().unwrap();
    let mut perms = std::fs::metadata(&real).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&real, perms).unwrap();
    let mut data = std::fs::read(&real).unwrap();
    data[1000] ^= 0x01;
    std::fs::write(&real, data).unwrap();
}

#[test]
fn verify_finds_a_flipped_byte_and_repair_fetches_only_that_file() {
    for writer in [Writer::Hubget, Writer::Python] {
        let dl = dl();
        fill(&dl, writer, TINY);
        let clean = cache(&dl, &["verify", TINY, "--json"]);
        clean.code_is(0);
        assert_eq!(json(&clean)["ok"], 6, "{writer:?}: {}", clean.stdout);

        let head = dl.head(TINY);
        let snapshot = dl
            .repo_dir("models--acme--tiny")
            .join("snapshots")
            .join(&head);
        flip(&snapshot.join("lfs.bin"));
        let found = cache(&dl, &["verify", TINY, "--json"]);
        found.code_is(8);
        let doc = json(&found);
        assert_eq!(doc["bad"][0]["path"], "lfs.bin", "{writer:?}: {doc}");
        assert!(doc["bad"][0]["reason"].as_str().unwrap().contains("sha256"));
        // The offline check reads the hash the blob is named after: same verdict.
        let offline = cache(&dl, &["verify", TINY, "--offline", "--json"]);
        offline.code_is(8);
        assert_eq!(json(&offline)["bad"][0]["path"], "lfs.bin");

        dl.sim.reset_counters();
        let repaired = cache(&dl, &["verify", TINY, "--repair"]);
        repaired.code_is(0);
        let size = dl.sim.info().file(TINY, "lfs.bin").size;
        let c = dl.sim.counters();
        let moved = c.bytes_from(Origin::Cdn) + c.bytes_from(Origin::Cas);
        assert_eq!(moved, size, "{writer:?}: only the bad file moved");
        assert_contains(&repaired.stdout, "OK: 6 file(s) verified");
        // And the Python client accepts the result.
        hf_ok(&dl, &["cache", "verify", TINY]);
    }
}

#[test]
fn verify_reports_missing_and_extra_files_and_repairs_the_missing_one() {
    let dl = dl();
    fill(&dl, Writer::Hubget, TINY);
    let snapshot = dl
        .repo_dir("models--acme--tiny")
        .join("snapshots")
        .join(dl.head(TINY));
    std::fs::remove_file(snapshot.join("README.md")).unwrap();
    std::fs::write(snapshot.join("stray.txt"), "not in the repo").unwrap();
    let r = cache(&dl, &["verify", TINY, "--json"]);
    r.code_is(8);
    let doc = json(&r);
    assert_eq!(doc["missing"], serde_json::json!(["README.md"]));
    assert_eq!(doc["extra"], serde_json::json!(["stray.txt"]));
    let text = cache(&dl, &["verify", TINY]);
    assert_contains(&text.stdout, "missing  README.md");
    assert_contains(&text.stderr, "hint:");
    std::fs::remove_file(snapshot.join("stray.txt")).unwrap();
    cache(&dl, &["verify", TINY, "--repair"]).code_is(0);
    assert!(snapshot.join("README.md").is_file());

    // A local dir too.
    let dir = dl.env.path("local");
    dl.run(&[TINY, "--local-dir", dir.to_str().unwrap()]).ok();
    flip(&dir.join("lfs.bin"));
    let r = cache(
        &dl,
        &[
            "verify",
            TINY,
            "--local-dir",
            dir.to_str().unwrap(),
            "--json",
        ],
    );
    r.code_is(8);
    assert_eq!(json(&r)["bad"][0]["path"], "lfs.bin");
    cache(
        &dl,
        &[
            "verify",
            TINY,
            "--local-dir",
            dir.to_str().unwrap(),
            "--repair",
        ],
    )
    .code_is(0);
}

#[test]
fn ls_lists_both_tools_caches_and_counts_a_shared_blob_once() {
    let dl = dl();
    // hubget marks the store first: huggingface_hub 2.4's threads race when they create it.
    fill(&dl, Writer::Hubget, TINY);
    fill(&dl, Writer::Python, TWIN);
    let r = cache(&dl, &["ls", "--json"]);
    r.code_is(0);
    let doc = json(&r);
    let repos = doc["repos"].as_array().unwrap();
    let ids: Vec<&str> = repos.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["model/acme/tiny", "model/acme/twin"]);
    let sum: u64 = repos
        .iter()
        .map(|r| r["size_on_disk"].as_u64().unwrap())
        .sum();
    let shared = dl.sim.info().file(TWIN, SHARED_PATH).size;
    assert_eq!(
        doc["size_on_disk"].as_u64().unwrap(),
        sum - shared,
        "the shared blob counts once in the total"
    );
    assert_eq!(repos[0]["refs"], serde_json::json!(["main"]));
    // Filters, sorting, revisions, text.
    let big = json(&cache(&dl, &["ls", "--json", "-f", "size>8M"]));
    assert_eq!(big["repos"].as_array().unwrap().len(), 1, "{big}");
    let sorted = json(&cache(
        &dl,
        &["ls", "--json", "--sort", "size:asc", "--limit", "1"],
    ));
    assert_eq!(sorted["repos"][0]["id"], "model/acme/twin");
    let revs = json(&cache(
        &dl,
        &["ls", "--revisions", "--json", "-f", "name~twin"],
    ));
    assert_eq!(revs["revisions"][0]["revision"], dl.head(TWIN).as_str());
    let text = cache(&dl, &["ls"]);
    assert_contains(&text.stdout, "model/acme/tiny");
    assert_contains(&text.stdout, "Found 2 repo(s)");
    cache(&dl, &["ls", "-f", "colour=red"]).code_is(2);
}

#[test]
fn rm_keeps_what_another_repo_uses_and_prune_removes_detached_and_stale_data() {
    let dl = dl();
    fill(&dl, Writer::Hubget, TINY);
    fill(&dl, Writer::Python, TWIN);
    let (xet_hash, _) = hashes(&dl, TWIN, SHARED_PATH);
    let entry = store_entry(&dl, &xet_hash);
    assert!(entry.is_file());

    // Without a terminal, deleting needs --yes; --dry-run deletes nothing.
    cache(&dl, &["rm", TINY]).code_is(2);
    let dry = cache(&dl, &["rm", TINY, "--dry-run"]);
    dry.code_is(0);
    assert!(dl.repo_dir("models--acme--tiny").is_dir());
    assert_contains(&dry.stdout, "model/acme/tiny");

    cache(&dl, &["rm", TINY, "--yes"]).code_is(0);
    assert!(!dl.repo_dir("models--acme--tiny").exists());
    assert!(entry.is_file(), "acme/twin still links the shared entry");
    hf_ok(&dl, &["cache", "verify", TWIN]);

    // A detached revision (downloaded by commit: no ref) and a stale partial file.
    fill(&dl, Writer::Hubget, TINY);
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let feature = info.branches["dev/feature"].clone();
    dl.run(&[TINY, "--revision", &feature]).ok();
    let tiny = dl.repo_dir("models--acme--tiny");
    assert!(tiny.join("snapshots").join(&feature).is_dir());
    let stale = tiny.join("blobs").join("0123.incomplete");
    std::fs::write(&stale, b"half").unwrap();
    let dry = cache(&dl, &["prune", "--dry-run"]);
    assert_contains(&dry.stdout, &feature);
    cache(&dl, &["prune", "--yes"]).code_is(0);
    assert!(!tiny.join("snapshots").join(&feature).exists());
    assert!(
        tiny.join("snapshots").join(&info.head).is_dir(),
        "main stays"
    );
    assert!(!stale.exists());
    hf_ok(&dl, &["cache", "verify", TINY]);

    // Once no repo links the entry, removing the last one collects it.
    cache(&dl, &["rm", "model/acme/twin", "hf://acme/tiny", "--yes"]).code_is(0);
    assert!(!entry.exists(), "nothing links it any more");
    let empty = json(&cache(&dl, &["ls", "--json"]));
    assert_eq!(empty["repo_count"], 0);
}
