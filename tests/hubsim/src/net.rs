//! The HTTP plumbing every origin shares: accept loop, per-connection and total bandwidth
//! shaping, latency, fault injection, counters, and Range-aware byte responses.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::control::{CounterTable, FaultAction, Faults, Origin, RequestRecord};

/// Bandwidth and latency shaping for the CDN and the CAS (the Hub origin is never shaped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Shaping {
    /// Cap per connection in bytes/s (one HTTP/1.1 response at a time per connection).
    #[serde(default)]
    pub rate_per_conn: Option<u64>,
    /// Cap over all CDN + CAS connections together (the client's link), bytes/s.
    #[serde(default)]
    pub rate_total: Option<u64>,
    /// Added before each response's headers, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
}

/// A token bucket that may go into debt: `take` reserves and sleeps off the deficit.
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    state: std::sync::Mutex<(f64, Instant)>,
}

impl Bucket {
    pub(crate) fn new(rate: u64) -> Arc<Self> {
        let rate = rate.max(1) as f64;
        let burst = (rate * 0.02).max(16384.0);
        Arc::new(Bucket {
            rate,
            burst,
            state: std::sync::Mutex::new((burst, Instant::now())),
        })
    }

    async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().expect("bucket lock");
            let now = Instant::now();
            let (tokens, last) = *s;
            let tokens =
                (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
            let tokens = tokens - n as f64;
            *s = (tokens, now);
            if tokens < 0.0 {
                Some(Duration::from_secs_f64(-tokens / self.rate))
            } else {
                None
            }
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }
}

/// Route name set by handlers as a response extension (for the counters).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteName(pub &'static str);

/// Everything one origin's connection handler needs.
pub(crate) struct OriginCtx {
    pub origin: Origin,
    pub router: Router,
    pub counters: CounterTable,
    pub faults: Faults,
    pub per_conn: Option<u64>,
    pub total: Option<Arc<Bucket>>,
    pub latency: Duration,
    /// Control router (hub only): `/_hubsim/...`, never counted nor faulted.
    pub control: Option<Router>,
    /// The Hub's request quotas (hub only, with a Hub profile).
    pub quota: Option<Arc<crate::quota::QuotaState>>,
}

/// A running origin: stop it to refuse connections and drop the open ones.
pub(crate) struct OriginServer {
    stop: watch::Sender<bool>,
}

impl OriginServer {
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for OriginServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) async fn spawn_origin(
    listener: TcpListener,
    ctx: Arc<OriginCtx>,
) -> std::io::Result<OriginServer> {
    let (stop, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((stream, _peer)) = r else { continue };
                    let _ = stream.set_nodelay(true);
                    let ctx = ctx.clone();
                    let bucket = ctx.per_conn.map(Bucket::new);
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let ctx = ctx.clone();
                            let bucket = bucket.clone();
                            async move { Ok::<_, Infallible>(handle(ctx, bucket, req.map(Body::new)).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                    while conns.try_join_next().is_some() {}
                }
                _ = stop_rx.changed() => break,
            }
        }
        conns.abort_all();
    });
    Ok(OriginServer { stop })
}

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::json!({ "error": msg }).to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle(
    ctx: Arc<OriginCtx>,
    conn_bucket: Option<Arc<Bucket>>,
    mut req: Request<Body>,
) -> Response<Body> {
    let path_q = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.to_string());
    if let Some(control) = &ctx.control
        && req.uri().path().starts_with("/_hubsim/")
    {
        return control
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
    }
    let method = req.method().clone();
    let auth = req.headers().contains_key(header::AUTHORIZATION);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if !ctx.latency.is_zero() {
        tokio::time::sleep(ctx.latency).await;
    }
    let fault = ctx
        .faults
        .take(ctx.origin, method.as_str(), &path_q, range.is_some());
    let mut plan = BodyPlan::default();
    let route_guess = guess_route(ctx.origin, req.uri().path());
    if matches!(fault, Some(FaultAction::IgnoreRange)) {
        req.headers_mut().remove(header::RANGE);
    }
    let verdict = ctx.quota.as_ref().and_then(|q| q.take(req.uri().path()));
    let mut resp = match &fault {
        _ if verdict.as_ref().is_some_and(|v| !v.allowed) => {
            plain(StatusCode::TOO_MANY_REQUESTS, "rate limited")
        }
        Some(FaultAction::Status { code }) => plain(
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "hubsim injected fault",
        ),
        Some(FaultAction::RateLimited { retry_after_secs }) => {
            let mut r = plain(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limited (hubsim injected fault)",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            r
        }
        other => {
            if let Some(FaultAction::Stall {
                secs,
                after_bytes: None,
            }) = other
            {
                tokio::time::sleep(Duration::from_secs_f64(*secs)).await;
            }
            ctx.router
                .clone()
                .oneshot(req)
                .await
                .unwrap_or_else(|e| match e {})
        }
    };
    if let Some(v) = &verdict
        && let (Ok(limit), Ok(policy)) = (
            HeaderValue::from_str(&v.limit),
            HeaderValue::from_str(&v.policy),
        )
    {
        resp.headers_mut().insert("ratelimit", limit);
        resp.headers_mut().insert("ratelimit-policy", policy);
    }
    let route = resp
        .extensions()
        .get::<RouteName>()
        .map_or(route_guess, |r| r.0);
    let declared = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match &fault {
        Some(FaultAction::CutAfter { bytes }) => plan.cut_after = Some(*bytes),
        Some(FaultAction::FlipByte { offset }) => {
            plan.flip_at = Some(offset.unwrap_or(match declared {
                Some(n) if n <= 200 => n / 2,
                _ => 100,
            }))
        }
        Some(FaultAction::Stall {
            secs,
            after_bytes: Some(k),
        }) => {
            plan.stall = Some((*k, Duration::from_secs_f64(*secs)));
        }
        Some(FaultAction::WrongContentLength { delta }) => {
            if let Some(n) = declared {
                let v = (n as i64 + delta).max(0) as u64;
                resp.headers_mut()
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(v));
            }
        }
        _ => {}
    }
    let seq = ctx.counters.start(RequestRecord {
        origin: ctx.origin,
        method: method.to_string(),
        path: path_q,
        route: route.to_string(),
        status: resp.status().as_u16(),
        bytes: 0,
        auth,
        authorization,
        range,
        faulted: fault.is_some(),
    });
    if method == Method::HEAD {
        return resp;
    }
    plan.buckets = [conn_bucket, ctx.total.clone()]
        .into_iter()
        .flatten()
        .collect();
    plan.counters = Some((ctx.counters.clone(), ctx.origin, route, seq));
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, wrap_body(body, plan))
}

fn guess_route(origin: Origin, path: &str) -> &'static str {
    match origin {
        Origin::Hub => "other",
        Origin::Cdn => {
            if path.starts_with("/lfs/") {
                "lfs"
            } else if path.starts_with("/xet-bridge/") {
                "xet_bridge"
            } else {
                "other"
            }
        }
        Origin::Cas => {
            if path.starts_with("/v2/reconstructions") {
                "reconstructions_v2"
            } else if path.trim_end_matches('/') == "/v1/reconstructions" {
                "reconstructions_batch"
            } else if path.starts_with("/v1/reconstructions") {
                "reconstructions_v1"
            } else if path.starts_with("/v1/fetch_term") {
                "fetch_term"
            } else if path.starts_with("/v1/get_xorb") {
                "get_xorb"
            } else if path.starts_with("/v1/files") {
                "files"
            } else if path.starts_with("/v1/telemetry") {
                "telemetry"
            } else {
                "other"
            }
        }
    }
}

#[derive(Default)]
struct BodyPlan {
    cut_after: Option<u64>,
    flip_at: Option<u64>,
    stall: Option<(u64, Duration)>,
    buckets: Vec<Arc<Bucket>>,
    counters: Option<(CounterTable, Origin, &'static str, u64)>,
}

struct BodyState {
    inner: axum::body::BodyDataStream,
    pending: Bytes,
    pos: u64,
    stalled: bool,
    done: bool,
    plan: BodyPlan,
}

const PIECE: usize = 16 * 1024;

fn wrap_body(body: Body, plan: BodyPlan) -> Body {
    let st = BodyState {
        inner: body.into_data_stream(),
        pending: Bytes::new(),
        pos: 0,
        stalled: false,
        done: false,
        plan,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if st.pending.is_empty() {
                match st.inner.next().await {
                    None => return None,
                    Some(Err(e)) => {
                        st.done = true;
                        return Some((Err(std::io::Error::other(e.to_string())), st));
                    }
                    Some(Ok(b)) => {
                        st.pending = b;
                        continue;
                    }
                }
            }
            let mut n = st.pending.len();
            if !st.plan.buckets.is_empty() {
                n = n.min(PIECE);
            }
            if let Some(cut) = st.plan.cut_after {
                if st.pos >= cut {
                    // Let hyper flush what was sent before the cut (it flushes while we pend).
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    st.done = true;
                    return Some((
                        Err(std::io::Error::other(
                            "hubsim: connection cut (injected fault)",
                        )),
                        st,
                    ));
                }
                n = n.min((cut - st.pos) as usize);
            }
            if let Some((at, dur)) = st.plan.stall
                && !st.stalled
            {
                if st.pos >= at {
                    tokio::time::sleep(dur).await;
                    st.stalled = true;
                } else {
                    n = n.min((at - st.pos) as usize);
                }
            }
            let mut piece = st.pending.split_to(n);
            if let Some(f) = st.plan.flip_at
                && f >= st.pos
                && f < st.pos + n as u64
            {
                let mut m = BytesMut::from(&piece[..]);
                m[(f - st.pos) as usize] ^= 0xFF;
                piece = m.freeze();
            }
            for b in &st.plan.buckets {
                b.take(n).await;
            }
            if let Some((c, o, route, seq)) = &st.plan.counters {
                c.add_bytes(*o, route, *seq, n as u64);
            }
            st.pos += n as u64;
            return Some((Ok::<_, std::io::Error>(piece), st));
        }
    });
    Body::from_stream(stream)
}

/// Serve `data` for GET/HEAD with `Range` support (single ranges; others get the full body).
pub(crate) fn serve_bytes(
    method: &Method,
    req_headers: &HeaderMap,
    data: Bytes,
    mut extra: HeaderMap,
) -> Response<Body> {
    let len = data.len() as u64;
    extra.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    let range = req_headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let mut status = StatusCode::OK;
    let mut body = data;
    if let Some(r) = range {
        match parse_range(r, len) {
            RangeResult::Full => {}
            RangeResult::Unsatisfiable => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                extra.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
                );
                *resp.headers_mut() = extra;
                return resp;
            }
            RangeResult::Range(s, e) => {
                status = StatusCode::PARTIAL_CONTENT;
                extra.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes {s}-{e}/{len}")).expect("ascii"),
                );
                body = body.slice(s as usize..=e as usize);
            }
        }
    }
    extra.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
    let mut resp = Response::new(if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    });
    *resp.status_mut() = status;
    *resp.headers_mut() = extra;
    resp
}

enum RangeResult {
    Full,
    Unsatisfiable,
    Range(u64, u64),
}

fn parse_range(r: &str, len: u64) -> RangeResult {
    let Some(spec) = r.trim().strip_prefix("bytes=") else {
        return RangeResult::Full;
    };
    if spec.contains(',') {
        return RangeResult::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeResult::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeResult::Full;
        };
        if n == 0 || len == 0 {
            return RangeResult::Unsatisfiable;
        }
        return RangeResult::Range(len.saturating_sub(n), len - 1);
    }
    let Ok(s) = a.parse::<u64>() else {
        return RangeResult::Full;
    };
    if s >= len {
        return RangeResult::Unsatisfiable;
    }
    let e = if b.is_empty() {
        len - 1
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= s => e.min(len - 1),
            _ => return RangeResult::Full,
        }
    };
    RangeResult::Range(s, e)
}
