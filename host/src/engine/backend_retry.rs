//! Backend `RETRY` events: a backend retrying a request inside its call (the file's download
//! goes on). Their messages end with a stable suffix,
//! `"<reason>; retrying in <ms> ms (attempt <n>/<max>)"` (hub-http's downloader, via lfs and
//! mirror); other `RETRY` messages (such as lfs refreshing a download URL) have no suffix.

use std::time::Duration;

/// What a backend `RETRY` message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryNote {
    /// The attempt about to run (2 for the first retry), if the message said.
    pub attempt: Option<u32>,
    /// The attempts the backend allows, if the message said.
    pub max_attempts: Option<u32>,
    /// The announced wait before that attempt, if the message said.
    pub delay: Option<Duration>,
    /// Why: the message without the suffix and without a leading `"GET <url>: "`
    /// (`"503 Service Unavailable"`); the whole message when there is no suffix.
    pub reason: String,
}

impl RetryNote {
    /// Parses a `RETRY` message. Never fails: an unknown shape gives no numbers.
    pub fn parse(message: &str) -> Self {
        let message = message.trim();
        match parse_suffix(message) {
            Some((head, delay_ms, attempt, max)) => Self {
                attempt: Some(attempt),
                max_attempts: Some(max),
                delay: Some(Duration::from_millis(delay_ms)),
                reason: short_reason(head),
            },
            None => Self {
                attempt: None,
                max_attempts: None,
                delay: None,
                reason: message.to_owned(),
            },
        }
    }

    /// A few words for a progress bar: `retrying (2/5): 503`.
    pub fn label(&self) -> String {
        let mut reason = self.reason.as_str();
        // "503 Service Unavailable" -> "503".
        if let Some((code, _)) = reason.split_once(' ')
            && code.len() == 3
            && code.bytes().all(|b| b.is_ascii_digit())
        {
            reason = code;
        }
        let reason: String = if reason.chars().count() > 40 {
            let cut: String = reason.chars().take(39).collect();
            format!("{}…", cut.trim_end())
        } else {
            reason.to_owned()
        };
        match (self.attempt, self.max_attempts) {
            (Some(a), Some(m)) => format!("retrying ({a}/{m}): {reason}"),
            _ => reason,
        }
    }
}

/// `(head, delay_ms, attempt, max)` of `"<head>; retrying in <ms> ms (attempt <n>/<max>)"`,
/// the suffix matched as `retrying in (\d+) ms \(attempt (\d+)/(\d+)\)` at the end.
fn parse_suffix(message: &str) -> Option<(&str, u64, u32, u32)> {
    let rest = message.strip_suffix(')')?;
    let (before, counts) = rest.rsplit_once(" (attempt ")?;
    let (attempt, max) = counts.split_once('/')?;
    let attempt = digits(attempt)?;
    let max = digits(max)?;
    let before = before.strip_suffix(" ms")?;
    let at = before.rfind("retrying in ")?;
    let delay_ms = digits(&before[at + "retrying in ".len()..])?;
    let head = before[..at].trim_end();
    let head = head.strip_suffix(';').unwrap_or(head).trim_end();
    Some((head, delay_ms, attempt, max))
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `"GET http://cdn/lfs/<sha>: 503 Service Unavailable"` -> `"503 Service Unavailable"`.
fn short_reason(head: &str) -> String {
    let reason = match head.split_once(' ') {
        Some((method, rest)) if is_method(method) => {
            rest.split_once(": ").map_or(head, |(_, why)| why)
        }
        _ => head,
    };
    reason.trim().to_owned()
}

fn is_method(word: &str) -> bool {
    matches!(word, "GET" | "HEAD" | "POST" | "PUT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_downloader_suffix_gives_attempt_delay_and_reason() {
        let n = RetryNote::parse(
            "GET http://127.0.0.1:4321/lfs/ab12: 503 Service Unavailable; retrying in 200 ms (attempt 2/5)",
        );
        assert_eq!(n.attempt, Some(2));
        assert_eq!(n.max_attempts, Some(5));
        assert_eq!(n.delay, Some(Duration::from_millis(200)));
        assert_eq!(n.reason, "503 Service Unavailable");
        assert_eq!(n.label(), "retrying (2/5): 503");
    }

    #[test]
    fn long_waits_and_other_reasons() {
        let n = RetryNote::parse(
            "GET http://cdn/lfs/ab: error sending request: connection refused; retrying in 45000 ms (attempt 3/5)",
        );
        assert_eq!(n.delay, Some(Duration::from_secs(45)));
        assert_eq!(n.attempt, Some(3));
        assert_eq!(n.reason, "error sending request: connection refused");
        assert_eq!(
            n.label(),
            "retrying (3/5): error sending request: connection refus…"
        );
        let n = RetryNote::parse("body cut short; retrying in 0 ms (attempt 4/4)");
        assert_eq!(
            (n.delay, n.attempt, n.max_attempts),
            (Some(Duration::ZERO), Some(4), Some(4))
        );
        assert_eq!(n.reason, "body cut short");
    }

    #[test]
    fn messages_without_the_suffix_give_no_numbers() {
        for m in [
            "refreshing the download URL after: 403 Forbidden",
            "retrying in a while (attempt 2/5)",
            "x; retrying in 200 ms (attempt 2/5) and more",
            "x; retrying in -1 ms (attempt 2/5)",
            "x; retrying in 200 ms (attempt two/5)",
            "x; retrying in 200 ms (attempt 2/)",
            "",
        ] {
            let n = RetryNote::parse(m);
            assert_eq!(
                (n.attempt, n.max_attempts, n.delay),
                (None, None, None),
                "{m}"
            );
            assert_eq!(n.reason, m);
        }
        assert_eq!(
            RetryNote::parse("refreshing the download URL after: 403 Forbidden").label(),
            "refreshing the download URL after: 403…"
        );
    }
}
