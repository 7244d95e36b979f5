//! Counters and fault injection: shared by every origin, readable from tests and over HTTP.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// One of the three servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Hub origin (API, resolve, LFS batch, control routes).
    Hub,
    /// CDN origin (`/lfs/`, `/xet-bridge/`).
    Cdn,
    /// Xet CAS (proxy in front of `LocalTestServer`).
    Cas,
}

impl Origin {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Hub => "hub",
            Origin::Cdn => "cdn",
            Origin::Cas => "cas",
        }
    }
}

/// What a fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status (and a small JSON body) instead of the real response.
    Status {
        /// HTTP status code.
        code: u16,
    },
    /// Answer 429 with `Retry-After: <secs>`.
    RateLimited {
        /// Seconds in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// Send the headers and the first `bytes` body bytes, then drop the connection.
    CutAfter {
        /// Body bytes sent before the cut.
        bytes: u64,
    },
    /// Flip (xor 0xFF) one byte of the body; the length stays valid.
    /// Default offset: 100 (past the first Xet chunk header), or the middle of a body of
    /// at most 200 bytes.
    FlipByte {
        /// Offset into the body.
        #[serde(default)]
        offset: Option<u64>,
    },
    /// Stall for `secs` seconds: before the headers (`after_bytes` absent) or after that many
    /// body bytes.
    Stall {
        /// Stall duration in seconds.
        secs: f64,
        /// Body bytes sent before the stall; `None` stalls before the headers.
        #[serde(default)]
        after_bytes: Option<u64>,
    },
    /// Declare `Content-Length` = real length + `delta` (the body itself is unchanged, so the
    /// client sees a short or over-long body).
    WrongContentLength {
        /// Added to the real length.
        delta: i64,
    },
    /// Ignore the request's `Range` header: answer `200` with the whole body, as some servers
    /// and proxies do. Only requests that carry `Range` match (and count towards `times`).
    IgnoreRange,
}

fn one() -> u32 {
    1
}

/// A fault: applies to the next `times` requests to `origin` whose path-and-query contains
/// `path_contains` (and whose method matches, if given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Which server.
    pub origin: Origin,
    /// Substring of the request path and query (`""` matches everything).
    #[serde(default)]
    pub path_contains: String,
    /// Only this method (e.g. `"GET"`), if set.
    #[serde(default)]
    pub method: Option<String>,
    /// The action.
    pub action: FaultAction,
    /// How many matching requests it affects (default 1).
    #[serde(default = "one")]
    pub times: u32,
}

impl Fault {
    /// A fault for the next request matching `origin` + `path_contains`.
    pub fn new(origin: Origin, path_contains: impl Into<String>, action: FaultAction) -> Self {
        Fault {
            origin,
            path_contains: path_contains.into(),
            method: None,
            action,
            times: 1,
        }
    }

    /// A fault for every request matching `origin` + `path_contains`.
    pub fn always(origin: Origin, path_contains: impl Into<String>, action: FaultAction) -> Self {
        Self::new(origin, path_contains, action).times(u32::MAX)
    }

    /// Affect `n` requests instead of one.
    pub fn times(mut self, n: u32) -> Self {
        self.times = n;
        self
    }

    /// Only requests with this method.
    pub fn method(mut self, m: &str) -> Self {
        self.method = Some(m.to_ascii_uppercase());
        self
    }
}

/// An installed fault and how often it can still fire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Id returned by [`Faults::add`].
    pub id: u64,
    /// The fault (its `times` is the remaining count).
    pub fault: Fault,
    /// How many times it fired so far.
    pub fired: u32,
}

#[derive(Default)]
struct FaultTable {
    next_id: u64,
    faults: Vec<ActiveFault>,
    fired_total: u64,
}

/// Handle to the fault table (cheap to clone, usable from any thread).
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<FaultTable>>);

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("active", &self.list())
            .finish()
    }
}

impl Faults {
    /// Install a fault; returns its id.
    pub fn add(&self, fault: Fault) -> u64 {
        let mut t = self.0.lock().expect("faults lock");
        t.next_id += 1;
        let id = t.next_id;
        t.faults.push(ActiveFault {
            id,
            fault,
            fired: 0,
        });
        id
    }

    /// Remove every fault.
    pub fn clear(&self) {
        self.0.lock().expect("faults lock").faults.clear();
    }

    /// Faults that can still fire.
    pub fn list(&self) -> Vec<ActiveFault> {
        self.0
            .lock()
            .expect("faults lock")
            .faults
            .iter()
            .filter(|f| f.fault.times > 0)
            .cloned()
            .collect()
    }

    /// How many times fault `id` fired (0 if unknown).
    pub fn fired(&self, id: u64) -> u32 {
        self.0
            .lock()
            .expect("faults lock")
            .faults
            .iter()
            .find(|f| f.id == id)
            .map_or(0, |f| f.fired)
    }

    /// Total firings of all faults since start.
    pub fn fired_total(&self) -> u64 {
        self.0.lock().expect("faults lock").fired_total
    }

    /// Take the first matching fault (decrementing its count). `IgnoreRange` matches only
    /// requests with a `Range` header (`has_range`).
    pub(crate) fn take(
        &self,
        origin: Origin,
        method: &str,
        path_and_query: &str,
        has_range: bool,
    ) -> Option<FaultAction> {
        let mut t = self.0.lock().expect("faults lock");
        let hit = t.faults.iter_mut().find(|f| {
            f.fault.times > 0
                && f.fault.origin == origin
                && (has_range || f.fault.action != FaultAction::IgnoreRange)
                && path_and_query.contains(&f.fault.path_contains)
                && f.fault
                    .method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        hit.fault.times -= 1;
        hit.fired += 1;
        let action = hit.fault.action.clone();
        t.fired_total += 1;
        Some(action)
    }
}

/// Per-origin numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerOrigin<T> {
    /// Hub origin.
    pub hub: T,
    /// CDN origin.
    pub cdn: T,
    /// CAS.
    pub cas: T,
}

impl<T> PerOrigin<T> {
    /// The value for one origin.
    pub fn get(&self, o: Origin) -> &T {
        match o {
            Origin::Hub => &self.hub,
            Origin::Cdn => &self.cdn,
            Origin::Cas => &self.cas,
        }
    }

    fn get_mut(&mut self, o: Origin) -> &mut T {
        match o {
            Origin::Hub => &mut self.hub,
            Origin::Cdn => &mut self.cdn,
            Origin::Cas => &mut self.cas,
        }
    }
}

/// One request as seen by hubsim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Server.
    pub origin: Origin,
    /// Method.
    pub method: String,
    /// Path and query as received.
    pub path: String,
    /// Route name (see [`Counters::requests`]).
    pub route: String,
    /// Response status.
    pub status: u16,
    /// Body bytes sent (final once the body is done).
    pub bytes: u64,
    /// Whether an `Authorization` header was present.
    pub auth: bool,
    /// Its value (a test server: tests compare it with the Hub token).
    #[serde(default)]
    pub authorization: Option<String>,
    /// `Range` header, if any.
    pub range: Option<String>,
    /// A fault fired on this request.
    pub faulted: bool,
}

/// Snapshot of the counters.
///
/// Route names: hub `resolve`, `api_info`, `tree`, `paths_info`, `xet_read_token`, `refs`,
/// `commits`, `lfs_batch`, `other`; cdn `lfs`, `xet_bridge`, `other`; cas `reconstructions_v2`,
/// `reconstructions_v1`, `reconstructions_batch`, `fetch_term`, `get_xorb`, `files`, `telemetry`, `other`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Requests per `"{origin}:{route}"`, e.g. `"hub:resolve"`, `"cas:fetch_term"`.
    pub requests: BTreeMap<String, u64>,
    /// Requests per `"{origin}:{route}:{METHOD}"`, e.g. `"hub:resolve:HEAD"`.
    pub requests_by_method: BTreeMap<String, u64>,
    /// Body bytes served per origin.
    pub bytes: PerOrigin<u64>,
    /// Body bytes served per `"{origin}:{route}"`.
    pub bytes_by_route: BTreeMap<String, u64>,
    /// Whether any request to the origin carried an `Authorization` header.
    pub auth_seen: PerOrigin<bool>,
    /// Requests per origin.
    pub total_requests: PerOrigin<u64>,
    /// Every request, in arrival order (the oldest are dropped beyond 50 000).
    pub log: Vec<RequestRecord>,
}

impl Counters {
    /// Requests to `route` on `origin` (any method).
    pub fn requests_to(&self, origin: Origin, route: &str) -> u64 {
        self.requests
            .get(&format!("{}:{route}", origin.name()))
            .copied()
            .unwrap_or(0)
    }

    /// Body bytes served by `origin`.
    pub fn bytes_from(&self, origin: Origin) -> u64 {
        *self.bytes.get(origin)
    }
}

const LOG_CAP: usize = 50_000;

#[derive(Default)]
struct CounterState {
    c: Counters,
    /// Sequence number of `c.log[0]`.
    log_base: u64,
}

/// Shared, thread-safe counters.
#[derive(Clone, Default)]
pub(crate) struct CounterTable(Arc<Mutex<CounterState>>);

impl CounterTable {
    pub(crate) fn snapshot(&self) -> Counters {
        self.0.lock().expect("counters lock").c.clone()
    }

    pub(crate) fn reset(&self) {
        let mut s = self.0.lock().expect("counters lock");
        let n = s.c.log.len() as u64;
        s.log_base += n;
        s.c = Counters::default();
    }

    /// Record a request at header time; returns its log sequence number.
    pub(crate) fn start(&self, rec: RequestRecord) -> u64 {
        let mut s = self.0.lock().expect("counters lock");
        let o = rec.origin;
        let key = format!("{}:{}", o.name(), rec.route);
        *s.c.requests.entry(key.clone()).or_default() += 1;
        *s.c.requests_by_method
            .entry(format!("{key}:{}", rec.method))
            .or_default() += 1;
        *s.c.total_requests.get_mut(o) += 1;
        if rec.auth {
            *s.c.auth_seen.get_mut(o) = true;
        }
        if s.c.log.len() >= LOG_CAP {
            s.c.log.remove(0);
            s.log_base += 1;
        }
        s.c.log.push(rec);
        s.log_base + s.c.log.len() as u64 - 1
    }

    /// Add body bytes as they are sent.
    pub(crate) fn add_bytes(&self, origin: Origin, route: &str, seq: u64, n: u64) {
        let mut s = self.0.lock().expect("counters lock");
        *s.c.bytes.get_mut(origin) += n;
        *s.c.bytes_by_route
            .entry(format!("{}:{route}", origin.name()))
            .or_default() += n;
        if let Some(idx) = seq.checked_sub(s.log_base)
            && let Some(r) = s.c.log.get_mut(idx as usize)
        {
            r.bytes += n;
        }
    }
}
