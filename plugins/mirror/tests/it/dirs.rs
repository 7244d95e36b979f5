//! Directory mirrors: resolve policy, manifests from a cache, copies from an offset, fallbacks.

use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::std_types::RResult;
use hubget_plugin_api::{
    CancelToken, ErrorKind, Features, FetchBatch, ManifestFile, RepoType, ResolveRequest,
};

use crate::common::*;

const REPO: &str = "acme/tiny";
const C1: &str = "1111111111111111111111111111111111111111";
const C2: &str = "2222222222222222222222222222222222222222";
const SHA_W: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OID_CFG: &str = "cccccccccccccccccccccccccccccccccccccccc";
const OID_NESTED: &str = "dddddddddddddddddddddddddddddddddddddddd";

fn weights() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect()
}

/// A cache with `main` -> C1: an LFS file, a regular file, a nested file, and a plain copy.
fn team_cache(root: &std::path::Path) -> FakeCache {
    let cache = FakeCache::new(root);
    cache.add(REPO, C1, "model.bin", SHA_W, &weights());
    cache.add(REPO, C1, "config.json", OID_CFG, b"{\"a\":1}");
    cache.add(REPO, C1, "sub/dir/n.txt", OID_NESTED, b"nested");
    std::fs::write(
        cache
            .repo_dir(REPO)
            .join("snapshots")
            .join(C1)
            .join("copied.txt"),
        b"x",
    )
    .unwrap();
    cache.set_ref(REPO, "main", C1);
    cache
}

/// A directory mirror (online) over a [`team_cache`], and a work folder for partial files.
struct Served {
    cache: tempfile::TempDir,
    work: tempfile::TempDir,
    m: hubget_mirror::Mirror,
}

impl Served {
    fn new() -> Self {
        let cache = tempfile::tempdir().unwrap();
        team_cache(cache.path());
        let m = mirror(&dirs_config(&[cache.path()], ""), false);
        let work = tempfile::tempdir().unwrap();
        Self { cache, work, m }
    }

    /// A batch of the repo at `commit`, partial files in the work folder.
    fn batch(&self, commit: &str, files: &[(ManifestFile, &[u8], u64)]) -> FetchBatch {
        batch(REPO, commit, self.work.path(), files)
    }
}

fn req(revision: &str) -> ResolveRequest {
    ResolveRequest {
        repo_type: RepoType::MODEL,
        repo_id: REPO.into(),
        revision: revision.into(),
        options_json: "".into(),
    }
}

#[test]
fn unconfigured_backend_is_harmless() {
    let m = mirror("", false);
    let caps = m.capabilities();
    assert_eq!(caps.features, Features::empty());
    let err = m.resolve(&req("main"), &CancelToken::new()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED);
    let work = tempfile::tempdir().unwrap();
    let b = batch(
        REPO,
        C1,
        work.path(),
        &[(mfile("a", 1, OID_CFG, None), b"a", 0)],
    );
    let (p, _) = progress();
    let out = fetch(&m, &b, &p);
    assert_eq!(out.len(), 1);
    match &out[0].result {
        RResult::RErr(e) => assert_eq!(e.kind, ErrorKind::NOT_FOUND, "{e}"),
        RResult::ROk(_) => panic!("an unconfigured mirror fetched something"),
    }
}

#[test]
fn directory_only_capabilities_are_local() {
    let tmp = tempfile::tempdir().unwrap();
    let m = mirror(&dirs_config(&[tmp.path()], ""), false);
    let f = m.capabilities().features;
    for bit in [
        Features::RESOLVE,
        Features::LOCAL,
        Features::RESUME,
        Features::NON_XET_FILES,
    ] {
        assert!(f.contains(bit), "{f:?} lacks {:?}", bit.names());
    }
    assert!(!f.contains(Features::XET) && !f.contains(Features::PARALLEL_RANGES));
}

#[test]
fn offline_resolve_reads_refs_and_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    team_cache(tmp.path());
    let m = mirror(&dirs_config(&[tmp.path()], ""), true);
    let manifest = m.resolve(&req("main"), &CancelToken::new()).unwrap();
    assert_eq!(manifest.commit.as_str(), C1);
    let files: Vec<_> = manifest.files.iter().collect();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    // `copied.txt` is no symlink into blobs/: its hash is unknown, so it is left out.
    assert_eq!(paths, ["config.json", "model.bin", "sub/dir/n.txt"]);
    let cfg = files[0];
    assert_eq!((cfg.size, cfg.git_oid.as_str()), (7, OID_CFG));
    assert!(cfg.sha256.is_none(), "regular files have no sha256");
    let w = files[1];
    assert_eq!(w.size, 3_000_000);
    assert_eq!(
        w.sha256.as_ref().map(|s| s.as_str()).into_option(),
        Some(SHA_W)
    );
    assert!(
        w.git_oid.is_empty(),
        "the pointer's git oid is not in a cache"
    );
    assert!(w.xet_hash.is_none());
    assert!(manifest.extra_json.contains("mirror_dir"));

    // A 40-hex commit with a snapshot resolves too; one without does not.
    assert_eq!(
        m.resolve(&req(C1), &CancelToken::new())
            .unwrap()
            .commit
            .as_str(),
        C1
    );
    for missing in [C2, "v2", "refs/pr/1", "../../etc"] {
        let err = m.resolve(&req(missing), &CancelToken::new()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{missing}: {err}");
    }
}

#[test]
fn refs_with_slashes_and_several_dirs() {
    let empty = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cache = team_cache(tmp.path());
    cache.add(REPO, C2, "pr.txt", OID_NESTED, b"nested");
    cache.set_ref(REPO, "refs/pr/1", C2);
    let m = mirror(&dirs_config(&[empty.path(), tmp.path()], ""), true);
    let manifest = m.resolve(&req("refs/pr/1"), &CancelToken::new()).unwrap();
    assert_eq!(manifest.commit.as_str(), C2);
    assert_eq!(manifest.files.len(), 1);
}

#[test]
fn online_directories_decline_to_resolve_unless_configured() {
    let tmp = tempfile::tempdir().unwrap();
    team_cache(tmp.path());
    let online = mirror(&dirs_config(&[tmp.path()], ""), false);
    let err = online
        .resolve(&req("main"), &CancelToken::new())
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED, "a quiet decline: {err}");
    assert!(err.message.contains("resolve_from_dirs"), "{err}");

    let always = mirror(
        &dirs_config(&[tmp.path()], "resolve_from_dirs = \"always\""),
        false,
    );
    assert_eq!(
        always
            .resolve(&req("main"), &CancelToken::new())
            .unwrap()
            .commit
            .as_str(),
        C1
    );

    let never = mirror(
        &dirs_config(&[tmp.path()], "resolve_from_dirs = \"never\""),
        true,
    );
    let err = never
        .resolve(&req("main"), &CancelToken::new())
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED);
    assert!(!never.capabilities().features.contains(Features::RESOLVE));
}

#[test]
fn fetch_copies_from_the_offset_without_truncating() {
    let s = Served::new();
    let w = weights();
    let b = s.batch(
        C1,
        &[
            (
                mfile("model.bin", w.len() as u64, "", Some(SHA_W)),
                &w,
                1_234_567,
            ),
            (mfile("config.json", 7, OID_CFG, None), b"{\"a\":1}", 0),
        ],
    );
    let (p, rec) = progress();
    let out = fetch(&s.m, &b, &p);
    assert_eq!(out.len(), 2);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.index as usize, i);
        let done = match &o.result {
            RResult::ROk(d) => d,
            RResult::RErr(e) => panic!("item {i}: {e}"),
        };
        assert_eq!(done.source.as_str(), s.cache.path().display().to_string());
        assert_eq!(done.bytes_transferred, 0, "no network bytes");
    }
    assert_eq!(std::fs::read(s.work.path().join("0.partial")).unwrap(), w);
    assert_eq!(
        std::fs::read(s.work.path().join("1.partial")).unwrap(),
        b"{\"a\":1}"
    );
    assert_eq!(
        rec.bytes(0),
        w.len() as u64 - 1_234_567,
        "only the rest is copied"
    );
    assert_eq!(rec.checkpoints(0).last().copied(), Some(w.len() as u64));
    assert_eq!(rec.bytes(1), 7);
}

#[test]
fn fetch_finds_blobs_by_hash_across_commits() {
    // The manifest (from the Hub) is at C2, the cache only holds C1: the blob names match.
    let s = Served::new();
    let b = s.batch(
        C2,
        &[(mfile("renamed.json", 7, OID_CFG, None), b"{\"a\":1}", 0)],
    );
    let (p, _) = progress();
    let out = fetch(&s.m, &b, &p);
    assert!(out[0].result.is_ok(), "{:?}", out[0].result);
    assert_eq!(
        std::fs::read(s.work.path().join("0.partial")).unwrap(),
        b"{\"a\":1}"
    );
}

#[test]
fn files_a_directory_lacks_are_not_found() {
    let s = Served::new();
    let other_oid = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    let b = s.batch(
        C1,
        &[
            // Not in the cache at all.
            (mfile("absent.txt", 3, other_oid, None), b"abc", 0),
            // In the snapshot, but the blob name says it is other content.
            (mfile("config.json", 7, other_oid, None), b"{\"b\":2}", 0),
            // The right hash but another size.
            (mfile("config.json", 8, OID_CFG, None), b"{\"a\":1}!", 0),
            // A path that tries to leave the snapshot.
            (mfile("../../refs/main", 40, "", None), &[b'0'; 40], 0),
        ],
    );
    let (p, _) = progress();
    let out = fetch(&s.m, &b, &p);
    for o in &out {
        match &o.result {
            RResult::RErr(e) => assert_eq!(e.kind, ErrorKind::NOT_FOUND, "item {}: {e}", o.index),
            RResult::ROk(d) => panic!("item {} fetched from {}", o.index, d.source),
        }
    }
    // Nothing was written to the partial files.
    assert_eq!(
        std::fs::metadata(s.work.path().join("1.partial"))
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn a_cancelled_fetch_stops() {
    let s = Served::new();
    let w = weights();
    let b = s.batch(
        C1,
        &[(mfile("model.bin", w.len() as u64, "", Some(SHA_W)), &w, 0)],
    );
    let (p, _) = progress();
    let cancel = CancelToken::new();
    cancel.cancel();
    let out = s.m.fetch(&b, &p, &cancel);
    match &out[0].result {
        RResult::RErr(e) => assert_eq!(e.kind, ErrorKind::CANCELLED),
        RResult::ROk(_) => panic!("fetched despite the cancel token"),
    }
}

#[test]
fn plain_files_in_a_snapshot_are_served_and_left_to_the_host_to_verify() {
    // A cache written without symlinks (Windows without Developer Mode) holds plain copies.
    let s = Served::new();
    let b = s.batch(
        C1,
        &[(
            mfile(
                "copied.txt",
                1,
                "ffffffffffffffffffffffffffffffffffffffff",
                None,
            ),
            b"x",
            0,
        )],
    );
    let (p, _) = progress();
    let out = fetch(&s.m, &b, &p);
    assert!(out[0].result.is_ok(), "{:?}", out[0].result);
    assert_eq!(
        std::fs::read(s.work.path().join("0.partial")).unwrap(),
        b"x"
    );
}
