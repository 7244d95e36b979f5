//! Retries with exponential backoff and jitter, honouring `Retry-After`, and cancellation that
//! works across any `.await` (the host's [`CancelToken`] is a flag, so it is polled).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubget_plugin_api::{CancelToken, HostSettings, PluginError};

/// How often a pending operation looks at the cancel flag.
pub const CANCEL_POLL: Duration = Duration::from_millis(50);

/// When and how often to retry a retryable failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// The first backoff; doubles on every further attempt.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// The longest `Retry-After` we wait for; a longer one ends the retries (the host may try
    /// another backend meanwhile).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The default policy with `max_attempts` and the longest rate-limit wait
    /// (`max_rate_limit_wait_secs`, for a 429's `Retry-After`) from the host settings.
    pub fn from_settings(settings: &HostSettings) -> Self {
        Self {
            max_attempts: settings.max_attempts.max(1),
            max_retry_after: Duration::from_secs(settings.max_rate_limit_wait_secs),
            ..Self::default()
        }
    }

    /// The wait before attempt `attempt + 1` after `error` failed attempt `attempt` (1-based):
    /// `base * 2^(attempt-1)`, capped, with jitter in `[50%, 100%]`; at least the server's
    /// `Retry-After`. `None` when the server asks for longer than `max_retry_after`.
    pub fn delay(&self, attempt: u32, error: &PluginError) -> Option<Duration> {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max_delay);
        let jittered = exp.mul_f64(0.5 + 0.5 * unit_random());
        let asked = Duration::from_millis(error.retry_after_ms);
        if asked > self.max_retry_after {
            return None;
        }
        Some(jittered.max(asked))
    }
}

/// A cheap pseudo-random number in `[0, 1)` for jitter (splitmix64 over time and a counter).
fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos
        .wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Resolves when `cancel` is set (polled every [`CANCEL_POLL`]).
pub async fn cancelled(cancel: &CancelToken) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// Runs `fut` unless `cancel` is set first; then `fut` is dropped and `CANCELLED` returned.
pub async fn cancellable<F: Future>(
    cancel: &CancelToken,
    fut: F,
) -> Result<F::Output, PluginError> {
    cancel.check()?;
    tokio::select! {
        biased;
        () = cancelled(cancel) => Err(PluginError::cancelled()),
        out = fut => Ok(out),
    }
}

/// Sleeps for `wait`, returning `CANCELLED` early if `cancel` is set.
pub async fn sleep(cancel: &CancelToken, wait: Duration) -> Result<(), PluginError> {
    cancellable(cancel, tokio::time::sleep(wait)).await
}

/// Runs `attempt(n)` (n = 1, 2, ...) until it succeeds, fails with a final error, or the policy
/// runs out; waits with backoff in between and calls `on_retry(error, n, wait)` before each wait.
/// Each attempt and each wait is cancellable.
pub async fn with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    cancel: &CancelToken,
    mut on_retry: impl FnMut(&PluginError, u32, Duration),
    mut attempt: F,
) -> Result<T, PluginError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, PluginError>>,
{
    let mut n = 1;
    loop {
        let error = match cancellable(cancel, attempt(n)).await? {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if !error.retryable || n >= policy.max_attempts {
            return Err(error);
        }
        let Some(wait) = policy.delay(n, &error) else {
            return Err(error);
        };
        on_retry(&error, n, wait);
        sleep(cancel, wait).await?;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubget_plugin_api::ErrorKind;

    fn retryable() -> PluginError {
        PluginError::new(ErrorKind::SERVER, "503").retryable(true)
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(5),
        };
        for _ in 0..50 {
            let d1 = p.delay(1, &retryable()).unwrap();
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3, &retryable()).unwrap();
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d9 = p.delay(9, &retryable()).unwrap();
            assert!(d9 <= Duration::from_secs(1));
        }
        let asked = retryable().with_retry_after_ms(3000);
        assert!(p.delay(1, &asked).unwrap() >= Duration::from_secs(3));
        let too_long = retryable().with_retry_after_ms(6000);
        assert_eq!(p.delay(1, &too_long), None);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn retries_until_success_and_stops_on_final_errors() {
        let p = RetryPolicy::default();
        let cancel = CancelToken::new();
        let mut retries = 0;
        let got = with_retry(
            &p,
            &cancel,
            |_, _, _| retries += 1,
            |n| async move { if n < 3 { Err(retryable()) } else { Ok(n) } },
        )
        .await;
        assert_eq!(got.unwrap(), 3);
        assert_eq!(retries, 2);

        // Every attempt fails with `error`: what `with_retry` returns, and how many calls it made.
        let always = |error: PluginError| {
            let (p, cancel) = (&p, &cancel);
            async move {
                let mut calls = 0;
                let attempt = |_| {
                    calls += 1;
                    std::future::ready(Err::<(), _>(error.clone()))
                };
                let got = with_retry(p, cancel, |_, _, _| {}, attempt).await;
                (got.unwrap_err().kind, calls)
            }
        };
        let not_found = PluginError::new(ErrorKind::NOT_FOUND, "404");
        assert_eq!(always(not_found).await, (ErrorKind::NOT_FOUND, 1));
        assert_eq!(
            always(retryable()).await,
            (ErrorKind::SERVER, p.max_attempts)
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn cancel_interrupts_a_pending_attempt() {
        let cancel = CancelToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c2.cancel();
        });
        let got = cancellable(&cancel, std::future::pending::<()>()).await;
        assert_eq!(got.unwrap_err().kind, ErrorKind::CANCELLED);
    }
}
