//! Request quotas: the Hub meters requests per bucket (`api` for `/api/` routes, `resolvers` for
//! every URL with a `/resolve/` segment, `pages` for the rest) in fixed windows of 5 minutes,
//! and announces the budget on every response with the IETF draft-09 header fields:
//!
//! ```text
//! RateLimit: "api";r=489;t=189                       489 left, the window resets in 189 s
//! RateLimit-Policy: "fixed window";"api";q=500;w=300  500 per 300 s
//! ```
//!
//! A 429 carries the same fields with `r=0` (and not necessarily `Retry-After`).
//!
//! Design decisions:
//! - **One budget per origin and bucket for the whole machine.** Each plugin is its own cdylib
//!   with its own copy of this crate, several hubget processes may run at once, and anonymous
//!   quotas are per IP address: the budget is a small JSON file per origin and bucket
//!   (`<cache>/.hubget/rate-limits/`, or the temp dir without a cache), read and written under
//!   an exclusive `flock`. It holds what the server last announced and the requests in flight
//!   (each with an expiry, so a killed process cannot hold budget for ever).
//! - **A spent budget is a wait, never a failure.** A request whose bucket has no budget left
//!   (counting requests in flight) waits for the window to reset instead of being sent; a 429
//!   that announces its window is waited out (`t`, else `Retry-After`) and the request sent
//!   again. Only a wait past `HostSettings::max_rate_limit_wait_secs` is an error, and it names
//!   the bucket, the quota and the reset, and says that a token raises the quota.
//! - Every wait is told to an observer (a download turns it into a `RETRY` event carrying a
//!   [`RateLimitNote`], which the host shows and excuses from its stall watchdog).
//! - Only the Hub's origin is metered before sending (its buckets are known from the path);
//!   any other origin is waited out only when it answers 429 with the header fields.

use std::collections::hash_map::DefaultHasher;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubget_plugin_api::protocol::RateLimitNote;
use hubget_plugin_api::{CancelToken, ErrorKind, PluginError};
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::origin::{origin_of, same_origin};
use crate::retry::sleep;

/// How long an in-flight reservation holds budget at most (a request that never reports back).
const IN_FLIGHT_EXPIRY: Duration = Duration::from_secs(120);
/// How often a waiting request looks at the shared budget again (another process may have
/// learnt of a new window).
const RECHECK: Duration = Duration::from_secs(1);
/// Added to every wait for a reset, so that the server's window has turned when we send.
const RESET_MARGIN: Duration = Duration::from_millis(250);

/// What a response announced about its bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// The bucket's name.
    pub bucket: String,
    /// Requests left in the window.
    pub remaining: u64,
    /// When the window resets.
    pub reset: Duration,
    /// The window's quota (`RateLimit-Policy` `q`).
    pub quota: Option<u64>,
    /// The window's length (`RateLimit-Policy` `w`).
    pub window: Option<Duration>,
}

/// Reads `RateLimit` (and `RateLimit-Policy` for the quota) from `headers`.
pub fn announced(headers: &HeaderMap) -> Option<Announced> {
    let limit = headers.get("ratelimit")?.to_str().ok()?;
    let item = limit.split(',').next()?;
    let (names, params) = fields(item);
    let bucket = names.into_iter().next()?;
    let remaining = params.iter().find(|(k, _)| k == "r")?.1.parse().ok()?;
    let reset = params.iter().find(|(k, _)| k == "t")?.1.parse().ok()?;
    let mut out = Announced {
        bucket,
        remaining,
        reset: Duration::from_secs(reset),
        quota: None,
        window: None,
    };
    for policy in headers.get_all("ratelimit-policy") {
        for item in policy.to_str().unwrap_or("").split(',') {
            let (names, params) = fields(item);
            if names.contains(&out.bucket) {
                let get = |key: &str| {
                    params
                        .iter()
                        .find(|(k, _)| k == key)
                        .and_then(|(_, v)| v.parse::<u64>().ok())
                };
                out.quota = get("q");
                out.window = get("w").map(Duration::from_secs);
            }
        }
    }
    Some(out)
}

/// The quoted strings and the `key=value` parameters of one structured-field item.
fn fields(item: &str) -> (Vec<String>, Vec<(String, String)>) {
    let mut names = Vec::new();
    let mut params = Vec::new();
    for part in item.split(';').map(str::trim) {
        if let Some(name) = part.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            names.push(name.to_owned());
        } else if let Some((k, v)) = part.split_once('=') {
            params.push((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()));
        }
    }
    (names, params)
}

/// The Hub bucket a path is metered in.
pub fn hub_bucket(path: &str) -> &'static str {
    if path.starts_with("/api/") {
        "api"
    } else if path.split('/').any(|s| s == "resolve") {
        "resolvers"
    } else {
        "pages"
    }
}

/// One bucket's shared state, as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Requests left at the last answer (`None`: unknown, send).
    remaining: Option<u64>,
    /// The quota, when announced.
    quota: Option<u64>,
    /// When the window resets, ms since the epoch.
    reset_at_ms: u64,
    /// Requests sent and not answered yet: (id, expiry in ms since the epoch).
    in_flight: Vec<(u64, u64)>,
}

/// A request's hold on its bucket's budget, returned by [`Quotas::acquire`].
#[derive(Debug)]
pub struct Ticket {
    key: String,
    id: u64,
}

/// The quotas of every origin and bucket this machine talks to.
#[derive(Debug)]
pub struct Quotas {
    hub: Option<Url>,
    dir: PathBuf,
    max_wait: Duration,
}

/// Called with every wait before it starts.
pub type WaitObserver<'a> = &'a (dyn Fn(&RateLimitNote) + Sync);

/// The default observer: a warning in the log.
pub fn log_wait(note: &RateLimitNote) {
    log::warn!(
        "{}; waiting {} s",
        note.reason(),
        note.reset_in.as_secs_f64().ceil()
    );
}

impl Quotas {
    /// The quotas of `hub` (the Hub's endpoint), kept under `cache_dir` (or the temp dir).
    pub fn new(hub: Option<Url>, cache_dir: Option<&Path>, max_wait: Duration) -> Self {
        let dir = match cache_dir {
            Some(c) => c.join(".hubget").join("rate-limits"),
            None => std::env::temp_dir().join("hubget-rate-limits"),
        };
        Self { hub, dir, max_wait }
    }

    /// The longest wait for one request.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The metered bucket of `url`: the Hub's buckets on the Hub's origin, none elsewhere.
    pub fn bucket_of(&self, url: &Url) -> Option<&'static str> {
        let hub = self.hub.as_ref()?;
        same_origin(hub, url).then(|| hub_bucket(url.path()))
    }

    /// Takes one request of `url`'s bucket from the shared budget, waiting for the window to
    /// reset while the budget is spent (requests in flight count). `waited` adds up the waits
    /// of one request; past the maximum, the error says what was spent.
    pub async fn acquire(
        &self,
        url: &Url,
        bucket: &str,
        waited: &mut Duration,
        cancel: &CancelToken,
        observer: WaitObserver<'_>,
    ) -> Result<Ticket, PluginError> {
        let origin = origin_of(url);
        let key = key_of(&origin, bucket);
        let id = next_id();
        let mut told = false;
        loop {
            let wait = self.update(&key, |s, now| {
                s.in_flight.retain(|(_, exp)| *exp > now);
                match s.remaining {
                    Some(r) if now < s.reset_at_ms && r <= s.in_flight.len() as u64 => Some((
                        Duration::from_millis(s.reset_at_ms - now),
                        r.saturating_sub(s.in_flight.len() as u64),
                        s.quota,
                    )),
                    _ => {
                        s.in_flight
                            .push((id, now + IN_FLIGHT_EXPIRY.as_millis() as u64));
                        None
                    }
                }
            });
            let Some((reset_in, remaining, quota)) = wait else {
                return Ok(Ticket { key, id });
            };
            let note = RateLimitNote {
                origin: origin.clone(),
                bucket: bucket.to_owned(),
                remaining,
                quota,
                reset_in: reset_in + RESET_MARGIN,
            };
            if *waited + reset_in > self.max_wait {
                return Err(self.spent(&note));
            }
            if !told {
                observer(&note);
                told = true;
            }
            let step = (reset_in + RESET_MARGIN).min(RECHECK);
            sleep(cancel, step).await?;
            *waited += step;
        }
    }

    /// Gives the ticket back and records what the answer announced. For a 429, returns the wait
    /// before the request may be sent again (`None`: not a rate limit this module handles).
    pub fn settle(
        &self,
        ticket: Option<Ticket>,
        url: &Url,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<(Duration, RateLimitNote)> {
        let announced = announced(headers);
        let origin = origin_of(url);
        if let Some(t) = &ticket {
            self.update(&t.key, |s, _| s.in_flight.retain(|(id, _)| *id != t.id));
        }
        let a = announced?;
        let key = key_of(&origin, &a.bucket);
        let limited = status == StatusCode::TOO_MANY_REQUESTS;
        self.update(&key, |s, now| {
            let reset_at = now + a.reset.as_millis() as u64;
            // Answers arrive out of order: within one window the lowest count is the latest.
            let same_window = s.reset_at_ms.abs_diff(reset_at) < 2_000;
            let remaining = if limited { 0 } else { a.remaining };
            s.remaining = Some(match s.remaining {
                Some(r) if same_window => r.min(remaining),
                _ => remaining,
            });
            s.reset_at_ms = if same_window {
                s.reset_at_ms.max(reset_at)
            } else {
                reset_at
            };
            s.quota = a.quota.or(s.quota);
        });
        if !limited {
            return None;
        }
        let wait = if a.reset.is_zero() {
            crate::error::retry_after(headers).unwrap_or(Duration::from_secs(1))
        } else {
            a.reset
        };
        Some((
            wait + RESET_MARGIN,
            RateLimitNote {
                origin,
                bucket: a.bucket,
                remaining: 0,
                quota: a.quota,
                reset_in: wait + RESET_MARGIN,
            },
        ))
    }

    /// The error for a budget that stays spent past the longest wait.
    pub fn spent(&self, note: &RateLimitNote) -> PluginError {
        let quota = note
            .quota
            .map(|q| format!(" (quota {q} per window)"))
            .unwrap_or_default();
        PluginError::new(
            ErrorKind::RATE_LIMITED,
            format!(
                "rate limited by {}: the \"{}\" bucket{quota} is spent and resets in {} s, \
                 longer than --max-rate-limit-wait ({} s); a token (HF_TOKEN) raises the \
                 quota, or allow a longer wait",
                note.origin,
                note.bucket,
                note.reset_in.as_secs_f64().ceil() as u64,
                self.max_wait.as_secs()
            ),
        )
    }

    /// Runs `f` on the bucket's stored state under its lock, and stores it again. A store that
    /// cannot be used (read-only cache, odd file) degrades to a fresh state per call: requests
    /// are then sent unmetered and 429s are still waited out.
    fn update<T>(&self, key: &str, f: impl FnOnce(&mut State, u64) -> T) -> T {
        let now = now_ms();
        match self.locked(key) {
            Ok(mut file) => {
                let mut text = String::new();
                let mut state: State = (&file)
                    .take(64 * 1024)
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| serde_json::from_str(&text).ok())
                    .unwrap_or_default();
                let out = f(&mut state, now);
                let json = serde_json::to_vec(&state).unwrap_or_default();
                let _ = file
                    .seek(SeekFrom::Start(0))
                    .and_then(|_| file.set_len(0))
                    .and_then(|()| file.write_all(&json));
                let _ = file.unlock();
                out
            }
            Err(e) => {
                log::debug!("rate-limit budget {key} unavailable: {e}");
                f(&mut State::default(), now)
            }
        }
    }

    /// The bucket's file, opened without following links and locked.
    fn locked(&self, key: &str) -> std::io::Result<File> {
        std::fs::create_dir_all(&self.dir)?;
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW).mode(0o600);
        }
        let file = options.open(self.dir.join(format!("{key}.json")))?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        file.lock()?;
        Ok(file)
    }
}

/// A file name for an origin's bucket: readable, and unique by a hash of both.
fn key_of(origin: &str, bucket: &str) -> String {
    let mut h = DefaultHasher::new();
    (origin, bucket).hash(&mut h);
    let readable: String = format!("{origin}-{bucket}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(80)
        .collect();
    format!("{readable}-{:016x}", h.finish())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An id for one reservation: unique across threads and, with the pid, across processes.
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    (u64::from(std::process::id()) << 32) | (COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_hubs_header_fields_parse() {
        let h = headers(&[
            ("RateLimit", r#""api";r=489;t=189"#),
            ("RateLimit-Policy", r#""fixed window";"api";q=500;w=300"#),
        ]);
        assert_eq!(
            announced(&h),
            Some(Announced {
                bucket: "api".into(),
                remaining: 489,
                reset: Duration::from_secs(189),
                quota: Some(500),
                window: Some(Duration::from_secs(300)),
            })
        );
        let bare = headers(&[("ratelimit", r#""resolvers";r=0;t=7"#)]);
        let a = announced(&bare).unwrap();
        assert_eq!((a.remaining, a.quota), (0, None));
        for bad in [r#""api";r=x;t=1"#, r#"r=1;t=1"#, r#""api";t=1"#, ""] {
            assert_eq!(announced(&headers(&[("ratelimit", bad)])), None, "{bad}");
        }
    }

    #[test]
    fn hub_paths_fall_in_their_buckets() {
        assert_eq!(hub_bucket("/api/models/a/b/tree/main"), "api");
        assert_eq!(hub_bucket("/api/models/a/b/xet-read-token/main"), "api");
        assert_eq!(hub_bucket("/a/b/resolve/main/x.bin"), "resolvers");
        assert_eq!(hub_bucket("/datasets/a/b/resolve/c/d"), "resolvers");
        assert_eq!(hub_bucket("/a/b.git/info/lfs/objects/batch"), "pages");
    }

    fn quotas(dir: &Path, max_wait: Duration) -> Quotas {
        let hub = Url::parse("http://127.0.0.1:9").unwrap();
        Quotas::new(Some(hub), Some(dir), max_wait)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_spent_budget_waits_for_the_reset_counting_requests_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let q = quotas(dir.path(), Duration::from_secs(60));
        let url = Url::parse("http://127.0.0.1:9/a/b/resolve/main/f").unwrap();
        let cancel = CancelToken::new();
        let told = std::sync::Mutex::new(Vec::new());
        let observer = |n: &RateLimitNote| told.lock().unwrap().push(n.clone());
        let mut waited = Duration::ZERO;
        // Nothing known: sent at once. The answer says 1 left, the window turns in 1 s.
        let t1 = q
            .acquire(&url, "resolvers", &mut waited, &cancel, &observer)
            .await
            .unwrap();
        let h = headers(&[("ratelimit", r#""resolvers";r=1;t=1"#)]);
        assert_eq!(q.settle(Some(t1), &url, StatusCode::OK, &h), None);
        // One in flight takes the last one; the next waits for the window.
        let _t2 = q
            .acquire(&url, "resolvers", &mut waited, &cancel, &observer)
            .await
            .unwrap();
        assert!(told.lock().unwrap().is_empty());
        let _t3 = q
            .acquire(&url, "resolvers", &mut waited, &cancel, &observer)
            .await
            .unwrap();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
        let notes = told.lock().unwrap().clone();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].bucket, "resolvers");
        // Another process's view (a second `Quotas` on the same directory) shares the budget.
        let other = quotas(dir.path(), Duration::from_secs(60));
        let h0 = headers(&[("ratelimit", r#""resolvers";r=0;t=100"#)]);
        assert!(
            other
                .settle(None, &url, StatusCode::TOO_MANY_REQUESTS, &h0)
                .is_some()
        );
        let mut waited = Duration::ZERO;
        let err = quotas(dir.path(), Duration::from_secs(30))
            .acquire(&url, "resolvers", &mut waited, &cancel, &log_wait)
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
        assert!(err.message.contains("\"resolvers\" bucket"), "{err}");
        assert!(err.message.contains("HF_TOKEN"), "{err}");
    }

    #[test]
    fn a_429_without_retry_after_waits_the_announced_reset() {
        let dir = tempfile::tempdir().unwrap();
        let q = quotas(dir.path(), Duration::from_secs(60));
        let url = Url::parse("http://127.0.0.1:9/api/models/a/b").unwrap();
        let h = headers(&[
            ("ratelimit", r#""api";r=0;t=42"#),
            ("ratelimit-policy", r#""fixed window";"api";q=500;w=300"#),
        ]);
        let (wait, note) = q
            .settle(None, &url, StatusCode::TOO_MANY_REQUESTS, &h)
            .unwrap();
        assert!(wait >= Duration::from_secs(42) && wait < Duration::from_secs(43));
        assert_eq!(note.quota, Some(500));
        // Without the fields, a 429 is left to the retry policy (Retry-After).
        assert_eq!(
            q.settle(None, &url, StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new()),
            None
        );
    }
}
