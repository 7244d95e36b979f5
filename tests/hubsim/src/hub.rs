//! The Hub origin (resolve, API, tree, paths-info, xet-read-token, LFS batch, refs, commits)
//! and the CDN origin (`/lfs/<sha256>`, `/xet-bridge/<xet hash>`).

// Handlers return ready-made error responses; boxing them buys nothing here.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Uri, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

use crate::fixtures::{Commit, FileEntry, Repo, RepoKind, Storage, Store};
use crate::net::{RouteName, serve_bytes};

/// State shared by the Hub and CDN handlers.
pub(crate) struct HubState {
    pub store: Store,
    pub hub_url: String,
    pub cdn_url: String,
    pub cas_url: String,
    pub token: String,
    pub tree_page_size: usize,
}

const PATH_SEG: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, PATH_SEG).to_string()
}

fn enc_path(p: &str) -> String {
    p.split('/').map(enc).collect::<Vec<_>>().join("/")
}

fn dec(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn with_route(mut r: Response<Body>, route: &'static str) -> Response<Body> {
    r.extensions_mut().insert(RouteName(route));
    r
}

fn json_resp(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// An error as the Hub gives it: status, `X-Error-Code`, `X-Error-Message`, JSON body.
fn hub_error(status: StatusCode, code: &str, msg: &str, commit: Option<&str>) -> Response<Body> {
    let mut r = json_resp(status, &json!({ "error": msg }));
    let h = r.headers_mut();
    if !code.is_empty() {
        h.insert("x-error-code", HeaderValue::from_str(code).expect("ascii"));
    }
    if let Ok(v) = HeaderValue::from_str(msg) {
        h.insert("x-error-message", v);
    }
    if let Some(c) = commit {
        h.insert("x-repo-commit", HeaderValue::from_str(c).expect("hex"));
    }
    r
}

fn not_found() -> Response<Body> {
    json_resp(StatusCode::NOT_FOUND, &json!({ "error": "Not Found" }))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HubState {
    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == self.token)
    }

    /// Look a repo up and check read access to its metadata.
    fn repo(&self, kind: RepoKind, id: &str, headers: &HeaderMap) -> Result<&Repo, Response<Body>> {
        match self.store.repo(kind, id) {
            Some(r) if !r.private || self.authorized(headers) => Ok(r),
            _ => Err(hub_error(
                StatusCode::UNAUTHORIZED,
                "RepoNotFound",
                crate::REPO_NOT_FOUND,
                None,
            )),
        }
    }

    /// File downloads of gated repos need the token.
    fn check_gated(&self, repo: &Repo, headers: &HeaderMap) -> Result<(), Response<Body>> {
        if repo.gated && !self.authorized(headers) {
            return Err(hub_error(
                StatusCode::UNAUTHORIZED,
                "GatedRepo",
                &format!(
                    "Access to model {} is restricted. You must have access to it and be authenticated to access it. Please log in.",
                    repo.id
                ),
                None,
            ));
        }
        Ok(())
    }

    fn rev_not_found(rev: &str) -> Response<Body> {
        hub_error(
            StatusCode::NOT_FOUND,
            "RevisionNotFound",
            &format!("Invalid rev id: {rev}"),
            None,
        )
    }

    fn lfs_json(f: &FileEntry) -> Option<Value> {
        f.pointer
            .as_ref()
            .map(|p| json!({ "oid": f.sha256, "size": f.size, "pointerSize": p.len() }))
    }

    fn file_entry(f: &FileEntry, commit: &Commit, expand: bool) -> Value {
        let mut v = json!({ "type": "file", "oid": f.git_oid, "size": f.size, "path": f.path });
        if let Some(l) = Self::lfs_json(f) {
            v["lfs"] = l;
        }
        if let Some(h) = &f.xet_hash {
            v["xetHash"] = json!(h);
        }
        if expand {
            v["lastCommit"] =
                json!({ "id": commit.sha, "title": commit.message, "date": commit.date });
            v["securityFileStatus"] = json!({ "status": "safe" });
        }
        v
    }

    fn dir_entry(path: &str, commit: &Commit, expand: bool) -> Value {
        let oid = crate::fixtures::sha1_hex(format!("tree {} {path}", commit.sha).as_bytes());
        let mut v = json!({ "type": "directory", "oid": oid, "size": 0, "path": path });
        if expand {
            v["lastCommit"] =
                json!({ "id": commit.sha, "title": commit.message, "date": commit.date });
        }
        v
    }

    /// Directories of a commit (only for paths made of ordinary components).
    fn dirs(commit: &Commit) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for p in commit.files.keys() {
            let parts: Vec<&str> = p.split('/').collect();
            if parts
                .iter()
                .any(|c| c.is_empty() || *c == "." || *c == "..")
            {
                continue;
            }
            for i in 1..parts.len() {
                out.insert(parts[..i].join("/"));
            }
        }
        out
    }

    /// Entries (dirs first, then files, both sorted) under `base` ("" = root).
    fn tree_entries(
        commit: &Commit,
        base: &str,
        recursive: bool,
        expand: bool,
    ) -> Option<Vec<Value>> {
        let prefix = if base.is_empty() {
            String::new()
        } else {
            format!("{base}/")
        };
        let dirs = Self::dirs(commit);
        if !base.is_empty() && !dirs.contains(base) {
            return None;
        }
        let direct = |p: &str| -> bool {
            if !p.starts_with(&prefix) || p.len() == prefix.len() {
                return false;
            }
            recursive || !p[prefix.len()..].contains('/')
        };
        let mut out: Vec<Value> = dirs
            .iter()
            .filter(|d| direct(d))
            .map(|d| Self::dir_entry(d, commit, expand))
            .collect();
        for f in commit.files.values() {
            let ordinary = Self::dirs_ok(&f.path);
            let listed = if ordinary {
                direct(&f.path)
            } else {
                base.is_empty()
            };
            if listed {
                out.push(Self::file_entry(f, commit, expand));
            }
        }
        Some(out)
    }

    fn dirs_ok(p: &str) -> bool {
        !p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    }

    fn info_json(&self, repo: &Repo, commit: &Commit, blobs: bool) -> Value {
        let siblings: Vec<Value> = commit
            .files
            .values()
            .map(|f| {
                let mut s = json!({ "rfilename": f.path });
                if blobs {
                    s["size"] = json!(f.size);
                    s["blobId"] = json!(f.git_oid);
                    if let Some(p) = &f.pointer {
                        s["lfs"] =
                            json!({ "sha256": f.sha256, "size": f.size, "pointerSize": p.len() });
                    }
                }
                s
            })
            .collect();
        let owner = repo.id.split('/').next().unwrap_or_default();
        let mut v = json!({
            "_id": &crate::fixtures::sha1_hex(repo.id.as_bytes())[..24],
            "id": repo.id,
            "author": owner,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.commits[0].date,
            "private": repo.private,
            "gated": if repo.gated { json!("auto") } else { json!(false) },
            "disabled": false,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": commit.files.values().map(|f| f.size).sum::<u64>(),
        });
        match repo.kind {
            RepoKind::Model => v["modelId"] = json!(repo.id),
            RepoKind::Dataset | RepoKind::Kernel => {}
            RepoKind::Space => {
                v["sdk"] = json!("gradio");
                v["runtime"] = json!({ "stage": "RUNNING", "hardware": { "current": "cpu-basic", "requested": "cpu-basic" } });
            }
        }
        v
    }

    fn xet_token_url(&self, repo: &Repo, rev: &str) -> String {
        format!(
            "{}/api/{}/{}/xet-read-token/{}",
            self.hub_url,
            repo.kind.plural(),
            repo.id,
            enc(rev)
        )
    }

    /// Split `segs` into (revision, rest) by the shortest prefix that resolves.
    fn split_rev<'r>(repo: &'r Repo, segs: &[String]) -> Option<(String, &'r Commit, usize)> {
        for i in 1..=segs.len() {
            let rev = segs[..i].join("/");
            if let Some(c) = repo.resolve(&rev) {
                return Some((rev, c, i));
            }
        }
        None
    }
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (dec(&k.replace('+', " ")), dec(&v.replace('+', " ")))
        })
        .collect()
}

fn truthy(v: Option<&str>) -> bool {
    matches!(
        v.map(str::to_ascii_lowercase).as_deref(),
        Some("1" | "true" | "yes")
    )
}

/// The Hub router: one fallback handler that parses paths itself (revisions may contain `/`).
pub(crate) fn hub_router(state: Arc<HubState>) -> Router {
    Router::new().fallback(hub_handler).with_state(state)
}

/// The CDN router.
pub(crate) fn cdn_router(state: Arc<HubState>) -> Router {
    Router::new().fallback(cdn_handler).with_state(state)
}

async fn cdn_handler(
    State(st): State<Arc<HubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    if method != Method::GET && method != Method::HEAD {
        return not_found();
    }
    let path = uri.path();
    let (data, route, etag) = if let Some(sha) = path.strip_prefix("/lfs/") {
        (st.store.by_sha256.get(sha), "lfs", sha.to_string())
    } else if let Some(h) = path.strip_prefix("/xet-bridge/") {
        match st.store.by_xet_hash.get(h) {
            Some((data, sha)) => (Some(data), "xet_bridge", sha.clone()),
            None => (None, "xet_bridge", String::new()),
        }
    } else {
        (None, "other", String::new())
    };
    let Some(data) = data else {
        return with_route(not_found(), route);
    };
    let mut h = HeaderMap::new();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{etag}\"")).expect("hex"),
    );
    with_route(serve_bytes(&method, &headers, data.clone(), h), route)
}

async fn hub_handler(
    State(st): State<Arc<HubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let segs: Vec<String> = uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .map(dec)
        .collect();
    if segs.first().map(String::as_str) == Some("api") {
        return api(&st, &method, &uri, &headers, &segs[1..], &body);
    }
    // [datasets|spaces|kernels/]owner/name/...
    let (kind, rest) = match segs.first().map(String::as_str) {
        Some("datasets") => (RepoKind::Dataset, &segs[1..]),
        Some("spaces") => (RepoKind::Space, &segs[1..]),
        Some("kernels") => (RepoKind::Kernel, &segs[1..]),
        _ => (RepoKind::Model, &segs[..]),
    };
    if rest.len() >= 3 && rest[2] == "resolve" && (method == Method::GET || method == Method::HEAD)
    {
        let id = format!("{}/{}", rest[0], rest[1]);
        return with_route(
            resolve(&st, &method, &headers, kind, &id, &rest[3..]),
            "resolve",
        );
    }
    if rest.len() == 6
        && rest[1].ends_with(".git")
        && rest[2..] == ["info", "lfs", "objects", "batch"]
        && method == Method::POST
    {
        let id = format!("{}/{}", rest[0], rest[1].trim_end_matches(".git"));
        return with_route(lfs_batch(&st, &headers, kind, &id, &body), "lfs_batch");
    }
    not_found()
}

fn resolve(
    st: &HubState,
    method: &Method,
    headers: &HeaderMap,
    kind: RepoKind,
    id: &str,
    segs: &[String],
) -> Response<Body> {
    let repo = match st.repo(kind, id, headers) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Err(e) = st.check_gated(repo, headers) {
        return e;
    }
    let Some((_rev, commit, used)) = HubState::split_rev(repo, segs) else {
        return HubState::rev_not_found(segs.first().map_or("", String::as_str));
    };
    let path = segs[used..].join("/");
    let Some(f) = commit.files.get(&path) else {
        return hub_error(
            StatusCode::NOT_FOUND,
            "EntryNotFound",
            &format!("{path} does not exist on \"{}\"", commit.sha),
            Some(&commit.sha),
        );
    };
    let mut h = HeaderMap::new();
    h.insert(
        "x-repo-commit",
        HeaderValue::from_str(&commit.sha).expect("hex"),
    );
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{}\"", f.git_oid)).expect("hex"),
    );
    match f.storage {
        Storage::Regular => {
            let inm = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if inm
                .split(',')
                .any(|t| t.trim().trim_start_matches("W/").trim_matches('"') == f.git_oid)
            {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                *r.headers_mut() = h;
                return r;
            }
            let ct = if f.path.ends_with(".json") {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            serve_bytes(method, headers, f.data.clone(), h)
        }
        Storage::Lfs | Storage::Xet => {
            let location = match (&f.storage, &f.xet_hash) {
                (Storage::Xet, Some(xh)) => format!("{}/xet-bridge/{xh}", st.cdn_url),
                _ => format!("{}/lfs/{}", st.cdn_url, f.sha256),
            };
            h.insert(
                header::LOCATION,
                HeaderValue::from_str(&location).expect("url"),
            );
            h.insert(
                "x-linked-etag",
                HeaderValue::from_str(&format!("\"{}\"", f.sha256)).expect("hex"),
            );
            h.insert("x-linked-size", HeaderValue::from(f.size));
            if let Some(xh) = &f.xet_hash {
                h.insert("x-xet-hash", HeaderValue::from_str(xh).expect("hex"));
                let link = format!(
                    "<{}>; rel=\"xet-auth\", <{}/v1/reconstructions/{xh}>; rel=\"xet-reconstruction-info\"",
                    st.xet_token_url(repo, &commit.sha),
                    st.cas_url
                );
                h.insert(header::LINK, HeaderValue::from_str(&link).expect("url"));
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::FOUND;
            *r.headers_mut() = h;
            r
        }
    }
}

fn lfs_batch(
    st: &HubState,
    headers: &HeaderMap,
    kind: RepoKind,
    id: &str,
    body: &[u8],
) -> Response<Body> {
    let lfs_json = |status: StatusCode, v: Value| {
        let mut r = json_resp(status, &v);
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.git-lfs+json"),
        );
        r
    };
    let repo = match st.repo(kind, id, headers) {
        Ok(r) => r,
        Err(_) => {
            return lfs_json(
                StatusCode::UNAUTHORIZED,
                json!({ "message": "Repository not found" }),
            );
        }
    };
    if repo.gated && !st.authorized(headers) {
        return lfs_json(
            StatusCode::UNAUTHORIZED,
            json!({ "message": "Access to this repository is restricted" }),
        );
    }
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return lfs_json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "message": "invalid JSON body" }),
        );
    };
    if req["operation"].as_str() != Some("download") {
        return lfs_json(
            StatusCode::FORBIDDEN,
            json!({ "message": "hubsim only serves downloads" }),
        );
    }
    let known = |oid: &str| {
        repo.commits.iter().any(|c| {
            c.files
                .values()
                .any(|f| f.pointer.is_some() && f.sha256 == oid)
        })
    };
    let objects: Vec<Value> = req["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            let oid = o["oid"].as_str().unwrap_or_default().to_string();
            let size = o["size"].as_u64().unwrap_or(0);
            match st.store.by_sha256.get(&oid) {
                Some(d) if known(&oid) => json!({
                    "oid": oid, "size": d.len(), "authenticated": true,
                    "actions": { "download": {
                        "href": format!("{}/lfs/{oid}", st.cdn_url),
                        "header": {},
                        "expires_in": 3600,
                    }}
                }),
                _ => json!({ "oid": oid, "size": size, "error": { "code": 404, "message": "Object does not exist" } }),
            }
        })
        .collect();
    lfs_json(
        StatusCode::OK,
        json!({ "transfer": "basic", "objects": objects, "hash_algo": "sha256" }),
    )
}

fn api(
    st: &HubState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    segs: &[String],
    body: &[u8],
) -> Response<Body> {
    let Some(kind) = segs.first().and_then(|s| RepoKind::from_plural(s)) else {
        return not_found();
    };
    if segs.len() < 3 {
        return not_found();
    }
    let id = format!("{}/{}", segs[1], segs[2]);
    let rest = &segs[3..];
    let q = query_pairs(uri);
    let qget = |k: &str| q.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str());
    let op = rest.first().map(String::as_str).unwrap_or("");
    let route = match op {
        "" | "revision" => "api_info",
        "tree" => "tree",
        "paths-info" => "paths_info",
        "xet-read-token" => "xet_read_token",
        "refs" => "refs",
        "commits" => "commits",
        _ => return not_found(),
    };
    let repo = match st.repo(kind, &id, headers) {
        Ok(r) => r,
        Err(e) => return with_route(e, route),
    };
    let resolve_rev = |segs: &[String]| -> Result<(&Commit, usize), Response<Body>> {
        if segs.is_empty() {
            return Ok((repo.head(), 0));
        }
        HubState::split_rev(repo, segs)
            .map(|(_, c, n)| (c, n))
            .ok_or_else(|| HubState::rev_not_found(&segs[0]))
    };
    let resp = match (op, method) {
        ("", &Method::GET) | ("revision", &Method::GET) => {
            match resolve_rev(if op.is_empty() { &[] } else { &rest[1..] }) {
                Ok((c, _)) => json_resp(
                    StatusCode::OK,
                    &st.info_json(repo, c, truthy(qget("blobs"))),
                ),
                Err(e) => e,
            }
        }
        ("tree", &Method::GET) => match resolve_rev(&rest[1..]) {
            Ok((c, n)) => {
                let base = rest[1 + n..].join("/");
                let base = base.trim_end_matches('/');
                let recursive = truthy(qget("recursive"));
                let expand = truthy(qget("expand"));
                match HubState::tree_entries(c, base, recursive, expand) {
                    None => hub_error(
                        StatusCode::NOT_FOUND,
                        "EntryNotFound",
                        &format!("{base} does not exist on \"{}\"", c.sha),
                        Some(&c.sha),
                    ),
                    Some(all) => {
                        let page = if expand {
                            st.tree_page_size.min(50)
                        } else {
                            st.tree_page_size
                        }
                        .max(1);
                        let start = qget("cursor")
                            .and_then(|c| c.parse::<usize>().ok())
                            .unwrap_or(0)
                            .min(all.len());
                        let end = (start + page).min(all.len());
                        let mut r =
                            json_resp(StatusCode::OK, &Value::Array(all[start..end].to_vec()));
                        if end < all.len() {
                            let mut next = format!(
                                "{}/api/{}/{}/tree/{}",
                                st.hub_url,
                                kind.plural(),
                                repo.id,
                                enc(&c.sha)
                            );
                            if !base.is_empty() {
                                next.push('/');
                                next.push_str(&enc_path(base));
                            }
                            next.push_str(&format!(
                                "?recursive={recursive}&expand={expand}&cursor={end}"
                            ));
                            r.headers_mut().insert(
                                header::LINK,
                                HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
                                    .expect("url"),
                            );
                        }
                        r
                    }
                }
            }
            Err(e) => e,
        },
        ("paths-info", &Method::POST) => match resolve_rev(&rest[1..]) {
            Ok((c, _)) => {
                let ct = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let (paths, expand) = parse_paths_info(ct, body);
                let dirs = HubState::dirs(c);
                let out: Vec<Value> = paths
                    .iter()
                    .filter_map(|p| {
                        let p = p.trim_end_matches('/');
                        if let Some(f) = c.files.get(p) {
                            Some(HubState::file_entry(f, c, expand))
                        } else if dirs.contains(p) {
                            Some(HubState::dir_entry(p, c, expand))
                        } else {
                            None
                        }
                    })
                    .collect();
                json_resp(StatusCode::OK, &Value::Array(out))
            }
            Err(e) => e,
        },
        ("xet-read-token", &Method::GET) => {
            if let Err(e) = st.check_gated(repo, headers) {
                return with_route(e, route);
            }
            match resolve_rev(&rest[1..]) {
                Ok(_) => {
                    let exp = now_secs() + 24 * 3600;
                    let token = format!(
                        "hubsim-xet-read-{}",
                        crate::fixtures::sha1_hex(repo.id.as_bytes())
                    );
                    let mut r = json_resp(
                        StatusCode::OK,
                        &json!({ "accessToken": token, "exp": exp, "casUrl": st.cas_url }),
                    );
                    let h = r.headers_mut();
                    h.insert(
                        "x-xet-cas-url",
                        HeaderValue::from_str(&st.cas_url).expect("url"),
                    );
                    h.insert(
                        "x-xet-access-token",
                        HeaderValue::from_str(&token).expect("ascii"),
                    );
                    h.insert("x-xet-token-expiration", HeaderValue::from(exp));
                    r
                }
                Err(e) => e,
            }
        }
        ("refs", &Method::GET) => {
            let r = |kind: &str, name: &str, sha: &str| json!({ "name": name, "ref": format!("{kind}{name}"), "targetCommit": sha });
            let branches: Vec<Value> = repo
                .branches
                .iter()
                .map(|(b, s)| r("refs/heads/", b, s))
                .collect();
            let tags: Vec<Value> = repo
                .tags
                .iter()
                .map(|(t, s)| r("refs/tags/", t, s))
                .collect();
            let prs: Vec<Value> = repo
                .prs
                .iter()
                .map(|(n, s)| json!({ "name": format!("refs/pr/{n}"), "ref": format!("refs/pr/{n}"), "targetCommit": s }))
                .collect();
            let mut v = json!({ "branches": branches, "converts": [], "tags": tags });
            if truthy(qget("include_prs")) {
                v["pullRequests"] = json!(prs);
            }
            json_resp(StatusCode::OK, &v)
        }
        ("commits", &Method::GET) => match resolve_rev(&rest[1..]) {
            Ok((c, _)) => {
                let idx = repo
                    .commits
                    .iter()
                    .position(|x| x.sha == c.sha)
                    .unwrap_or(0);
                let list: Vec<Value> = repo.commits[..=idx]
                    .iter()
                    .rev()
                    .map(|c| {
                        json!({ "id": c.sha, "title": c.message, "message": "", "date": c.date,
                                "authors": [{ "user": repo.id.split('/').next().unwrap_or_default() }] })
                    })
                    .collect();
                json_resp(StatusCode::OK, &Value::Array(list))
            }
            Err(e) => e,
        },
        _ => not_found(),
    };
    with_route(resp, route)
}

fn parse_paths_info(content_type: &str, body: &[u8]) -> (Vec<String>, bool) {
    if content_type.contains("json") {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let paths = v["paths"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let expand = v["expand"].as_bool().unwrap_or(false);
        return (paths, expand);
    }
    let s = String::from_utf8_lossy(body);
    let mut paths = Vec::new();
    let mut expand = false;
    for kv in s.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let (k, v) = (dec(&k.replace('+', " ")), dec(&v.replace('+', " ")));
        match k.as_str() {
            "paths" | "paths[]" => paths.push(v),
            "expand" => expand = truthy(Some(&v)),
            _ => {}
        }
    }
    (paths, expand)
}
