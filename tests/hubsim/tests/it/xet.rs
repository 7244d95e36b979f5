//! The real Xet CAS behind the proxy: hf-xet downloads through it, counted.

use hubsim::{HubSimHandle, Origin};
use xet::xet_session::{XetFileInfo, XetSessionBuilder};

use super::common::{sha256, tiny};

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
