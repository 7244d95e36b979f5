//! Retry policy: which errors are worth repeating on the same backend, and how long to wait
//! (exponential backoff with jitter, never less than the server's Retry-After).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hubget_plugin_api::{ErrorKind, PluginError};

/// How often and how patiently to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per file per backend (1 = no retry). Plugins retry each request themselves
    /// (`HostSettings::max_attempts`), so the host adds only a couple of attempts on top.
    pub max_attempts: u32,
    /// First backoff.
    pub base: Duration,
    /// Longest backoff (not applied to Retry-After).
    pub cap: Duration,
    /// Longest Retry-After honoured.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

/// Whether an error kind may succeed if the same call is repeated.
pub fn is_transient(e: &PluginError) -> bool {
    match e.kind {
        ErrorKind::NOT_FOUND
        | ErrorKind::AUTH
        | ErrorKind::INTEGRITY
        | ErrorKind::UNSUPPORTED
        | ErrorKind::CONFIG
        | ErrorKind::CANCELLED
        | ErrorKind::PANIC => false,
        ErrorKind::NETWORK | ErrorKind::TIMEOUT | ErrorKind::SERVER | ErrorKind::RATE_LIMITED => {
            true
        }
        _ => e.retryable,
    }
}

impl RetryPolicy {
    /// Whether to retry after `attempt` failed attempts (1-based) ending with `e`.
    pub fn should_retry(&self, e: &PluginError, attempt: u32) -> bool {
        attempt < self.max_attempts && is_transient(e)
    }

    /// The wait before attempt `attempt + 1`: `base * 2^(attempt-1)` capped, with "equal
    /// jitter" (half fixed, half random), and at least the server's Retry-After.
    pub fn delay(&self, e: &PluginError, attempt: u32) -> Duration {
        self.delay_with(e, attempt, jitter_fraction())
    }

    /// [`RetryPolicy::delay`] with an explicit jitter fraction in `0.0..=1.0` (for tests).
    pub fn delay_with(&self, e: &PluginError, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let backoff = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let half = backoff / 2;
        let backoff = half + half.mul_f64(jitter.clamp(0.0, 1.0));
        let retry_after = Duration::from_millis(e.retry_after_ms).min(self.max_retry_after);
        backoff.max(retry_after)
    }
}

/// A cheap pseudo-random fraction in `0.0..1.0` (xorshift over time and a counter).
fn jitter_fraction() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut x =
        STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ nanos ^ 0xD1B5_4A32_D192_ED03;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> PluginError {
        PluginError::new(kind, "x")
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        let e = err(ErrorKind::NETWORK);
        assert_eq!(p.delay_with(&e, 1, 0.0), Duration::from_millis(250));
        assert_eq!(p.delay_with(&e, 1, 1.0), Duration::from_millis(500));
        assert_eq!(p.delay_with(&e, 3, 1.0), Duration::from_secs(2));
        assert_eq!(p.delay_with(&e, 30, 1.0), p.cap);
        for _ in 0..100 {
            let d = p.delay(&e, 2);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let e = err(ErrorKind::RATE_LIMITED).with_retry_after_ms(3_000);
        assert_eq!(p.delay_with(&e, 1, 0.5), Duration::from_secs(3));
        let huge = err(ErrorKind::RATE_LIMITED).with_retry_after_ms(10_000_000);
        assert_eq!(p.delay_with(&huge, 1, 0.5), p.max_retry_after);
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let p = RetryPolicy::default();
        assert!(p.should_retry(&err(ErrorKind::SERVER), 1));
        assert!(!p.should_retry(&err(ErrorKind::SERVER), p.max_attempts));
        assert!(!p.should_retry(&err(ErrorKind::NOT_FOUND), 1));
        assert!(!p.should_retry(&err(ErrorKind::AUTH).retryable(true), 1));
        assert!(p.should_retry(&err(ErrorKind::OTHER).retryable(true), 1));
        assert!(!p.should_retry(&err(ErrorKind::OTHER), 1));
    }
}
