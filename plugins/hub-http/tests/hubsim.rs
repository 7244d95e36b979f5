//! hub-http against hubsim: manifests, auth and not-found classification, the LFS batch API,
//! ranged downloads with resume, faults (5xx, cut connections, 429), cancellation and the
//! token-origin rule; plus a tiny raw server that ignores `Range`.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hubget_hub_http::reqwest::Url;
use hubget_hub_http::{
    DownloadOptions, Downloaded, Event, HttpClient, HubApi, LfsObject, PartialTarget, RetryPolicy,
    Source, download_to_partial,
};
use hubget_plugin_api::protocol::RetryNote;
use hubget_plugin_api::{CancelToken, ErrorKind, HostSettings, PluginError, RepoType};
use hubsim::{Fault, FaultAction, FileInfo, HubSim, Origin, RepoInfo, RepoKind, Storage};
use sha2::Digest;

const MIB: u64 = 1024 * 1024;

fn settings(sim: &HubSim, token: bool) -> HostSettings {
    HostSettings {
        endpoint: sim.hub_url().to_owned(),
        token: token.then(|| sim.token().to_owned()),
        user_agent: "hubget-test".into(),
        read_timeout_secs: 5,
        ..HostSettings::default()
    }
}

fn api(sim: &HubSim, token: bool) -> HubApi {
    let s = settings(sim, token);
    let client = HttpClient::new(&s).unwrap();
    HubApi::new(&s.endpoint, s.token.as_deref(), client).unwrap()
}

fn opts(connections: u32, range_size: u64) -> DownloadOptions {
    DownloadOptions {
        connections,
        range_size,
        retry: RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(5),
        },
        written: Vec::new(),
    }
}

fn repo_type(kind: RepoKind) -> RepoType {
    match kind {
        RepoKind::Model => RepoType::MODEL,
        RepoKind::Dataset => RepoType::DATASET,
        _ => RepoType::SPACE,
    }
}

fn sha256_file(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// The folders hubsim's recursive tree lists for `repo` at `main`: every parent of a path
/// made of ordinary components.
fn listed_dirs(repo: &RepoInfo) -> std::collections::BTreeSet<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for f in &repo.files {
        let parts: Vec<&str> = f.path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            continue;
        }
        for i in 1..parts.len() {
            dirs.insert(parts[..i].join("/"));
        }
    }
    dirs
}

fn file<'a>(repo: &'a RepoInfo, path: &str) -> &'a FileInfo {
    repo.file(path).unwrap_or_else(|| panic!("fixture {path}"))
}

/// What a download reported: progress totals and checkpoints.
#[derive(Default)]
struct Seen {
    file_bytes: AtomicU64,
    net_bytes: AtomicU64,
    checkpoints: Mutex<Vec<u64>>,
    ranges: Mutex<Vec<std::ops::Range<u64>>>,
    retries: Mutex<Vec<RetryNote>>,
    elapsed: Mutex<Duration>,
}

impl Seen {
    /// [`download_to_partial`] with this record as its event sink.
    async fn download(
        &self,
        client: &HttpClient,
        source: &Source,
        target: PartialTarget<'_>,
        opts: &DownloadOptions,
        cancel: &CancelToken,
    ) -> Result<Downloaded, PluginError> {
        download_to_partial(client, source, target, opts, &self.sink(), cancel).await
    }

    /// The download's event sink, recording everything.
    fn sink(&self) -> impl Fn(Event) + Sync + '_ {
        |event| match event {
            Event::Bytes { file, network } => {
                self.file_bytes.fetch_add(file, Ordering::SeqCst);
                self.net_bytes.fetch_add(network, Ordering::SeqCst);
            }
            Event::Checkpoint(n) => self.checkpoints.lock().unwrap().push(n),
            Event::RangeWritten(r) => self.ranges.lock().unwrap().push(r),
            Event::Retry(note) => self.retries.lock().unwrap().push(note),
        }
    }
}

/// A partial file holding the first `offset` correct bytes of `content` (from the CDN).
async fn partial_with_prefix(
    dir: &Path,
    content: Option<&[u8]>,
    offset: u64,
) -> std::path::PathBuf {
    let path = dir.join("partial");
    let prefix = content.map(|c| &c[..offset as usize]).unwrap_or(&[]);
    std::fs::write(&path, prefix).unwrap();
    path
}

async fn start() -> HubSim {
    HubSim::builder().start().await.expect("hubsim starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_of_every_fixture_repo_matches_hubsim_with_pagination() {
    const PAGE: usize = 7;
    let sim = HubSim::builder()
        .tree_page_size(PAGE)
        .start()
        .await
        .unwrap();
    let api = api(&sim, true);
    let cancel = CancelToken::new();
    for repo in &sim.info().repos {
        sim.reset_counters();
        let m = api
            .manifest(repo_type(repo.kind), &repo.id, "main", &cancel)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", repo.id));
        // One request per page, each page full but the last: the recursive tree lists the
        // directories too (those of ordinary paths), files and directories share the pages.
        let entries = repo.files.len() + listed_dirs(repo).len();
        let c = sim.counters();
        let trees: Vec<&str> = c
            .log
            .iter()
            .filter(|r| r.route == "tree")
            .map(|r| r.path.as_str())
            .collect();
        assert_eq!(
            trees.len(),
            entries.div_ceil(PAGE).max(1),
            "{}: {entries} entries",
            repo.id
        );
        assert!(
            trees[0].contains("recursive=true") && trees[0].contains("expand=false"),
            "{}: large pages (no expand): {}",
            repo.id,
            trees[0]
        );
        let distinct: std::collections::BTreeSet<&str> = trees.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            trees.len(),
            "{}: no page asked twice",
            repo.id
        );
        assert_eq!(m.commit.as_str(), repo.head, "{}", repo.id);
        assert_eq!(m.files.len(), repo.files.len(), "{}", repo.id);
        for f in &repo.files {
            let got = m.files.iter().find(|g| g.path.as_str() == f.path).unwrap();
            assert_eq!(got.size, f.size, "{} {}", repo.id, f.path);
            assert_eq!(got.git_oid.as_str(), f.git_oid, "{} {}", repo.id, f.path);
            let want_sha = (f.storage != Storage::Regular).then_some(f.sha256.as_str());
            assert_eq!(
                got.sha256.as_ref().map(|s| s.as_str()).into_option(),
                want_sha
            );
            assert_eq!(
                got.xet_hash.as_ref().map(|s| s.as_str()).into_option(),
                f.xet_hash.as_deref(),
                "{} {}",
                repo.id,
                f.path
            );
        }
    }
    let many = sim.info().repo("acme/many-small").unwrap();
    assert!(many.files.len() > 300);
    assert!(listed_dirs(many).len() > 1, "many-small has folders");
    // Other revisions: a branch with a slash, a tag, a PR ref and the commit itself.
    let tiny = sim.info().repo("acme/tiny").unwrap();
    for rev in ["dev/feature", "v1.0", "refs/pr/1", tiny.head.as_str()] {
        let m = api
            .manifest(RepoType::MODEL, "acme/tiny", rev, &cancel)
            .await
            .unwrap();
        let want = tiny
            .branches
            .get(rev)
            .or(tiny.tags.get(rev))
            .or(tiny.prs.get(rev))
            .cloned()
            .unwrap_or_else(|| rev.to_owned());
        assert_eq!(m.commit.as_str(), want, "{rev}");
        assert_eq!(
            m.files.len(),
            tiny.commit(&want).unwrap().files.len(),
            "{rev}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_and_not_found_are_classified() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let anon = api(&sim, false);
    let e = anon
        .manifest(RepoType::MODEL, "acme/private", "main", &cancel)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AUTH, "{e}");
    assert_eq!(e.http_status, 401);
    assert!(e.message.contains("RepoNotFound"), "{}", e.message);
    assert!(!e.retryable);
    api(&sim, true)
        .manifest(RepoType::MODEL, "acme/private", "main", &cancel)
        .await
        .expect("the token unlocks the private repo");
    let e = anon
        .xet_read_token(RepoType::MODEL, "acme/gated", "main", &cancel)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::AUTH, "{e}");
    assert!(e.message.contains("GatedRepo"), "{}", e.message);

    let e = anon
        .manifest(RepoType::MODEL, "acme/tiny", "no-such-branch", &cancel)
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_FOUND, "{e}");
    assert!(e.message.contains("RevisionNotFound"), "{}", e.message);
    let e = anon
        .manifest(RepoType::MODEL, "acme/nope", "main", &cancel)
        .await
        .unwrap_err();
    assert!(e.message.contains("RepoNotFound"), "{}", e.message);
    assert_eq!(
        e.kind,
        ErrorKind::AUTH,
        "the Hub answers 401 for unknown repos"
    );
    let e = anon
        .manifest(RepoType::DATASET, "acme/tiny", "main", &cancel)
        .await
        .unwrap_err();
    assert!(
        e.message.contains("RepoNotFound"),
        "wrong repo type: {}",
        e.message
    );

    // A missing file through resolve.
    let dir = tempfile::tempdir().unwrap();
    let path = partial_with_prefix(dir.path(), None, 0).await;
    let url = anon
        .resolve_url(RepoType::MODEL, "acme/tiny", "main", "missing.bin")
        .unwrap();
    let seen = Seen::default();
    let e = seen
        .download(
            anon.client(),
            &Source::new(url),
            PartialTarget::new(&path, 0, 10),
            &opts(4, MIB),
            &cancel,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NOT_FOUND, "{e}");
    assert!(e.message.contains("EntryNotFound"), "{}", e.message);
    assert!(
        e.message.starts_with("GET http://127.0.0.1:"),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lfs_batch_and_xet_token() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let api = api(&sim, true);
    let tiny = sim.info().repo("acme/tiny").unwrap();
    let wanted: Vec<&FileInfo> = tiny
        .files
        .iter()
        .filter(|f| f.storage != Storage::Regular)
        .collect();
    let mut objects: Vec<LfsObject> = wanted
        .iter()
        .map(|f| LfsObject {
            oid: f.sha256.clone(),
            size: f.size,
        })
        .collect();
    objects.push(LfsObject {
        oid: "0".repeat(64),
        size: 5,
    });
    sim.reset_counters();
    let got = api
        .lfs_batch(
            RepoType::MODEL,
            "acme/tiny",
            &objects,
            Some("main"),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(
        sim.counters().requests_to(Origin::Hub, "lfs_batch"),
        1,
        "one request for all"
    );
    assert_eq!(got.len(), objects.len());
    for (f, r) in wanted.iter().zip(&got) {
        let d = r.as_ref().unwrap();
        assert!(d.href.as_str().starts_with(sim.cdn_url()), "{}", d.href);
        assert!(d.href.as_str().contains(&f.sha256));
    }
    assert_eq!(
        got.last().unwrap().as_ref().unwrap_err().kind,
        ErrorKind::NOT_FOUND
    );

    let e = api_anon_batch(&sim, &objects[..1]).await;
    assert_eq!(e.kind, ErrorKind::AUTH, "{e}");

    let t = api
        .xet_read_token(RepoType::MODEL, "acme/tiny", "main", &cancel)
        .await
        .unwrap();
    assert_eq!(t.cas_url, sim.cas_url());
    assert!(!t.access_token.is_empty());
    assert!(t.exp > 0);
    assert!(!format!("{t:?}").contains(&t.access_token));
}

async fn api_anon_batch(sim: &HubSim, objects: &[LfsObject]) -> PluginError {
    api(sim, false)
        .lfs_batch(
            RepoType::MODEL,
            "acme/private",
            objects,
            None,
            &CancelToken::new(),
        )
        .await
        .unwrap_err()
}

/// Downloads `lfs.bin` of acme/tiny from its batch href, resuming at `offset`; `faults` are
/// installed after the preparation (so only the download meets them), their ids returned.
async fn download_lfs(
    sim: &HubSim,
    offset: u64,
    o: &DownloadOptions,
    cancel: &CancelToken,
    faults: Vec<Fault>,
) -> (
    Result<hubget_hub_http::Downloaded, PluginError>,
    Seen,
    tempfile::TempDir,
    FileInfo,
    Vec<u64>,
) {
    let api = api(sim, true);
    let f = sim.info().file("acme/tiny", "lfs.bin");
    let content = sim.content("acme/tiny", "lfs.bin");
    let dir = tempfile::tempdir().unwrap();
    let path = partial_with_prefix(dir.path(), Some(&content), offset).await;
    let href = api
        .lfs_batch(
            RepoType::MODEL,
            "acme/tiny",
            &[LfsObject {
                oid: f.sha256.clone(),
                size: f.size,
            }],
            None,
            cancel,
        )
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    sim.faults().clear();
    let ids = faults.into_iter().map(|f| sim.faults().add(f)).collect();
    sim.reset_counters();
    let source = Source {
        url: href.href,
        headers: href.headers,
        credential: api.credential().cloned(),
    };
    let seen = Seen::default();
    let t = Instant::now();
    let r = seen
        .download(
            api.client(),
            &source,
            PartialTarget::new(&path, offset, f.size),
            o,
            cancel,
        )
        .await;
    *seen.elapsed.lock().unwrap() = t.elapsed();
    if r.is_ok() {
        assert_eq!(sha256_file(&path), f.sha256, "content after download");
    }
    (r, seen, dir, f, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_download_resumes_from_offset_and_moves_only_the_rest() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let offset = MIB + 123;
    let (r, seen, _dir, f, _) =
        download_lfs(&sim, offset, &opts(4, 256 * 1024), &cancel, vec![]).await;
    let done = r.unwrap();
    let rest = f.size - offset;
    let c = sim.counters();
    assert_eq!(c.bytes_from(Origin::Cdn), rest, "only the rest moved");
    assert_eq!(done.bytes_transferred, rest);
    assert_eq!(done.origin, sim.cdn_url());
    assert_eq!(seen.file_bytes.load(Ordering::SeqCst), rest);
    assert_eq!(seen.net_bytes.load(Ordering::SeqCst), rest);
    let cps = seen.checkpoints.lock().unwrap().clone();
    assert_eq!(cps.last(), Some(&f.size));
    assert!(
        cps.windows(2).all(|w| w[0] < w[1]),
        "checkpoints advance: {cps:?}"
    );
    assert!(cps.iter().all(|&c| c > offset));
    let ranged = c
        .log
        .iter()
        .filter(|r| r.route == "lfs" && r.range.is_some())
        .count();
    assert!(ranged >= 12, "split into ranges: {ranged}");
    assert!(!c.auth_seen.cdn, "the Hub token never reaches the CDN");
    let starts: Vec<u64> = c
        .log
        .iter()
        .filter(|r| r.route == "lfs")
        .map(|r| {
            let range = r.range.as_deref().unwrap();
            range["bytes=".len()..range.find('-').unwrap()]
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        starts.iter().min(),
        Some(&offset),
        "nothing before the offset was asked for"
    );

    // Complete already: no request at all.
    sim.reset_counters();
    let (r, _, _dir, _, _) =
        download_lfs(&sim, f.size, &opts(4, 256 * 1024), &cancel, vec![]).await;
    assert_eq!(r.unwrap().bytes_transferred, 0);
    assert_eq!(sim.counters().bytes_from(Origin::Cdn), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_ranges_are_skipped_and_finished_ranges_reach_the_hook() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let api = api(&sim, true);
    let f = sim.info().file("acme/tiny", "lfs.bin");
    let content = sim.content("acme/tiny", "lfs.bin");
    let size = f.size;
    assert!(size > 2 * MIB, "lfs.bin is big enough for several ranges");
    let offset = 100_000;
    // Two ranges already on disk, one touching the end; the holes between hold zeros.
    let written = vec![size / 4..size / 2, size - 300_000..size];
    let mut on_disk = vec![0u8; size as usize];
    on_disk[..offset as usize].copy_from_slice(&content[..offset as usize]);
    for w in &written {
        on_disk[w.start as usize..w.end as usize]
            .copy_from_slice(&content[w.start as usize..w.end as usize]);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial");
    std::fs::write(&path, &on_disk).unwrap();
    let o = opts(4, 256 * 1024).with_written(written.clone());
    sim.reset_counters();
    let url = api
        .resolve_url(RepoType::MODEL, "acme/tiny", "main", "lfs.bin")
        .unwrap();
    let mut source = Source::new(url);
    source.credential = api.credential().cloned();
    let seen = Seen::default();
    let target = PartialTarget::new(&path, offset, size);
    let client = api.client();
    let done = seen
        .download(client, &source, target, &o, &cancel)
        .await
        .unwrap();
    assert_eq!(sha256_file(&path), f.sha256, "content after download");
    let holes = hubget_hub_http::holes(offset, size, &written);
    let missing: u64 = holes.iter().map(|h| h.end - h.start).sum();
    assert_eq!(holes, vec![offset..size / 4, size / 2..size - 300_000]);
    assert_eq!(
        sim.counters().bytes_from(Origin::Cdn),
        missing,
        "only the holes moved"
    );
    assert_eq!(done.bytes_transferred, missing);
    assert_eq!(seen.file_bytes.load(Ordering::SeqCst), missing);
    assert_eq!(seen.checkpoints.lock().unwrap().last(), Some(&size));
    // Written ranges name only fetched bytes (past the low watermark at the time).
    let got = hubget_hub_http::merge_ranges(seen.ranges.lock().unwrap().clone());
    assert!(
        got.iter()
            .all(|g| holes.iter().any(|h| h.start <= g.start && g.end <= h.end)),
        "reported {got:?}, holes {holes:?}"
    );

    // Everything past the offset written already: no request, checkpoint at the end.
    sim.reset_counters();
    let seen = Seen::default();
    let o = opts(4, 256 * 1024).with_written(std::iter::once(offset..size).collect());
    let done = seen
        .download(client, &source, target, &o, &cancel)
        .await
        .unwrap();
    assert_eq!(done.bytes_transferred, 0);
    assert_eq!(sim.counters().bytes_from(Origin::Cdn), 0);
    assert_eq!(seen.checkpoints.lock().unwrap().clone(), vec![size]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_download_is_one_request_and_regular_files_come_from_the_hub() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let (r, _, _dir, f, _) = download_lfs(&sim, 0, &opts(1, 8 * MIB), &cancel, vec![]).await;
    r.unwrap();
    let c = sim.counters();
    let reqs: Vec<_> = c.log.iter().filter(|r| r.route == "lfs").collect();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].range, None, "a whole file needs no Range");
    assert_eq!(c.bytes_from(Origin::Cdn), f.size);

    // A regular file through resolve, with the token: served by the Hub.
    let api = api(&sim, true);
    let tiny = sim.info().repo("acme/tiny").unwrap();
    let cfg = file(tiny, "config.json");
    let dir = tempfile::tempdir().unwrap();
    let path = partial_with_prefix(dir.path(), None, 0).await;
    let url = api
        .resolve_url(RepoType::MODEL, "acme/tiny", &tiny.head, &cfg.path)
        .unwrap();
    let seen = Seen::default();
    let mut source = Source::new(url);
    source.credential = api.credential().cloned();
    let done = seen
        .download(
            api.client(),
            &source,
            PartialTarget::new(&path, 0, cfg.size),
            &opts(4, MIB),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(done.origin, sim.hub_url());
    assert_eq!(sha256_file(&path), cfg.sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_redirect_keeps_the_token_on_the_hub_only() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let api = api(&sim, true);
    let gated = sim.info().repo("acme/gated").unwrap();
    let f = gated
        .files
        .iter()
        .find(|f| f.storage != Storage::Regular)
        .expect("an LFS/Xet file");
    let dir = tempfile::tempdir().unwrap();
    let path = partial_with_prefix(dir.path(), None, 0).await;
    let mut source = Source::new(
        api.resolve_url(RepoType::MODEL, "acme/gated", "main", &f.path)
            .unwrap(),
    );
    source.credential = api.credential().cloned();
    sim.reset_counters();
    let seen = Seen::default();
    let done = seen
        .download(
            api.client(),
            &source,
            PartialTarget::new(&path, 0, f.size),
            &opts(3, 512 * 1024),
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(sha256_file(&path), f.sha256);
    assert_eq!(
        done.origin,
        sim.cdn_url(),
        "bytes came from the CDN after the 302"
    );
    let c = sim.counters();
    assert!(c.auth_seen.hub, "the gated resolve needed the token");
    assert!(
        !c.auth_seen.cdn,
        "the token was dropped on the cross-origin redirect"
    );
    assert!(
        c.log
            .iter()
            .filter(|r| r.origin == Origin::Hub)
            .all(|r| r.auth)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_cut_connections_recover() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let faults = vec![
        Fault::new(Origin::Cdn, "/lfs/", FaultAction::Status { code: 503 }).times(3),
        Fault::new(
            Origin::Cdn,
            "/lfs/",
            FaultAction::CutAfter { bytes: 100_000 },
        )
        .times(3),
    ];
    let (r, seen, _dir, f, ids) =
        download_lfs(&sim, 0, &opts(4, 512 * 1024), &cancel, faults).await;
    let done = r.unwrap();
    assert_eq!(sim.faults().fired(ids[0]), 3);
    assert_eq!(sim.faults().fired(ids[1]), 3);
    assert_eq!(
        seen.file_bytes.load(Ordering::SeqCst),
        f.size,
        "each byte reported once"
    );
    // Cut ranges resumed where they stopped: nothing was fetched twice.
    assert_eq!(done.bytes_transferred, f.size);
    let served: u64 = sim
        .counters()
        .log
        .iter()
        .filter(|r| r.route == "lfs" && matches!(r.status, 200 | 206))
        .map(|r| r.bytes)
        .sum();
    assert_eq!(served, f.size, "cut ranges resumed: no byte served twice");

    // Wrong Content-Length is caught and retried.
    let wrong = vec![
        Fault::new(
            Origin::Cdn,
            "/lfs/",
            FaultAction::WrongContentLength { delta: 10 },
        )
        .times(1),
    ];
    let (r, _, _dir, _, ids) = download_lfs(&sim, 0, &opts(4, 512 * 1024), &cancel, wrong).await;
    r.unwrap();
    assert_eq!(sim.faults().fired(ids[0]), 1);

    // A fault that never ends exhausts the attempts and is classified.
    let forever = vec![Fault::always(
        Origin::Cdn,
        "/lfs/",
        FaultAction::Status { code: 502 },
    )];
    let (r, _, _dir, _, _) = download_lfs(&sim, 0, &opts(4, 512 * 1024), &cancel, forever).await;
    let e = r.unwrap_err();
    assert_eq!(
        (e.kind, e.retryable, e.http_status),
        (ErrorKind::SERVER, true, 502)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_sent_as_retry_events() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let o = opts(1, 8 * MIB);
    let faults = vec![Fault::new(Origin::Cdn, "/lfs/", FaultAction::Status { code: 503 }).times(2)];
    let (r, seen, _dir, f, ids) = download_lfs(&sim, 0, &o, &cancel, faults).await;
    r.unwrap();
    assert_eq!(sim.faults().fired(ids[0]), 2);
    let notes = seen.retries.lock().unwrap().clone();
    assert_eq!(notes.len(), 2, "one note per retry: {notes:?}");
    for (i, n) in notes.iter().enumerate() {
        assert_eq!(n.attempt, Some((i as u32 + 2, 5)));
        let delay = n.delay.expect("a retry says its wait");
        let want = format!(
            "GET {}/lfs/{}: 503 Service Unavailable; retrying in {} ms (attempt {}/5)",
            sim.cdn_url(),
            f.sha256,
            delay.as_millis(),
            i + 2
        );
        assert_eq!(n.message(), want);
    }

    // No retry, no note.
    let (r, seen, ..) = download_lfs(&sim, 0, &o, &cancel, vec![]).await;
    r.unwrap();
    assert!(seen.retries.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_retry_after_is_honoured() {
    let sim = start().await;
    let cancel = CancelToken::new();
    let limited = vec![
        Fault::new(
            Origin::Cdn,
            "/lfs/",
            FaultAction::RateLimited {
                retry_after_secs: 1,
            },
        )
        .times(1),
    ];
    let (r, seen, _dir, _, ids) = download_lfs(&sim, 0, &opts(1, 8 * MIB), &cancel, limited).await;
    r.unwrap();
    assert_eq!(sim.faults().fired(ids[0]), 1);
    let c = sim.counters();
    let lfs: Vec<_> = c.log.iter().filter(|r| r.route == "lfs").collect();
    assert_eq!(
        lfs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 200]
    );
    let waited = *seen.elapsed.lock().unwrap();
    assert!(
        waited >= Duration::from_secs(1),
        "waited for Retry-After: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_returns_promptly_during_a_stall() {
    let sim = start().await;
    let stall = vec![Fault::new(
        Origin::Cdn,
        "/lfs/",
        FaultAction::Stall {
            secs: 20.0,
            after_bytes: Some(1000),
        },
    )];
    let cancel = CancelToken::new();
    let c2 = cancel.clone();
    let t = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c2.cancel();
    });
    let (r, seen, _dir, _, _) = download_lfs(&sim, 0, &opts(4, 512 * 1024), &cancel, stall).await;
    canceller.await.unwrap();
    assert_eq!(r.unwrap_err().kind, ErrorKind::CANCELLED);
    let cps = seen.checkpoints.lock().unwrap().clone();
    assert!(
        cps.last().is_some_and(|&n| n >= 1000),
        "the low watermark is reported on cancel: {cps:?}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

/// A raw HTTP/1.1 server that always answers 200 with the whole body, ignoring `Range`.
async fn range_ignoring_server(body: Vec<u8>) -> (Url, std::sync::Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/blob", listener.local_addr().unwrap())).unwrap();
    let requests = std::sync::Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_range_still_yields_the_right_file() {
    let body: Vec<u8> = (0..3 * MIB + 5).map(|i| (i * 7 % 251) as u8).collect();
    let (url, requests) = range_ignoring_server(body.clone()).await;
    let client = HttpClient::new(&HostSettings::default()).unwrap();
    let cancel = CancelToken::new();
    for (offset, connections) in [(0u64, 4u32), (MIB + 17, 4), (MIB + 17, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p");
        std::fs::write(&path, &body[..offset as usize]).unwrap();
        let seen = Seen::default();
        let before = requests.load(Ordering::SeqCst);
        let done = seen
            .download(
                &client,
                &Source::new(url.clone()),
                PartialTarget::new(&path, offset, body.len() as u64),
                &opts(connections, 256 * 1024),
                &cancel,
            )
            .await
            .unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        assert_eq!(std::fs::read(&path).unwrap(), body, "offset {offset}");
        let rest = body.len() as u64 - offset;
        assert_eq!(
            seen.file_bytes.load(Ordering::SeqCst),
            rest,
            "file bytes reported once"
        );
        assert!(done.bytes_transferred >= rest);
        assert_eq!(
            seen.checkpoints.lock().unwrap().last(),
            Some(&(body.len() as u64))
        );
        let used = requests.load(Ordering::SeqCst) - before;
        assert!(used <= 1 + u64::from(connections), "{used} requests");
    }
}
