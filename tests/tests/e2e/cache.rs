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
    // A dry run deletes nothing.
    assert!(tiny.join("snapshots").join(&feature).is_dir(), "dry run");
    assert!(stale.exists(), "dry run");
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

/// A repo folder by hand in `cache`: `refs/main` on commit `c1` (one real blob), and a detached
/// commit `c2` whose snapshot holds one real blob and the `planted` links (name, target).
fn planted_cache(cache: &Path, planted: &[(&str, &Path)]) -> (String, String) {
    use std::os::unix::fs::symlink;
    let (c1, c2) = ("1".repeat(40), "2".repeat(40));
    let repo = cache.join("models--acme--planted");
    for sub in ["blobs", "refs"] {
        std::fs::create_dir_all(repo.join(sub)).unwrap();
    }
    for (commit, blob) in [(&c1, "e1"), (&c2, "e2")] {
        std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
        std::fs::write(repo.join("blobs").join(blob), blob).unwrap();
        let link = repo.join("snapshots").join(commit).join("config.json");
        symlink(format!("../../blobs/{blob}"), link).unwrap();
    }
    for (name, target) in planted {
        symlink(target, repo.join("snapshots").join(&c2).join(name)).unwrap();
    }
    std::fs::write(repo.join("refs/main"), &c1).unwrap();
    (c1, c2)
}

#[test]
fn prune_and_rm_never_delete_what_a_planted_snapshot_link_points_at() {
    for command in [
        &["prune", "--yes"][..],
        &[
            "rm",
            "acme/planted@2222222222222222222222222222222222222222",
            "--yes",
        ],
    ] {
        let env = hubget_tests::TestEnv::new();
        let cache = env.path("cache");
        let victim = env.home().join(".ssh/authorized_keys");
        std::fs::create_dir_all(victim.parent().unwrap()).unwrap();
        std::fs::write(&victim, "ssh-ed25519 AAAA victim").unwrap();
        // The same file named relatively, climbing out of the cache.
        let climbing = Path::new("../../../../home/.ssh/authorized_keys");
        let (c1, c2) = planted_cache(&cache, &[("keys", &victim), ("keys2", climbing)]);
        let repo = cache.join("models--acme--planted");
        assert!(repo.join("snapshots").join(&c2).join("keys2").exists());

        let dry = env.hubget_with_env(
            [&["cache"][..], command, &["--dry-run", "--cache-dir"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .chain([cache.display().to_string()]),
            &[],
        );
        dry.code_is(0);

        let run = env.hubget_with_env(
            [&["cache"][..], command, &["--cache-dir"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .chain([cache.display().to_string()]),
            &[],
        );
        run.code_is(0);
        assert_eq!(
            std::fs::read_to_string(&victim).unwrap(),
            "ssh-ed25519 AAAA victim",
            "{command:?}: {}",
            run.stderr
        );
        assert!(!repo.join("snapshots").join(&c2).exists(), "{command:?}");
        assert!(!repo.join("blobs/e2").exists(), "c2's own blob goes");
        assert!(repo.join("blobs/e1").is_file(), "main's blob stays");
        assert!(repo.join("snapshots").join(&c1).is_dir());
        assert_contains(&run.stderr, "links outside the repository's blobs");
        // The confirmation lists the files that go, not only the revision.
        assert_contains(&dry.stdout, &format!("{c2}/keys"));
        assert_contains(&dry.stdout, &format!("{c2}/config.json"));
    }
}

#[test]
fn repair_removes_a_planted_link_not_the_file_or_shared_entry_it_points_at() {
    use std::os::unix::fs::symlink;
    let dl = dl();
    fill(&dl, Writer::Hubget, TWIN);
    let (shared_hash, _) = hashes(&dl, TWIN, SHARED_PATH);
    let entry = store_entry(&dl, &shared_hash);
    let entry_bytes = std::fs::read(&entry).unwrap();
    let victim = dl.env.home().join(".bashrc");
    std::fs::write(&victim, "export PATH=victim").unwrap();
    let snapshot = dl
        .repo_dir("models--acme--twin")
        .join("snapshots")
        .join(dl.head(TWIN));
    // config.json names a file of the user's; own.bin names another file's store entry.
    std::fs::remove_file(snapshot.join("config.json")).unwrap();
    symlink(&victim, snapshot.join("config.json")).unwrap();
    std::fs::remove_file(snapshot.join("own.bin")).unwrap();
    let rel_entry = Path::new("../../..")
        .join("blobs")
        .join(&shared_hash[..2])
        .join(&shared_hash);
    symlink(&rel_entry, snapshot.join("own.bin")).unwrap();

    let found = cache(&dl, &["verify", TWIN, "--json"]);
    found.code_is(8);
    let bad = json(&found)["bad"].to_string();

    let repaired = cache(&dl, &["verify", TWIN, "--repair"]);
    repaired.code_is(0);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "export PATH=victim"
    );
    assert_eq!(
        std::fs::read(&entry).unwrap(),
        entry_bytes,
        "the shared entry stays"
    );
    assert_eq!(
        std::fs::read(snapshot.join("own.bin")).unwrap(),
        dl.sim.content(TWIN, "own.bin")
    );
    hf_ok(&dl, &["cache", "verify", TWIN]);
    assert_contains(&bad, "config.json");
    assert_contains(&bad, "own.bin");
    assert_contains(&bad, "a link out of the repository's blobs");
}

#[test]
fn prune_collects_unreferenced_entries_and_stale_partials_but_keeps_a_locked_one() {
    let dl = dl();
    fill(&dl, Writer::Hubget, TINY);
    fill(&dl, Writer::Hubget, TWIN);
    let (xet_hash, _) = hashes(&dl, TWIN, SHARED_PATH);
    let entry = store_entry(&dl, &xet_hash);
    assert!(entry.is_file());
    // Both repos removed by hand (as `rm -rf` would): the shared entry is referenced by no one.
    for folder in ["models--acme--tiny", "models--acme--twin"] {
        std::fs::remove_dir_all(dl.repo_dir(folder)).unwrap();
    }
    // What an interrupted download of another repo left: hubget's own partial and state
    // files, and a partial another download still holds.
    let blobs = dl.repo_dir("models--acme--other").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap();
    let stale = blobs.join("e1.hubget-partial");
    let stale_state = blobs.join("e1.hubget-partial.json");
    let busy = blobs.join("e2.hubget-partial");
    for f in [&stale, &stale_state, &busy] {
        std::fs::write(f, b"half").unwrap();
    }
    let lock = dl.cache().join(".locks/models--acme--other/e2.lock");
    let _held = hubget::store::lock::try_lock(&lock)
        .unwrap()
        .expect("the lock is free");

    let dry = cache(&dl, &["prune", "--dry-run"]);
    dry.ok();
    assert_contains(&dry.stdout, "e1.hubget-partial");
    assert!(
        entry.exists() && stale.exists(),
        "a dry run deletes nothing"
    );
    cache(&dl, &["prune", "--yes"]).ok();
    assert!(
        !entry.exists(),
        "the unreferenced shared entry is collected"
    );
    assert!(
        !stale.exists() && !stale_state.exists(),
        "stale partial and state go"
    );
    assert!(busy.exists(), "a partial another download holds is kept");
}

#[test]
fn rm_of_repo_at_a_revision_or_a_commit_removes_that_revision_only() {
    let dl = dl();
    fill(&dl, Writer::Hubget, TINY);
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let feature = info.branches["dev/feature"].clone();
    let snapshots = dl.repo_dir("models--acme--tiny").join("snapshots");
    for by in ["dev/feature", feature.as_str()] {
        dl.run(&[TINY, "--revision", "dev/feature"]).ok();
        assert!(snapshots.join(&feature).is_dir());
        cache(&dl, &["rm", &format!("{TINY}@{by}"), "--yes"]).ok();
        assert!(
            !snapshots.join(&feature).exists(),
            "{by}: that revision goes"
        );
        assert!(snapshots.join(&info.head).is_dir(), "{by}: main stays");
        hf_ok(&dl, &["cache", "verify", TINY]);
    }
}
