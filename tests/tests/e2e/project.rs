//! Declared models: `hubget add`/`remove` edit hubget.toml, `hubget lock` pins each entry to a
//! commit and its files' hashes, `hubget sync` makes the cache or a local dir hold exactly that,
//! moves nothing the second time, checks for drift, and never re-resolves silently.

use std::path::PathBuf;

use hubsim::Origin;

use hubget_tests::hub::{Dl, TINY};
use hubget_tests::{Run, assert_contains};

/// A project folder with its hubget.toml in `dl`'s environment.
struct Project<'a> {
    dl: &'a Dl,
    manifest: PathBuf,
}

impl<'a> Project<'a> {
    fn new(dl: &'a Dl, toml: &str) -> Self {
        let dir = dl.env.path("project");
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = dir.join("hubget.toml");
        std::fs::write(&manifest, toml).unwrap();
        Self { dl, manifest }
    }

    /// `hubget <command> <args> --manifest <this project's>`.
    fn run(&self, command: &str, args: &[&str]) -> Run {
        let manifest = self.manifest.display().to_string();
        self.dl.hubget(
            &[&[command][..], args, &["--manifest", &manifest]].concat(),
            &[],
        )
    }

    fn lock_text(&self) -> String {
        std::fs::read_to_string(self.manifest.with_file_name("hubget.lock")).unwrap()
    }

    fn set_lock(&self, text: &str) {
        std::fs::write(self.manifest.with_file_name("hubget.lock"), text).unwrap();
    }
}

#[test]
fn add_and_remove_keep_the_manifests_comments() {
    let dl = Dl::new();
    let p = Project::new(&dl, "# what the service loads\n");
    p.run("add", &["acme/tiny", "--include", "*.json"]).ok();
    p.run("add", &["hf://spaces/acme/space"]).ok();
    let text = std::fs::read_to_string(&p.manifest).unwrap();
    assert!(text.starts_with("# what the service loads\n"), "{text}");
    assert_contains(&text, "[repos.\"acme/tiny\"]");
    assert_contains(&text, "[repos.\"spaces/acme/space\"]");
    p.run("remove", &["spaces/acme/space"]).ok();
    let text = std::fs::read_to_string(&p.manifest).unwrap();
    assert!(
        text.starts_with("# what the service loads\n") && !text.contains("space"),
        "{text}"
    );
    p.run("remove", &["acme/nope"]).code_is(3);
}

#[test]
fn lock_pins_commits_and_sync_fills_then_moves_nothing_and_asks_nothing() {
    let dl = Dl::new();
    let p = Project::new(&dl, "[repos.\"acme/tiny\"]\nrevision = \"main\"\n");
    p.run("lock", &[]).ok();
    let head = dl.head(TINY);
    let lock = p.lock_text();
    assert_contains(&lock, &format!("commit = \"{head}\""));
    assert_contains(&lock, "path = \"lfs.bin\"");
    // A sync fills the empty cache with exactly the locked files, verified.
    let r = p.run("sync", &[]);
    r.ok();
    let files: Vec<&str> = dl
        .sim
        .info()
        .repo(TINY)
        .unwrap()
        .files
        .iter()
        .map(|f| f.path.as_str())
        .collect();
    dl.assert_landed(TINY, &files);
    // A second sync moves no byte and makes no request at all.
    dl.sim.reset_counters();
    let again = p.run("sync", &[]);
    again.ok();
    let c = dl.sim.counters();
    assert_eq!(
        c.total_requests.hub + c.total_requests.cdn + c.total_requests.cas,
        0,
        "{c:?}"
    );
    assert_contains(&again.stdout, "0 file(s) fetched, 0 B moved");
    // --check agrees.
    p.run("sync", &["--check"]).ok();
}

#[test]
fn a_pin_stays_until_upgrade_moves_it() {
    let dl = Dl::new();
    let p = Project::new(&dl, "[repos.\"acme/tiny\"]\n");
    p.run("lock", &[]).ok();
    let head = dl.head(TINY);
    // As if main had moved on since the lock was made: the lock names an older commit.
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let older = info.tags["v1.0"].clone();
    p.set_lock(&p.lock_text().replace(&head, &older));
    p.run("lock", &[]).ok();
    assert_contains(&p.lock_text(), &format!("commit = \"{older}\""));
    p.run("lock", &["--upgrade"]).ok();
    assert_contains(&p.lock_text(), &format!("commit = \"{head}\""));
    // The one entry named moves; others would stay.
    p.set_lock(&p.lock_text().replace(&head, &older));
    p.run("lock", &["--upgrade", "acme/tiny"]).ok();
    assert_contains(&p.lock_text(), &format!("commit = \"{head}\""));
}

#[test]
fn locked_refuses_a_stale_lock_and_a_vanished_commit_is_a_clear_error() {
    let dl = Dl::new();
    let p = Project::new(&dl, "[repos.\"acme/tiny\"]\n");
    p.run("lock", &[]).ok();
    // The manifest changed since: --locked (and --frozen) refuse, naming the entry.
    std::fs::write(
        &p.manifest,
        "[repos.\"acme/tiny\"]\ninclude = [\"*.json\"]\n",
    )
    .unwrap();
    for flag in ["--locked", "--frozen"] {
        let r = p.run("sync", &[flag]);
        r.code_is(2);
        assert_contains(&r.stderr, "out of date");
        assert_contains(&r.stderr, "acme/tiny");
    }
    // A pinned commit the Hub no longer has: an error naming the entry, nothing re-resolved.
    p.run("lock", &[]).ok();
    let head = dl.head(TINY);
    let gone = "0123456789abcdef0123456789abcdef01234567";
    p.set_lock(&p.lock_text().replace(&head, gone));
    let r = p.run("sync", &[]);
    assert_ne!(r.code, Some(0));
    assert_contains(&r.stderr, "acme/tiny");
    assert_contains(
        &r.stderr,
        &format!("the pinned commit {gone} is gone from the Hub"),
    );
    assert_contains(&p.lock_text(), gone);
    assert!(
        !dl.repo_dir("models--acme--tiny")
            .join("snapshots")
            .join(gone)
            .exists()
    );
}

#[test]
fn check_lists_a_missing_file_an_extra_revision_and_a_corrupted_blob() {
    let dl = Dl::new();
    let p = Project::new(&dl, "[repos.\"acme/tiny\"]\n");
    p.run("sync", &[]).ok();
    let head = dl.head(TINY);
    let snapshot = dl
        .repo_dir("models--acme--tiny")
        .join("snapshots")
        .join(&head);
    std::fs::remove_file(snapshot.join("README.md")).unwrap();
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    dl.run(&[TINY, "--revision", &info.branches["dev/feature"]])
        .ok();
    let lfs = snapshot.join("lfs.bin").canonicalize().unwrap();
    let mut perms = std::fs::metadata(&lfs).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&lfs, perms).unwrap();
    let mut data = std::fs::read(&lfs).unwrap();
    data[10] ^= 1;
    std::fs::write(&lfs, data).unwrap();
    dl.sim.reset_counters();
    let r = p.run("sync", &["--check"]);
    r.code_is(8);
    assert_contains(&r.stdout, "missing    acme/tiny: README.md");
    assert_contains(&r.stdout, "different  acme/tiny: lfs.bin");
    assert_contains(
        &r.stdout,
        &format!(
            "extra      acme/tiny: revision {}",
            info.branches["dev/feature"]
        ),
    );
    assert_eq!(
        dl.sim.counters().total_requests.hub,
        0,
        "--check asks nothing"
    );
    // And sync repairs what is missing (the corrupted blob is the cache's to repair).
    p.run("sync", &[]).ok();
    assert!(snapshot.join("README.md").is_file());
}

#[test]
fn a_local_dir_entry_syncs_there_and_frozen_asks_no_hub_api() {
    let dl = Dl::new();
    let p = Project::new(
        &dl,
        "[repos.\"acme/tiny\"]\ninclude = [\"*.json\", \"*.md\"]\nlocal_dir = \"models/tiny\"\n",
    );
    p.run("lock", &[]).ok();
    dl.sim.reset_counters();
    p.run("sync", &["--frozen"]).ok();
    let dir = p.manifest.with_file_name("models/tiny");
    assert!(dir.join("config.json").is_file());
    assert!(dir.join("README.md").is_file());
    assert!(
        !dir.join("lfs.bin").exists(),
        "only what the entry includes"
    );
    let c = dl.sim.counters();
    let api: u64 = c
        .requests
        .iter()
        .filter(|(k, _)| {
            k.starts_with("hub:")
                && !k.starts_with("hub:resolve")
                && !k.starts_with("hub:lfs_batch")
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(api, 0, "--frozen resolves nothing: {c:?}");
    assert!(c.requests_to(Origin::Hub, "resolve") >= 1, "{c:?}");
}

#[test]
fn prune_removes_revisions_the_lock_does_not_name_and_leaves_other_repos_alone() {
    let dl = Dl::new();
    let p = Project::new(&dl, "[repos.\"acme/tiny\"]\n");
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let feature = info.branches["dev/feature"].clone();
    dl.run(&[TINY, "--revision", &feature]).ok();
    dl.run(&["acme/resume", "config.json"]).ok();
    let resume = dl.repo_dir("models--acme--resume");
    let before: Vec<_> = std::fs::read_dir(resume.join("snapshots"))
        .unwrap()
        .collect();
    let r = p.run("sync", &["--prune"]);
    r.ok();
    let snapshots = dl.repo_dir("models--acme--tiny").join("snapshots");
    assert!(
        snapshots.join(dl.head(TINY)).is_dir(),
        "the locked revision"
    );
    assert!(!snapshots.join(&feature).exists(), "{}", r.stdout);
    assert_contains(&r.stdout, &format!("pruned model/acme/tiny @ {feature}"));
    let after: Vec<_> = std::fs::read_dir(resume.join("snapshots"))
        .unwrap()
        .collect();
    assert_eq!(before.len(), after.len(), "another repository stays");
    hubget_tests::hub::hf_ok(&dl, &["cache", "verify", TINY]);
}

/// A bucket seeded by `sync --to` from `p`'s lock, and nodes that sync from it alone.
struct Fleet<'a> {
    p: &'a Project<'a>,
    gw: hubget_tests::s3::S3Gateway,
    to: String,
}

impl<'a> Fleet<'a> {
    /// Seeds the bucket (prefix `fleet`) with `sync --to`.
    fn seed(p: &'a Project<'a>) -> Self {
        let gw = hubget_tests::s3::S3Gateway::start();
        let to = format!("s3://{}/fleet", hubget_tests::s3::BUCKET);
        let fleet = Self { p, gw, to };
        let seed_cfg = p.dl.env.path("seed.toml");
        std::fs::write(
            &seed_cfg,
            format!("[plugins.s3]\nendpoint = \"{}\"\n", fleet.gw.endpoint),
        )
        .unwrap();
        let seed = fleet.hubget(&["sync", "--to", &fleet.to], &seed_cfg);
        seed.ok();
        assert_contains(&seed.stdout, &format!("exported to {}", fleet.to));
        fleet
    }

    fn hubget(&self, args: &[&str], config: &std::path::Path) -> Run {
        let vars = self.gw.env();
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let manifest = self.p.manifest.display().to_string();
        let config = config.display().to_string();
        let args = [args, &["--manifest", &manifest, "--config", &config]].concat();
        self.p.dl.hubget(&args, &vars)
    }

    /// `sync --frozen` on a node: a fresh cache `cache`, the bucket as its only backend, and
    /// a Hub that does not answer.
    fn node_sync(&self, cache: &std::path::Path) -> Run {
        let node_cfg = self.p.dl.env.path("node.toml");
        std::fs::write(
            &node_cfg,
            format!(
                "[backends]\norder = [\"s3\"]\n[plugins.s3]\nurl = \"{}\"\nendpoint = \"{}\"\n",
                self.to, self.gw.endpoint
            ),
        )
        .unwrap();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
        };
        self.hubget(
            &[
                "sync",
                "--frozen",
                "--endpoint",
                &dead,
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            &node_cfg,
        )
    }
}

#[test]
fn sync_seeds_a_bucket_and_a_frozen_node_syncs_from_it_without_the_hub() {
    let dl = Dl::new();
    let p = Project::new(
        &dl,
        "[repos.\"acme/tiny\"]\ninclude = [\"*.json\", \"*.bin\"]\n",
    );
    let fleet = Fleet::seed(&p);
    let node_cache = dl.env.path("node-cache");
    dl.sim.reset_counters();
    fleet.node_sync(&node_cache).ok();
    let c = dl.sim.counters();
    assert_eq!(c.total_requests.hub + c.total_requests.cdn, 0, "{c:?}");
    let snap = node_cache
        .join("models--acme--tiny/snapshots")
        .join(dl.head(TINY));
    for f in ["config.json", "lfs.bin", "xet-a.bin"] {
        assert_eq!(
            std::fs::read(snap.join(f)).unwrap(),
            dl.sim.content(TINY, f),
            "{f}"
        );
    }
}

#[test]
fn a_compromised_bucket_with_a_self_consistent_manifest_is_caught_by_the_lock() {
    let dl = Dl::new();
    let p = Project::new(&dl, "[repos.\"acme/tiny\"]\ninclude = [\"lfs.bin\"]\n");
    let fleet = Fleet::seed(&p);
    // Whoever holds the bucket swaps lfs.bin for other bytes and rewrites the commit's
    // manifest to match them: the bucket alone cannot tell.
    let lfs = dl.file(TINY, "lfs.bin");
    let mut forged = dl.sim.content(TINY, "lfs.bin").to_vec();
    forged[100] ^= 0xff;
    let forged_sha = hubget::verify::sha256_hex(&forged);
    let folder = "fleet/models--acme--tiny";
    fleet
        .gw
        .put(&format!("{folder}/blobs/{forged_sha}"), forged.clone());
    let manifest_key = format!("{folder}/manifests/{}.json", dl.head(TINY));
    let manifest = String::from_utf8(fleet.gw.get(&manifest_key)).unwrap();
    assert_contains(&manifest, &lfs.sha256);
    fleet.gw.put(
        &manifest_key,
        manifest.replace(&lfs.sha256, &forged_sha).into_bytes(),
    );
    // And serves the same bytes under the real name too.
    fleet
        .gw
        .put(&format!("{folder}/blobs/{}", lfs.sha256), forged.clone());

    // A node syncing from the lock plans from the lock's hashes (the Hub's, when it was
    // locked), not from the bucket's manifest: the forged file never lands.
    let node_cache = dl.env.path("node-cache");
    let r = fleet.node_sync(&node_cache);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    assert_contains(&r.stderr, "lfs.bin");
    let landed = walkdir_files(&node_cache);
    assert!(
        landed
            .iter()
            .all(|f| std::fs::read(f).ok().as_ref() != Some(&forged)),
        "the forged bytes never land: {landed:?}"
    );
    assert!(
        !node_cache
            .join("models--acme--tiny/snapshots")
            .join(dl.head(TINY))
            .join("lfs.bin")
            .exists()
    );
}

/// Every regular file below `dir`.
fn walkdir_files(dir: &std::path::Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

#[test]
fn a_lock_whose_file_hash_the_hub_no_longer_serves_is_a_clear_error_naming_the_entry() {
    let dl = Dl::new();
    let p = Project::new(&dl, "[repos.\"acme/tiny\"]\n");
    p.run("lock", &[]).ok();
    let lfs = dl.file(TINY, "lfs.bin");
    let forged = "f".repeat(64);
    p.set_lock(&p.lock_text().replace(&lfs.sha256, &forged));
    let r = p.run("sync", &[]);
    assert_ne!(r.code, Some(0));
    assert_contains(&r.stderr, "[repos.\"acme/tiny\"]");
    assert_contains(&r.stderr, "lfs.bin");
    assert_contains(&r.stderr, "not what the lock says");
    assert_contains(&p.lock_text(), &forged);
    dl.assert_never_landed(TINY, "lfs.bin");
}
