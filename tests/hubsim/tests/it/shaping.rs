//! Bandwidth caps and latency on the CDN and the CAS.

use std::time::{Duration, Instant};

use hubsim::{FixtureSpec, HubSim, Shaping};

use super::common::{following, get_bytes, sha256};

#[test]
fn per_connection_and_total_caps_and_latency() {
    let sim = HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::minimal()).shape(
        Shaping {
            rate_per_conn: Some(8 * 1024 * 1024),
            rate_total: Some(12 * 1024 * 1024),
            latency_ms: 150,
        },
    ))
    .unwrap();
    let f = sim.info().file("acme/tiny", "lfs.bin");
    let url = format!("{}/lfs/{}", sim.cdn_url(), f.sha256);
    // One connection: 4 MiB at 8 MiB/s = 0.5 s (+ latency).
    let t = Instant::now();
    let b = get_bytes(&url);
    let one = t.elapsed();
    assert_eq!(sha256(&b), f.sha256);
    assert!(
        one >= Duration::from_millis(550),
        "per-connection cap: {one:?}"
    );
    assert!(one < Duration::from_secs(5), "{one:?}");
    // Two connections at once: 8 MiB under a 12 MiB/s total cap >= ~0.65 s.
    let t = Instant::now();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..2).map(|_| s.spawn(|| get_bytes(&url).len())).collect();
        for h in hs {
            assert_eq!(h.join().unwrap() as u64, f.size);
        }
    });
    let two = t.elapsed();
    assert!(two >= Duration::from_millis(620), "total cap: {two:?}");
    // Latency on a tiny request.
    let t = Instant::now();
    let r = following()
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .unwrap();
    assert_eq!(r.status(), 206);
    assert!(t.elapsed() >= Duration::from_millis(140));
}
