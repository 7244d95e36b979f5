//! The statichttp backend against a real (small) HTTP server, called the way the host calls it,
//! with plugin-api's public test helpers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::testing::{
    BatchBuilder, RecordingProgress, assert_one_outcome_per_item, cancel_after, done, error,
    fetch_unobserved, file,
};
use hubget_plugin_api::{CancelToken, ErrorKind, HostSettings, Manifest, RepoType, ResolveRequest};
use hubget_statichttp::StaticHttp;
use sha2::{Digest, Sha256};

/// A static HTTP server over a map of URL path → body, with `Range: bytes=N-` support; the
/// path `/hang` accepts and never answers. Records every request.
struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// One request: its path, its `Range` header, whether it carried `Authorization`.
#[derive(Clone, Debug)]
struct Seen {
    url: String,
    range: Option<String>,
    authorization: bool,
}

fn serve(files: HashMap<String, Vec<u8>>) -> Server {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let url = request.url().to_owned();
            let range = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Range"))
                .map(|h| h.value.as_str().to_owned());
            let authorization = request
                .headers()
                .iter()
                .any(|h| h.field.equiv("Authorization"));
            seen.lock().unwrap().push(Seen {
                url: url.clone(),
                range: range.clone(),
                authorization,
            });
            if url.ends_with("/hang") {
                // Hold the connection open without an answer.
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(3600));
                    drop(request);
                });
                continue;
            }
            let Some(body) = files.get(&url) else {
                let _ = request.respond(tiny_http::Response::empty(404));
                continue;
            };
            let start = range
                .as_deref()
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            let response = match start {
                Some(n) => tiny_http::Response::from_data(body[n.min(body.len())..].to_vec())
                    .with_status_code(206),
                None => tiny_http::Response::from_data(body.clone()),
            };
            let _ = request.respond(response);
        }
    });
    Server { base, seen: log }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Publishes `files` as `<repo>/<revision>` the way the backend expects.
fn publish(map: &mut HashMap<String, Vec<u8>>, repo: &str, revision: &str, files: Files<'_>) {
    let index: Vec<_> = files
        .iter()
        .map(|(p, d)| serde_json::json!({"path": p, "size": d.len(), "sha256": sha256_hex(d)}))
        .collect();
    map.insert(
        format!("/{repo}/{revision}/index.json"),
        serde_json::json!({ "files": index })
            .to_string()
            .into_bytes(),
    );
    for (p, d) in files {
        map.insert(format!("/{repo}/{revision}/files/{p}"), d.to_vec());
    }
}

/// Files of one snapshot: `(path, bytes)`.
type Files<'a> = &'a [(&'a str, &'a [u8])];

/// A server holding each `(revision, files)` of acme/tiny as [`publish`] lays them out.
fn serve_tiny(revisions: &[(&str, Files<'_>)]) -> Server {
    let mut map = HashMap::new();
    for (revision, files) in revisions {
        publish(&mut map, "acme/tiny", revision, files);
    }
    serve(map)
}

/// A batch of acme/tiny at revision `v1`, partial files in `work`.
fn v1_batch(work: &Path) -> BatchBuilder {
    BatchBuilder::new("acme/tiny", &"a".repeat(40), work).revision("v1")
}

fn backend(base: &str) -> StaticHttp {
    StaticHttp::new(HostSettings::default(), &format!("base_url = \"{base}\"\n")).unwrap()
}

fn resolve(
    b: &StaticHttp,
    repo: &str,
    revision: &str,
) -> Result<Manifest, hubget_plugin_api::PluginError> {
    b.resolve(
        &ResolveRequest {
            repo_type: RepoType::MODEL,
            repo_id: repo.into(),
            revision: revision.into(),
            options_json: "".into(),
        },
        &CancelToken::new(),
    )
}

const WEIGHTS: &[u8] = &[7u8; 300_000];

#[test]
fn resolve_lists_sha256_files_under_a_content_addressed_commit() {
    let server = serve_tiny(&[
        ("v1", &[("config.json", b"{}"), ("w.bin", WEIGHTS)]),
        ("v1-copy", &[("w.bin", WEIGHTS), ("config.json", b"{}")]),
        ("v2", &[("config.json", b"{\"a\":1}"), ("w.bin", WEIGHTS)]),
    ]);
    let b = backend(&server.base);

    let v1 = resolve(&b, "acme/tiny", "v1").unwrap();
    assert_eq!(v1.commit.len(), 40);
    assert!(v1.commit.bytes().all(|c| c.is_ascii_hexdigit()));
    let w = v1.file("w.bin").unwrap();
    assert_eq!(w.size, WEIGHTS.len() as u64);
    assert!(w.git_oid.is_empty(), "no git here");
    assert_eq!(w.sha256.as_ref().unwrap().as_str(), sha256_hex(WEIGHTS));

    // Same files: same snapshot; a changed file: a new one.
    assert_eq!(
        resolve(&b, "acme/tiny", "v1-copy").unwrap().commit,
        v1.commit
    );
    assert_ne!(resolve(&b, "acme/tiny", "v2").unwrap().commit, v1.commit);
    assert_eq!(
        resolve(&b, "acme/nope", "v1").unwrap_err().kind,
        ErrorKind::NOT_FOUND
    );
}

#[test]
fn fetch_writes_every_item_and_resumes_with_a_range_request() {
    let server = serve_tiny(&[("v1", &[("config.json", b"{}"), ("w.bin", WEIGHTS)])]);
    let b = backend(&server.base);
    let work = tempfile::tempdir().unwrap();
    let batch = v1_batch(work.path())
        .item(file("config.json", 2), b"")
        .item(file("w.bin", WEIGHTS.len() as u64), &WEIGHTS[..100_000])
        .build();
    let progress = RecordingProgress::new();
    let outcomes = b.fetch(&batch, &progress.progress(), &CancelToken::new());
    assert_one_outcome_per_item(&batch, &outcomes);
    assert_eq!(done(&outcomes[0]).bytes_transferred, 2);
    assert_eq!(
        done(&outcomes[1]).bytes_transferred,
        200_000,
        "only the rest"
    );
    assert_eq!(progress.bytes(1), 200_000);
    assert_eq!(progress.checkpoint(1), Some(WEIGHTS.len() as u64));
    assert_eq!(read(&batch.items[1].partial_path), WEIGHTS);
    assert_eq!(read(&batch.items[0].partial_path), b"{}");
    let seen = server.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r.url == "/acme/tiny/v1/files/w.bin"
                && r.range.as_deref() == Some("bytes=100000-")),
        "{seen:?}"
    );
}

#[test]
fn a_hung_server_is_left_behind_on_cancel_and_finished_items_stay_done() {
    let server = serve_tiny(&[("v1", &[("config.json", b"{}")])]);
    let b = backend(&server.base);
    let work = tempfile::tempdir().unwrap();
    let batch = v1_batch(work.path())
        .item(file("config.json", 2), b"")
        .item(file("hang", 10), b"")
        .build();
    let t = Instant::now();
    let progress = RecordingProgress::new();
    let outcomes = b.fetch(
        &batch,
        &progress.progress(),
        &cancel_after(Duration::from_millis(500)),
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_one_outcome_per_item(&batch, &outcomes);
    assert_eq!(done(&outcomes[0]).bytes_transferred, 2);
    assert_eq!(progress.checkpoint(0), Some(2), "the host may keep it");
    assert_eq!(error(&outcomes[1]).kind, ErrorKind::CANCELLED);
}

#[test]
fn without_base_url_the_backend_loads_but_says_what_to_set() {
    let b = StaticHttp::new(HostSettings::default(), "").unwrap();
    let e = resolve(&b, "acme/tiny", "main").unwrap_err();
    assert_eq!(e.kind, ErrorKind::CONFIG);
    assert!(e.message.contains("base_url"), "{e}");
    let e = StaticHttp::new(HostSettings::default(), "base_ur = \"x\"\n")
        .err()
        .unwrap();
    assert_eq!(e.kind, ErrorKind::CONFIG);
    assert!(e.message.contains("base_ur"), "{e}");
}

#[test]
fn the_hub_token_is_never_sent() {
    let server = serve_tiny(&[("v1", &[("config.json", b"{}")])]);
    let b = StaticHttp::new(
        HostSettings {
            token: Some("hf_secret".into()),
            ..HostSettings::default()
        },
        &format!("base_url = \"{}\"\n", server.base),
    )
    .unwrap();
    resolve(&b, "acme/tiny", "v1").unwrap();
    let work = tempfile::tempdir().unwrap();
    let batch = v1_batch(work.path())
        .item(file("config.json", 2), b"")
        .build();
    done(&fetch_unobserved(&b, &batch)[0]);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|r| !r.authorization), "{seen:?}");
}

fn read(path: &hubget_plugin_api::std_types::RString) -> Vec<u8> {
    std::fs::read(Path::new(path.as_str())).unwrap()
}
