//! hf-hub 1.0.0 (the Rust client) against hubsim: snapshot_download must work unchanged.

use hf_hub::HFClient;

use super::common::{sha256, shared};

fn check_snapshot(dir: &std::path::Path, files: &[hubsim::FileInfo]) {
    for f in files {
        let data = std::fs::read(dir.join(&f.path)).unwrap_or_else(|e| panic!("{}: {e}", f.path));
        assert_eq!(sha256(&data), f.sha256, "{}", f.path);
    }
}

#[test]
fn hf_hub_snapshot_download_works() {
    let sim = shared();
    let cache = tempfile::tempdir().unwrap();
    let client = HFClient::builder()
        .endpoint(sim.hub_url())
        .token(sim.token())
        .cache_dir(cache.path())
        .build_sync()
        .unwrap();
    let info = sim.info();
    let tiny = info.repo("acme/tiny").unwrap();
    let dir = client
        .model("acme", "tiny")
        .snapshot_download()
        .send()
        .unwrap();
    assert!(dir.ends_with(&tiny.head));
    check_snapshot(&dir, &tiny.files);
    let dir = client
        .model("acme", "tiny")
        .snapshot_download()
        .revision("dev/feature")
        .send()
        .unwrap();
    check_snapshot(
        &dir,
        &tiny.commit(&tiny.branches["dev/feature"]).unwrap().files,
    );
    let ds = info.repo("acme/many-small").unwrap();
    let dir = client
        .dataset("acme", "many-small")
        .snapshot_download()
        .send()
        .unwrap();
    check_snapshot(&dir, &ds.files);
    let private = info.repo("acme/private").unwrap();
    let dir = client
        .model("acme", "private")
        .snapshot_download()
        .send()
        .unwrap();
    check_snapshot(&dir, &private.files);
    let ev = info.repo("acme/evolving").unwrap();
    let dir = client
        .model("acme", "evolving")
        .snapshot_download()
        .revision("v1")
        .send()
        .unwrap();
    check_snapshot(&dir, &ev.commits[0].files);
    let c = sim.counters();
    assert!(!c.auth_seen.cdn);
}
