//! The bandwidth cap (`--limit-rate`): one token bucket per plugin, shared by every connection
//! of every file the plugin downloads, so the budget holds for the whole run, not per request.
//!
//! Bytes are taken after they arrive (the bucket may go into debt); a reader then waits until
//! the debt is paid back at the configured rate. The burst is a tenth of a second of traffic
//! (at least 16 KiB), so progress stays smooth and the measured rate sits on the cap.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shared byte budget of `rate` bytes per second.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    /// (tokens available, when they were counted)
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A budget of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec.max(1) as f64;
        let burst = (rate / 10.0).max(16.0 * 1024.0);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// The plugin-wide budget of `bytes_per_sec`: every client built with the same cap in this
    /// plugin (every endpoint, every file) shares one bucket.
    pub fn shared(bytes_per_sec: u64) -> std::sync::Arc<Self> {
        use std::collections::HashMap;
        use std::sync::{Arc, OnceLock};
        static ALL: OnceLock<Mutex<HashMap<u64, Arc<RateLimiter>>>> = OnceLock::new();
        let mut all = ALL
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            all.entry(bytes_per_sec)
                .or_insert_with(|| Arc::new(Self::new(bytes_per_sec))),
        )
    }

    /// The configured rate, bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate as u64
    }

    /// Records `n` bytes received; returns how long the caller must wait before reading more.
    pub fn take(&self, n: u64) -> Duration {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst) - n as f64;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_holds_the_rate_over_time() {
        let l = RateLimiter::new(1_000_000);
        // Taking a second's worth at once leaves a debt of about 0.9 s (burst 0.1 s).
        let wait = l.take(1_000_000);
        assert!((0.85..0.95).contains(&wait.as_secs_f64()), "{wait:?}");
        // Small reads within the burst do not wait.
        let l = RateLimiter::new(10_000_000);
        assert_eq!(l.take(100_000), Duration::ZERO);
    }
}
