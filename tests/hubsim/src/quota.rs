//! The Hub's request quotas (`--hub-profile`): fixed windows per bucket, as the Hub documents
//! them (hub-docs `rate-limits.md`). Every Hub response of a metered bucket carries the IETF
//! draft-09 header fields; a request past the quota is answered 429 with the same fields
//! (`r=0`) and no `Retry-After`, as the Hub does.
//!
//! Buckets: `api` (every `/api/` route, the xet token included), `resolvers` (every path with a
//! `/resolve/` segment), `pages` (the rest: the LFS batch endpoint, ...). A quota of `None` is
//! unlimited (no header fields for that bucket).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Quotas per bucket and the window they apply to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubProfile {
    /// Requests per window to `/api/` routes.
    pub api: Option<u64>,
    /// Requests per window to `/resolve/` URLs.
    pub resolvers: Option<u64>,
    /// Requests per window to other routes.
    pub pages: Option<u64>,
    /// The fixed window's length in seconds (the Hub: 300).
    pub window_secs: u64,
}

impl HubProfile {
    /// The Hub's documented anonymous quotas (per IP): 500 api / 3,000 resolvers per 5 minutes.
    pub fn anonymous() -> Self {
        Self {
            api: Some(500),
            resolvers: Some(3000),
            pages: Some(100),
            window_secs: 300,
        }
    }

    fn quota(&self, bucket: &str) -> Option<u64> {
        match bucket {
            "api" => self.api,
            "resolvers" => self.resolvers,
            _ => self.pages,
        }
    }
}

/// The bucket a Hub path is metered in.
pub fn bucket_of(path: &str) -> &'static str {
    if path.starts_with("/api/") {
        "api"
    } else if path.split('/').any(|s| s == "resolve") {
        "resolvers"
    } else {
        "pages"
    }
}

/// What the quota says of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Serve it (false: 429).
    pub allowed: bool,
    /// `RateLimit` value.
    pub limit: String,
    /// `RateLimit-Policy` value.
    pub policy: String,
}

/// Counts per bucket in the current window.
#[derive(Debug)]
pub(crate) struct QuotaState {
    profile: HubProfile,
    start: Instant,
    counts: Mutex<(u64, HashMap<&'static str, u64>)>,
}

impl QuotaState {
    pub(crate) fn new(profile: HubProfile) -> Self {
        Self {
            profile,
            start: Instant::now(),
            counts: Mutex::new((0, HashMap::new())),
        }
    }

    /// Counts a request to `path`; `None` when its bucket is unlimited.
    pub(crate) fn take(&self, path: &str) -> Option<Verdict> {
        let bucket = bucket_of(path);
        let quota = self.profile.quota(bucket)?;
        let window = Duration::from_secs(self.profile.window_secs.max(1));
        let elapsed = self.start.elapsed();
        let index = (elapsed.as_nanos() / window.as_nanos()) as u64;
        let into = elapsed - window * index as u32;
        let reset = (window - into).as_secs_f64().ceil() as u64;
        let mut c = self.counts.lock().expect("quota lock");
        if c.0 != index {
            *c = (index, HashMap::new());
        }
        let used = c.1.entry(bucket).or_default();
        let allowed = *used < quota;
        if allowed {
            *used += 1;
        }
        let remaining = quota - *used;
        Some(Verdict {
            allowed,
            limit: format!("\"{bucket}\";r={remaining};t={reset}"),
            policy: format!(
                "\"fixed window\";\"{bucket}\";q={quota};w={}",
                window.as_secs()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_bucket_answers_429_until_its_window_turns() {
        let s = QuotaState::new(HubProfile {
            api: Some(2),
            resolvers: None,
            pages: None,
            window_secs: 1,
        });
        assert_eq!(s.take("/a/b/resolve/main/x"), None);
        let first = s.take("/api/models/a/b").unwrap();
        assert!(first.allowed);
        assert!(first.limit.starts_with("\"api\";r=1;t="), "{first:?}");
        assert_eq!(first.policy, "\"fixed window\";\"api\";q=2;w=1");
        assert!(s.take("/api/models/a/b").unwrap().allowed);
        let third = s.take("/api/models/a/b").unwrap();
        assert!(!third.allowed);
        assert!(third.limit.starts_with("\"api\";r=0;"));
        std::thread::sleep(Duration::from_millis(1100));
        assert!(s.take("/api/models/a/b").unwrap().allowed);
    }
}
