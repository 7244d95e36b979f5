//! The Xet CAS: Hugging Face's `LocalTestServer` (in memory) behind a Host-preserving reverse
//! proxy, so CAS traffic is counted, shaped and fault-injectable; plus the fixture upload.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Response, StatusCode, header};
use futures_util::TryStreamExt;
use xet::xet_session::{Sha256Policy, XetSessionBuilder};
use xet_client::cas_client::simulation::{LocalTestServer, LocalTestServerBuilder};

use crate::Error;
use crate::fixtures::XetJob;

/// Start the in-memory CAS server (needs a multi-thread tokio runtime).
pub(crate) async fn start_cas() -> LocalTestServer {
    LocalTestServerBuilder::new().start().await
}

/// Upload every Xet job through hf-xet's upload session; returns sha256 -> xet hash.
pub(crate) async fn upload(
    endpoint: &str,
    jobs: Vec<XetJob>,
    cache_dir: &std::path::Path,
) -> Result<HashMap<String, String>, Error> {
    let mut out = HashMap::new();
    if jobs.is_empty() {
        return Ok(out);
    }
    let xe = |e: &dyn std::fmt::Display| Error::Xet(e.to_string());
    let session = XetSessionBuilder::new()
        .with_cache_dir(cache_dir)
        .with_tokio_handle(tokio::runtime::Handle::current())
        .build()
        .map_err(|e| xe(&e))?;
    // One upload commit per file, in fixture order, as separate `hf upload`s would be: each
    // commit's shard lands in the session's shard cache, so a later file dedups against the
    // earlier ones (a new revision stores only its changed chunks, as on the Hub).
    for job in jobs {
        let commit = session
            .new_upload_commit()
            .map_err(|e| xe(&e))?
            .with_endpoint(endpoint)
            .with_token_info("hubsim-upload", 4_000_000_000)
            .build()
            .await
            .map_err(|e| xe(&e))?;
        let h = commit
            .upload_bytes(
                job.data.to_vec(),
                Sha256Policy::Compute,
                Some(job.sha256.clone()),
            )
            .await
            .map_err(|e| xe(&e))?;
        let meta = h.finalize_ingestion().await.map_err(|e| xe(&e))?;
        if let Some(s) = meta.xet_info.sha256()
            && s != job.sha256
        {
            return Err(Error::Xet(format!(
                "hf-xet sha256 {s} != fixture sha256 {}",
                job.sha256
            )));
        }
        out.insert(job.sha256, meta.xet_info.hash().to_string());
        commit.commit().await.map_err(|e| xe(&e))?;
        drop(h);
    }
    Ok(out)
}

pub(crate) struct Proxy {
    upstream: String,
    client: reqwest::Client,
    /// Coarse trimming: a ranged reconstruction query is answered for a range starting this
    /// many bytes earlier, its first term reaching back that far (`offset_into_first_range`
    /// says so), as the Xet spec allows a CAS to do. 0: trimmed chunk by chunk.
    coarse_trim: u64,
}

/// A router that forwards everything to `upstream`, keeping the client's `Host` so the CAS builds
/// fetch URLs that point back at the proxy; with `coarse_trim`, reconstruction answers start that
/// many bytes before the range asked for.
pub(crate) fn proxy_router(upstream: &str, coarse_trim: u64) -> Result<Router, Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    let p = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        client,
        coarse_trim,
    });
    Ok(Router::new().fallback(forward).with_state(p))
}

fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map_or("/", |x| x.as_str());
    let url = format!("{}{pq}", p.upstream);
    let body = match axum::body::to_bytes(body, 1 << 30).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(&e.to_string()),
    };
    let mut rb = p.client.request(parts.method.clone(), url);
    // Coarse trimming of a ranged reconstruction query: ask from earlier, say so in the answer.
    let widened = coarse_range(&parts, p.coarse_trim);
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) && k != header::CONTENT_LENGTH {
            match (&widened, k == header::RANGE) {
                (Some((range, _)), true) => rb = rb.header(k, range.as_str()),
                _ => rb = rb.header(k, v),
            }
        }
    }
    let resp = match rb.body(body).send().await {
        Ok(r) => r,
        Err(e) => return bad_gateway(&e.to_string()),
    };
    if let Some((_, back)) = widened
        && resp.status().is_success()
    {
        return reach_back(resp, back).await;
    }
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !hop_by_hop(k) {
            out = out.header(k, v);
        }
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    out.body(Body::from_stream(stream))
        .unwrap_or_else(|e| bad_gateway(&e.to_string()))
}

/// For a ranged reconstruction query (`bytes=S-E`, S > 0) and a coarse trim: the range to ask
/// upstream and how many bytes earlier it starts.
fn coarse_range(parts: &axum::http::request::Parts, trim: u64) -> Option<(String, u64)> {
    let path = parts.uri.path();
    if trim == 0
        || !(path.starts_with("/v1/reconstructions/") || path.starts_with("/v2/reconstructions/"))
    {
        return None;
    }
    let range = parts.headers.get(header::RANGE)?.to_str().ok()?;
    let (start, end) = range.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let wider = start.saturating_sub(trim);
    (wider < start).then(|| (format!("bytes={wider}-{end}"), start - wider))
}

/// The upstream answer for the widened range, its first term reaching `back` bytes further
/// before the range the client asked for.
async fn reach_back(resp: reqwest::Response, back: u64) -> Response<Body> {
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return bad_gateway(&e.to_string()),
    };
    let mut doc: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return bad_gateway(&e.to_string()),
    };
    let offset = doc["offset_into_first_range"].as_u64().unwrap_or(0);
    doc["offset_into_first_range"] = serde_json::json!(offset + back);
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(doc.to_string()))
        .unwrap_or_else(|e| bad_gateway(&e.to_string()))
}

fn bad_gateway(msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("hubsim CAS proxy: {msg}")));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
