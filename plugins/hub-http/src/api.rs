//! The Hub API client: revision → commit, the recursive tree into a [`Manifest`], the
//! xet-read-token, `resolve` URLs and the Git LFS batch API.
//!
//! Every request goes through [`HttpClient::send`] with retries; the token is attached only to
//! the endpoint's origin (so a `Link: rel="next"` or a redirect to another host never sees it).

use std::time::{Duration, Instant};

use bytes::Bytes;
use hubget_plugin_api::std_types::{ROption, RString};
use hubget_plugin_api::{
    CancelToken, ErrorKind, FetchBatch, FetchItem, Manifest, ManifestFile, PluginError, RepoType,
    ResolveRequest, is_commit_sha,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, LINK};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use crate::client::{Credential, HttpClient, Request};
use crate::download::Source;
use crate::error::{classify, protocol};
use crate::retry::with_retry;

/// The Git LFS media type.
pub const LFS_MEDIA_TYPE: &str = "application/vnd.git-lfs+json";

/// Objects per batch request (the Git LFS reference client sends 100; the Hub accepts more).
pub const LFS_BATCH_LIMIT: usize = 1000;

/// Everything but unreserved characters, like `encodeURIComponent`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes one path component, `/` included (revisions such as `refs/pr/1`).
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// Percent-encodes a `/`-separated path segment by segment.
pub fn encode_path(s: &str) -> String {
    s.split('/')
        .map(encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `s` is a Xet hash: exactly 64 lowercase hex digits.
pub fn is_xet_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The `rel="next"` target of a `Link` header, if any.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(LINK) {
        let Ok(value) = value.to_str() else { continue };
        for part in split_links(value) {
            let part = part.trim();
            let Some(end) = part.find('>') else { continue };
            if !part.starts_with('<') {
                continue;
            }
            let target = &part[1..end];
            let is_next = part[end + 1..].split(';').any(|param| {
                let mut kv = param.splitn(2, '=');
                let key = kv.next().unwrap_or("").trim();
                let val = kv.next().unwrap_or("").trim().trim_matches('"');
                key.eq_ignore_ascii_case("rel")
                    && val
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
            if is_next {
                return Some(target.to_owned());
            }
        }
    }
    None
}

/// Splits a `Link` value at the commas between links (not those inside `<...>` or quotes).
fn split_links(value: &str) -> Vec<&str> {
    let (mut parts, mut start, mut in_url, mut in_quote) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quote => in_url = true,
            '>' if !in_quote => in_url = false,
            '"' if !in_url => in_quote = !in_quote,
            ',' if !in_url && !in_quote => {
                parts.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&value[start..]);
    parts
}

/// A token for the Xet CAS, from `/api/{type}s/{repo}/xet-read-token/{rev}`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct XetToken {
    /// The CAS bearer token.
    pub access_token: String,
    /// When it expires, in Unix seconds.
    pub exp: u64,
    /// The CAS base URL.
    pub cas_url: String,
}

impl std::fmt::Debug for XetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XetToken")
            .field("access_token", &"<redacted>")
            .field("exp", &self.exp)
            .field("cas_url", &self.cas_url)
            .finish()
    }
}

/// One object to ask the Git LFS batch API for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LfsObject {
    /// The sha256 of the content.
    pub oid: String,
    /// The size in bytes.
    pub size: u64,
}

/// Where to download one LFS object: the batch response's `actions.download`.
#[derive(Clone)]
pub struct LfsDownload {
    /// The URL to GET (often signed: never log it unredacted).
    pub href: Url,
    /// Headers to send to `href` only.
    pub headers: HeaderMap,
    /// When the href stops working (from `expires_in`), if the server said.
    pub expires_at: Option<Instant>,
}

impl std::fmt::Debug for LfsDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LfsDownload")
            .field("href", &crate::redact_url(&self.href))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Deserialize)]
struct RevisionInfo {
    sha: String,
}

#[derive(Deserialize)]
struct TreeEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    oid: String,
    #[serde(default)]
    lfs: Option<TreeLfs>,
    #[serde(default, rename = "xetHash")]
    xet_hash: Option<String>,
}

#[derive(Deserialize)]
struct TreeLfs {
    oid: String,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Serialize)]
struct BatchRequest<'a> {
    operation: &'static str,
    transfers: [&'static str; 1],
    objects: &'a [LfsObject],
    hash_algo: &'static str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<BatchRef<'a>>,
}

#[derive(Serialize)]
struct BatchRef<'a> {
    name: &'a str,
}

#[derive(Deserialize)]
struct BatchResponse {
    #[serde(default)]
    transfer: Option<String>,
    objects: Vec<BatchObject>,
}

#[derive(Deserialize)]
struct BatchObject {
    oid: String,
    #[serde(default)]
    actions: Option<BatchActions>,
    #[serde(default)]
    error: Option<BatchError>,
}

#[derive(Deserialize)]
struct BatchActions {
    download: Option<BatchAction>,
}

#[derive(Deserialize)]
struct BatchAction {
    href: String,
    #[serde(default)]
    header: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct BatchError {
    code: u16,
    #[serde(default)]
    message: String,
}

/// A client of one Hub-compatible endpoint (the Hub, or a mirror that speaks its API).
#[derive(Clone, Debug)]
pub struct HubApi {
    endpoint: Url,
    credential: Option<Credential>,
    client: HttpClient,
}

impl HubApi {
    /// A client of `endpoint` (e.g. `https://huggingface.co`, a trailing `/` is ignored) that
    /// sends `token` to that origin only.
    pub fn new(
        endpoint: &str,
        token: Option<&str>,
        client: HttpClient,
    ) -> Result<Self, PluginError> {
        let trimmed = endpoint.trim().trim_end_matches('/');
        let mut url = Url::parse(&format!("{trimmed}/")).map_err(|e| {
            PluginError::new(
                ErrorKind::CONFIG,
                format!("invalid endpoint `{trimmed}`: {e}"),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(PluginError::new(
                ErrorKind::CONFIG,
                format!("invalid endpoint `{trimmed}`: not an http(s) URL"),
            ));
        }
        url.set_query(None);
        url.set_fragment(None);
        let credential = match token.map(str::trim).filter(|t| !t.is_empty()) {
            Some(token) => Some(Credential::new(&url, token)?),
            None => None,
        };
        Ok(Self {
            endpoint: url,
            credential,
            client,
        })
    }

    /// The endpoint, with a trailing `/`.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The token bound to the endpoint's origin, if any.
    pub fn credential(&self) -> Option<&Credential> {
        self.credential.as_ref()
    }

    /// The HTTP client.
    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    fn join(&self, path: &str) -> Result<Url, PluginError> {
        self.endpoint.join(path).map_err(|e| {
            PluginError::new(ErrorKind::CONFIG, format!("invalid URL path `{path}`: {e}"))
        })
    }

    fn api_base(repo_type: RepoType, repo_id: &str) -> Result<String, PluginError> {
        let plural = repo_type.plural().ok_or_else(|| {
            PluginError::unsupported(format!("unsupported repository type {repo_type}"))
        })?;
        Ok(format!("api/{plural}/{}", encode_repo(repo_id)?))
    }

    /// `{ep}/{prefix}{repo}/resolve/{rev}/{path}`, the revision fully encoded (incl. `/`),
    /// the path segment by segment.
    pub fn resolve_url(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        path: &str,
    ) -> Result<Url, PluginError> {
        let prefix = prefix(repo_type)?;
        self.join(&format!(
            "{prefix}{}/resolve/{}/{}",
            encode_repo(repo_id)?,
            encode_component(revision),
            encode_path(path)
        ))
    }

    /// The resolve URL of `item` of `batch`, at the batch's commit.
    pub fn item_url(&self, batch: &FetchBatch, item: &FetchItem) -> Result<Url, PluginError> {
        let (repo, commit) = (batch.repo_id.as_str(), batch.commit.as_str());
        self.resolve_url(batch.repo_type, repo, commit, item.file.path.as_str())
    }

    /// [`Self::item_url`] as a download source carrying this endpoint's credential.
    pub fn item_source(&self, batch: &FetchBatch, item: &FetchItem) -> Result<Source, PluginError> {
        let mut source = Source::new(self.item_url(batch, item)?);
        source.credential = self.credential().cloned();
        Ok(source)
    }

    /// A `GET` of `url` with this endpoint's credential, sent with retries; returns the
    /// successful response's headers and body (errors classified).
    pub async fn get_bytes(
        &self,
        url: Url,
        accept: &'static str,
        cancel: &CancelToken,
    ) -> Result<(HeaderMap, Bytes), PluginError> {
        let request = Request::get(url)
            .header(ACCEPT, HeaderValue::from_static(accept))
            .credential(self.credential.clone());
        self.execute(&request, cancel).await
    }

    /// Sends `request` with retries and reads the whole (small) body of a 2xx answer.
    async fn execute(
        &self,
        request: &Request,
        cancel: &CancelToken,
    ) -> Result<(HeaderMap, Bytes), PluginError> {
        with_retry(
            self.client.retry_policy(),
            cancel,
            |e, n, wait| log::info!("retry {n} in {wait:?} after: {}", e.message),
            |_| async {
                let answer = self.client.send(request, cancel).await?;
                let status = answer.response.status();
                if !status.is_success() {
                    return Err(classify(
                        status,
                        answer.response.headers(),
                        &answer.context(),
                    ));
                }
                let headers = answer.response.headers().clone();
                let body = self.client.read_metadata(answer).await?;
                Ok((headers, body))
            },
        )
        .await
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: Url,
        cancel: &CancelToken,
    ) -> Result<(HeaderMap, T), PluginError> {
        let context = crate::request_context(&Method::GET, &url);
        let (headers, body) = self.get_bytes(url, "application/json", cancel).await?;
        let value = serde_json::from_slice(&body)
            .map_err(|e| protocol(&context, format!("unexpected JSON: {e}")))?;
        Ok((headers, value))
    }

    /// The commit sha of `revision` (`GET /api/{type}s/{repo}/revision/{rev}`).
    pub async fn commit(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        cancel: &CancelToken,
    ) -> Result<String, PluginError> {
        let base = Self::api_base(repo_type, repo_id)?;
        let url = self.join(&format!("{base}/revision/{}", encode_component(revision)))?;
        let context = crate::request_context(&Method::GET, &url);
        let (_, info): (_, RevisionInfo) = match self.get_json(url, cancel).await {
            Ok(answer) => answer,
            Err(e) if matches!(e.kind, ErrorKind::AUTH | ErrorKind::NOT_FOUND) => {
                return Err(self.other_types(e, repo_type, repo_id, cancel).await);
            }
            Err(e) => return Err(e),
        };
        if !is_commit_sha(&info.sha) {
            return Err(protocol(
                &context,
                format!("`sha` is not a commit id: {:?}", info.sha),
            ));
        }
        Ok(info.sha.to_ascii_lowercase())
    }

    /// `error` (a repository refused or missing as `repo_type`) saying which other types have a
    /// repository of that name (`acme/rows` asked as a model, when it is a dataset): one
    /// request per other type, on this error path only, each tried once.
    async fn other_types(
        &self,
        mut error: PluginError,
        repo_type: RepoType,
        repo_id: &str,
        cancel: &CancelToken,
    ) -> PluginError {
        let mut found = Vec::new();
        for other in RepoType::ALL.into_iter().filter(|t| *t != repo_type) {
            let Ok(url) = Self::api_base(other, repo_id).and_then(|b| self.join(&b)) else {
                continue;
            };
            let request = Request::get(url).credential(self.credential.clone());
            if let Ok(answer) = self.client.send(&request, cancel).await
                && answer.response.status().is_success()
            {
                found.push(other);
            }
        }
        if found.is_empty() {
            return error;
        }
        let names: Vec<String> = found
            .iter()
            .map(|t| format!("a {t} (--repo-type {t})"))
            .collect();
        let note = format!(
            "; {repo_id} exists as {} on the Hub",
            names.join(" and as ")
        );
        // Before a trailing token hint, which the host prints on its own line.
        let message = error.message.to_string();
        let at = message
            .strip_suffix(')')
            .and_then(|m| m.rfind(" ("))
            .filter(|&at| message[at..].contains("token"))
            .unwrap_or(message.len());
        error.message = format!("{}{note}{}", &message[..at], &message[at..]).into();
        error
    }

    /// [`Self::manifest`] of the repository and revision a host's resolve request names.
    pub async fn manifest_for(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        let (repo_id, revision) = (request.repo_id.as_str(), request.revision.as_str());
        self.manifest(request.repo_type, repo_id, revision, cancel)
            .await
    }

    /// Resolves `revision` into its commit and every file of it: the revision API for the
    /// commit, then the recursive tree at that commit, following `Link: rel="next"` pages.
    ///
    /// Per file: `size`, `git_oid` from `oid`, `sha256` from `lfs.oid`, `xet_hash` from
    /// `xetHash` **only if** it is 64 lowercase hex digits (gated repos may send a redacted
    /// `****...` hash; such a file is then served as a plain LFS file). Directories are dropped.
    ///
    /// Page size: `expand=false` gets the Hub's largest pages (1000 entries, its default and
    /// cap; `expand=true` would give 50). No `limit` is sent: it could only ask for less, and a
    /// Hub-compatible mirror need not know it. Each page is parsed and appended on its own
    /// (linear in the entries; one request per page).
    pub async fn manifest(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        let commit = self.commit(repo_type, repo_id, revision, cancel).await?;
        let base = Self::api_base(repo_type, repo_id)?;
        let mut url = self.join(&format!("{base}/tree/{commit}"))?;
        url.set_query(Some("recursive=true&expand=false"));
        let mut files = Vec::new();
        let mut pages = 0usize;
        let mut seen = std::collections::HashSet::new();
        loop {
            if !seen.insert(url.to_string()) {
                return Err(protocol(
                    &crate::redact_url(&url),
                    "tree pagination repeats a page",
                ));
            }
            pages += 1;
            if pages > 100_000 {
                return Err(protocol(
                    &crate::redact_url(&url),
                    "tree pagination does not end",
                ));
            }
            let context = crate::request_context(&Method::GET, &url);
            let (headers, entries): (_, Vec<TreeEntry>) =
                self.get_json(url.clone(), cancel).await?;
            for entry in entries {
                if entry.kind != "file" {
                    continue;
                }
                files.push(manifest_file(entry, &context)?);
            }
            match next_link(&headers) {
                Some(next) => {
                    url = url.join(&next).map_err(|e| {
                        protocol(&context, format!("invalid Link rel=\"next\": {e}"))
                    })?;
                }
                None => break,
            }
        }
        Ok(Manifest::new(commit, files))
    }

    /// A Xet CAS read token (`GET /api/{type}s/{repo}/xet-read-token/{rev}`, JSON body
    /// `{"accessToken","exp","casUrl"}`), sent with the Hub token.
    pub async fn xet_read_token(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        cancel: &CancelToken,
    ) -> Result<XetToken, PluginError> {
        let url = self.xet_read_token_url(repo_type, repo_id, revision)?;
        let (_, token): (_, XetToken) = self.get_json(url, cancel).await?;
        Ok(token)
    }

    /// The xet-read-token URL (for token refreshers).
    pub fn xet_read_token_url(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
    ) -> Result<Url, PluginError> {
        let base = Self::api_base(repo_type, repo_id)?;
        self.join(&format!(
            "{base}/xet-read-token/{}",
            encode_component(revision)
        ))
    }

    /// The Git LFS batch URL: `{ep}/{prefix}{repo}.git/info/lfs/objects/batch`.
    pub fn lfs_batch_url(&self, repo_type: RepoType, repo_id: &str) -> Result<Url, PluginError> {
        let prefix = prefix(repo_type)?;
        self.join(&format!(
            "{prefix}{}.git/info/lfs/objects/batch",
            encode_repo(repo_id)?
        ))
    }

    /// Asks the Git LFS batch API where to download `objects` (one request per
    /// [`LFS_BATCH_LIMIT`] objects). The result has one entry per object, in order: its
    /// download action, or why the server cannot serve it (per-object `error.code` 404/410 →
    /// `NOT_FOUND`, 401/403 → `AUTH`, other → `SERVER`/`OTHER`). A failure of the request
    /// itself is returned as the outer error. `reference` is sent as `ref.name` when given.
    pub async fn lfs_batch(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        objects: &[LfsObject],
        reference: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<Vec<Result<LfsDownload, PluginError>>, PluginError> {
        let url = self.lfs_batch_url(repo_type, repo_id)?;
        let mut out = Vec::with_capacity(objects.len());
        for chunk in objects.chunks(LFS_BATCH_LIMIT) {
            let body = serde_json::to_vec(&BatchRequest {
                operation: "download",
                transfers: ["basic"],
                objects: chunk,
                hash_algo: "sha256",
                reference: reference.map(|name| BatchRef { name }),
            })
            .map_err(|e| {
                PluginError::new(
                    ErrorKind::OTHER,
                    format!("cannot encode the batch request: {e}"),
                )
            })?;
            let mut request = Request::new(Method::POST, url.clone())
                .header(ACCEPT, HeaderValue::from_static(LFS_MEDIA_TYPE))
                .header(CONTENT_TYPE, HeaderValue::from_static(LFS_MEDIA_TYPE))
                .credential(self.credential.clone());
            request.body = Some(Bytes::from(body));
            let context = request.context();
            let sent = Instant::now();
            let (_, body) = self.execute(&request, cancel).await?;
            let response: BatchResponse = serde_json::from_slice(&body)
                .map_err(|e| protocol(&context, format!("unexpected batch response: {e}")))?;
            if let Some(transfer) = &response.transfer
                && transfer != "basic"
            {
                return Err(protocol(
                    &context,
                    format!("unsupported transfer `{transfer}`"),
                ));
            }
            out.extend(chunk.iter().map(|object| {
                let found = response.objects.iter().find(|o| o.oid == object.oid);
                batch_result(found, object, &context, sent)
            }));
        }
        Ok(out)
    }
}

fn prefix(repo_type: RepoType) -> Result<&'static str, PluginError> {
    repo_type
        .url_prefix()
        .ok_or_else(|| PluginError::unsupported(format!("unsupported repository type {repo_type}")))
}

/// `owner/name` with each part encoded; refuses ids that could escape the URL path.
fn encode_repo(repo_id: &str) -> Result<String, PluginError> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    let valid = |p: &&str| !p.is_empty() && *p != "." && *p != "..";
    if parts.is_empty() || parts.len() > 2 || !parts.iter().all(valid) {
        return Err(PluginError::new(
            ErrorKind::CONFIG,
            format!("invalid repository id `{repo_id}` (expected `owner/name`)"),
        ));
    }
    Ok(parts
        .iter()
        .map(|p| encode_component(p))
        .collect::<Vec<_>>()
        .join("/"))
}

/// The fuzz entry point of the answers parsed here ([`crate::fuzzing::metadata_json`]).
pub(crate) fn fuzz_metadata(data: &[u8]) {
    if let Ok(entries) = serde_json::from_slice::<Vec<TreeEntry>>(data) {
        for entry in entries {
            let _ = manifest_file(entry, "fuzz");
        }
    }
    if let Ok(response) = serde_json::from_slice::<BatchResponse>(data) {
        for found in &response.objects {
            let object = LfsObject {
                oid: found.oid.clone(),
                size: 1,
            };
            let _ = batch_result(Some(found), &object, "fuzz", Instant::now());
        }
    }
}

fn manifest_file(entry: TreeEntry, context: &str) -> Result<ManifestFile, PluginError> {
    let sha256 = match &entry.lfs {
        Some(lfs) => {
            let oid = lfs.oid.to_ascii_lowercase();
            if oid.len() != 64 || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(protocol(
                    context,
                    format!("`lfs.oid` of {} is not a sha256", entry.path),
                ));
            }
            if let Some(size) = lfs.size
                && size != entry.size
            {
                return Err(protocol(
                    context,
                    format!("{}: size {} but lfs.size {size}", entry.path, entry.size),
                ));
            }
            Some(oid)
        }
        None => None,
    };
    let xet_hash = entry.xet_hash.filter(|h| is_xet_hash(h));
    Ok(ManifestFile {
        path: entry.path.into(),
        size: entry.size,
        git_oid: entry.oid.into(),
        sha256: sha256.map(RString::from).into(),
        xet_hash: match xet_hash {
            Some(h) => ROption::RSome(h.into()),
            None => ROption::RNone,
        },
    })
}

fn batch_result(
    found: Option<&BatchObject>,
    object: &LfsObject,
    context: &str,
    sent: Instant,
) -> Result<LfsDownload, PluginError> {
    let Some(found) = found else {
        return Err(protocol(
            context,
            format!("object {} missing from the batch response", object.oid),
        ));
    };
    if let Some(error) = &found.error {
        let text = format!(
            "{context}: object {}: {} {}",
            object.oid,
            error.code,
            error.message.chars().take(200).collect::<String>()
        );
        let (kind, retryable) = match error.code {
            404 | 410 => (ErrorKind::NOT_FOUND, false),
            401 | 403 => (ErrorKind::AUTH, false),
            429 => (ErrorKind::RATE_LIMITED, true),
            500..=599 => (ErrorKind::SERVER, true),
            _ => (ErrorKind::OTHER, false),
        };
        return Err(PluginError::new(kind, text)
            .retryable(retryable)
            .with_status(error.code));
    }
    let Some(action) = found.actions.as_ref().and_then(|a| a.download.as_ref()) else {
        return Err(protocol(
            context,
            format!("object {} has no download action", object.oid),
        ));
    };
    let href = Url::parse(&action.href)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| protocol(context, format!("object {}: invalid href", object.oid)))?;
    let mut headers = HeaderMap::new();
    for (name, value) in action.header.iter().flatten() {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            protocol(
                context,
                format!("object {}: invalid header name", object.oid),
            )
        })?;
        let mut value = HeaderValue::from_str(value).map_err(|_| {
            protocol(
                context,
                format!("object {}: invalid header value", object.oid),
            )
        })?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    // A huge `expires_in` (beyond what an Instant can hold) means "no known expiry".
    let expires_at = action
        .expires_in
        .and_then(|secs| sent.checked_add(Duration::from_secs(secs.max(0) as u64)));
    Ok(LfsDownload {
        href,
        headers,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubget_plugin_api::HostSettings;

    fn api(endpoint: &str) -> HubApi {
        HubApi::new(
            endpoint,
            Some("t"),
            HttpClient::new(&HostSettings::default()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn link_next_is_found_among_other_links() {
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static(
                "<https://h/api/x?cursor=a,b>; rel=\"prev\", <https://h/api/x/tree/c?cursor=Zm9v&recursive=true>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://h/api/x/tree/c?cursor=Zm9v&recursive=true")
        );
        let mut h = HeaderMap::new();
        h.insert(LINK, HeaderValue::from_static("</p2>; rel=next"));
        assert_eq!(next_link(&h).as_deref(), Some("/p2"));
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            HeaderValue::from_static("<https://t>; rel=\"xet-auth\""),
        );
        assert_eq!(next_link(&h), None);
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn urls_are_encoded_like_the_hub_clients() {
        let a = api("http://127.0.0.1:9/");
        assert_eq!(
            a.resolve_url(RepoType::MODEL, "acme/tiny", "refs/pr/1", "sub dir/a+b.bin")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/acme/tiny/resolve/refs%2Fpr%2F1/sub%20dir/a%2Bb.bin"
        );
        assert_eq!(
            a.resolve_url(RepoType::DATASET, "acme/d", "main", "x")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/datasets/acme/d/resolve/main/x"
        );
        assert_eq!(
            a.lfs_batch_url(RepoType::SPACE, "acme/s").unwrap().as_str(),
            "http://127.0.0.1:9/spaces/acme/s.git/info/lfs/objects/batch"
        );
        assert_eq!(
            a.xet_read_token_url(RepoType::MODEL, "acme/tiny", "main")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9/api/models/acme/tiny/xet-read-token/main"
        );
        assert!(a.resolve_url(RepoType::MODEL, "../x", "main", "f").is_err());
        assert!(a.resolve_url(RepoType(9), "a/b", "main", "f").is_err());
        let sub = api("https://h.example/hub-mirror");
        assert_eq!(
            sub.resolve_url(RepoType::MODEL, "a/b", "main", "f")
                .unwrap()
                .as_str(),
            "https://h.example/hub-mirror/a/b/resolve/main/f"
        );
    }

    #[test]
    fn tree_entries_map_to_manifest_files() {
        let json = format!(
            r#"[{{"type":"file","oid":"aa","size":3,"path":"c.json"}},
               {{"type":"directory","oid":"dd","path":"sub"}},
               {{"type":"file","oid":"bb","size":5,"path":"sub/l.bin","lfs":{{"oid":"{s}","size":5,"pointerSize":130}}}},
               {{"type":"file","oid":"cc","size":7,"path":"x.bin","lfs":{{"oid":"{s}","size":7}},"xetHash":"{x}"}},
               {{"type":"file","oid":"ee","size":7,"path":"g.bin","lfs":{{"oid":"{s}","size":7}},"xetHash":"{r}"}}]"#,
            s = "a".repeat(64),
            x = "0123456789abcdef".repeat(4),
            r = "*".repeat(64)
        );
        let entries: Vec<TreeEntry> = serde_json::from_str(&json).unwrap();
        let files: Vec<ManifestFile> = entries
            .into_iter()
            .filter(|e| e.kind == "file")
            .map(|e| manifest_file(e, "c").unwrap())
            .collect();
        assert_eq!(files.len(), 4);
        assert_eq!(files[0].sha256, ROption::RNone);
        assert_eq!(files[0].git_oid.as_str(), "aa");
        assert_eq!(
            files[1].sha256.as_ref().map(|s| s.as_str()),
            ROption::RSome(&*"a".repeat(64))
        );
        assert!(files[2].xet_hash.is_some());
        assert_eq!(
            files[3].xet_hash,
            ROption::RNone,
            "a redacted xet hash is dropped"
        );
        assert!(files[3].sha256.is_some());
    }

    #[test]
    fn a_huge_expires_in_means_no_known_expiry_not_a_panic() {
        let body = format!(
            r#"{{"transfer":"basic","objects":[{{"oid":"a","size":1,"actions":{{"download":{{"href":"http://cdn/lfs/a","expires_in":{}}}}}}}]}}"#,
            i64::MAX
        );
        let response: BatchResponse = serde_json::from_str(&body).unwrap();
        let obj = LfsObject {
            oid: "a".into(),
            size: 1,
        };
        let a = batch_result(response.objects.first(), &obj, "c", Instant::now()).unwrap();
        assert!(a.expires_at.is_none());
    }

    #[test]
    fn batch_objects_map_to_actions_or_errors() {
        let body = r#"{"transfer":"basic","objects":[
            {"oid":"a","size":1,"actions":{"download":{"href":"http://cdn/lfs/a?sig=1","header":{"X-Sig":"s"},"expires_in":60}}},
            {"oid":"b","size":1,"error":{"code":404,"message":"Object does not exist"}},
            {"oid":"c","size":1}]}"#;
        let response: BatchResponse = serde_json::from_str(body).unwrap();
        let obj = |oid: &str| LfsObject {
            oid: oid.into(),
            size: 1,
        };
        let now = Instant::now();
        let result_of = |oid: &str| {
            let object = response.objects.iter().find(|o| o.oid == oid);
            batch_result(object, &obj(oid), "c", now)
        };
        let a = result_of("a").unwrap();
        assert_eq!(a.href.as_str(), "http://cdn/lfs/a?sig=1");
        assert_eq!(a.headers["x-sig"], "s");
        assert!(a.expires_at.unwrap() > now);
        assert!(!format!("{a:?}").contains("sig=1"));
        let b = result_of("b").unwrap_err();
        assert_eq!((b.kind, b.http_status), (ErrorKind::NOT_FOUND, 404));
        let c = result_of("c").unwrap_err();
        assert_eq!(c.kind, ErrorKind::PROTOCOL);
        let d = batch_result(None, &obj("d"), "c", now).unwrap_err();
        assert_eq!(d.kind, ErrorKind::PROTOCOL);
    }
}
