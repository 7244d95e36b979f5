//! The real Xet CAS behind the proxy: hf-xet downloads through it, counted.

use hubsim::{FixtureSpec, HubSim, HubSimHandle, Origin};
use xet::xet_session::{XetFileInfo, XetSessionBuilder};

use super::common::{client, sha256, tiny};

/// Download a Xet file by hash through hf-xet into memory (blocking on the sim's runtime).
pub fn xet_download(sim: &HubSimHandle, hash: &str, size: u64) -> Result<Vec<u8>, String> {
    let cas = sim.cas_url().to_string();
    let hash = hash.to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.bin");
    let out2 = out.clone();
    let cache = dir.path().join("xet");
    let res: Result<(), String> = sim.runtime().block_on(async move {
        let session = XetSessionBuilder::new()
            .with_cache_dir(cache)
            .with_tokio_handle(tokio::runtime::Handle::current())
            .build()
            .map_err(|e| e.to_string())?;
        let group = session
            .new_file_download_group()
            .map_err(|e| e.to_string())?
            .with_endpoint(cas)
            .with_token_info("test", 4_000_000_000)
            .build()
            .await
            .map_err(|e| e.to_string())?;
        group
            .download_file_to_path(XetFileInfo::new(hash, size), out2)
            .await
            .map_err(|e| e.to_string())?;
        group.finish().await.map_err(|e| e.to_string())?;
        Ok(())
    });
    res?;
    std::fs::read(&out).map_err(|e| e.to_string())
}

#[test]
fn hf_xet_downloads_through_the_counting_proxy() {
    let sim = tiny();
    for name in ["xet-a.bin", "w.safetensors"] {
        let f = sim.info().file("acme/tiny", name);
        let data = xet_download(&sim, f.xet_hash.as_deref().unwrap(), f.size).unwrap();
        assert_eq!(sha256(&data), f.sha256, "{name}");
    }
    let c = sim.counters();
    assert!(
        c.requests_to(Origin::Cas, "reconstructions_v2") >= 2,
        "{:?}",
        c.requests
    );
    assert!(
        c.requests_to(Origin::Cas, "fetch_term") >= 2,
        "fetch URLs must come back through the proxy: {:?}",
        c.requests
    );
    // Random content is incompressible; the compressible file shrinks: CAS bytes lie between.
    let xa = sim.info().file("acme/tiny", "xet-a.bin").size;
    let fetched = c.bytes_by_route["cas:fetch_term"];
    assert!(
        fetched > xa && fetched < xa + 4 * 1024 * 1024,
        "fetched {fetched}"
    );
    assert!(!c.auth_seen.cdn);
    assert!(
        c.auth_seen.cas,
        "reconstruction queries carry the CAS token"
    );
}

#[test]
fn hubsims_of_one_spec_build_the_store_entry_once_and_serve_their_own_copies() {
    let root = tempfile::tempdir().unwrap();
    let start = || {
        HubSim::start_blocking(
            HubSim::builder()
                .fixtures(FixtureSpec::minimal())
                .fixture_store(Some(root.path().to_owned())),
        )
        .expect("hubsim starts")
    };
    let published = || -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.path().join("hashes.json"))
            .filter(|p| p.is_file())
            .map(|p| {
                let built = std::fs::metadata(&p).unwrap().modified().unwrap();
                (p, built)
            })
            .collect()
    };
    let a = start();
    let first = published();
    assert_eq!(first.len(), 1, "one entry for the spec: {first:?}");
    let b = start();
    assert_eq!(
        published(),
        first,
        "the second start used the entry as it was"
    );
    // Each serves its own copy: with the store gone and the first sim's CAS stopped, the
    // second still serves every Xet file.
    std::fs::remove_dir_all(root.path()).unwrap();
    client()
        .post(format!("{}/stop-cas", a.info().control_url))
        .send()
        .unwrap()
        .error_for_status()
        .unwrap();
    for f in b.info().repo("acme/tiny").unwrap().files.iter() {
        if let Some(hash) = &f.xet_hash {
            let data = xet_download(&b, hash, f.size).unwrap();
            assert_eq!(sha256(&data), f.sha256, "{}", f.path);
        }
    }
}
