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
}

/// A router that forwards everything to `upstream`, keeping the client's `Host` so the CAS builds
/// fetch URLs that point back at the proxy.
pub(crate) fn proxy_router(upstream: &str) -> Result<Router, Error> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    let p = Arc::new(Proxy {
        upstream: upstream.trim_end_matches('/').to_string(),
        client,
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
    for (k, v) in &parts.headers {
        if !hop_by_hop(k) && k != header::CONTENT_LENGTH {
            rb = rb.header(k, v);
        }
    }
    let resp = match rb.body(body).send().await {
        Ok(r) => r,
        Err(e) => return bad_gateway(&e.to_string()),
    };
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

fn bad_gateway(msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(format!("hubsim CAS proxy: {msg}")));
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
