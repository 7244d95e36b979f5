//! Turning hf-xet's errors into the host's [`PluginError`] classes, with URLs redacted.
//!
//! hf-xet flattens most download failures into strings (`XetError::TaskError(String)`), so the
//! class is read from the variant when it survives and from the message otherwise.

use hubget_plugin_api::{ErrorKind, PluginError};
use xet::XetError;

/// Errors raised by this plugin itself (not by hf-xet).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the partial file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The partial file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The stream ended early or ran long.
    #[error("xet stream for {path} gave {got} bytes, expected {expected}")]
    Length {
        /// The partial file.
        path: String,
        /// Bytes received.
        got: u64,
        /// Bytes expected.
        expected: u64,
    },
}

impl From<Error> for PluginError {
    fn from(e: Error) -> Self {
        let kind = match e {
            Error::Write { .. } => ErrorKind::IO,
            Error::Length { .. } => ErrorKind::INTEGRITY,
        };
        PluginError::new(kind, redact(&e.to_string())).retryable(kind == ErrorKind::INTEGRITY)
    }
}

/// Classifies an hf-xet error; `context` names the operation and file.
pub fn from_xet(context: &str, e: &XetError) -> PluginError {
    let message = redact(&format!("{context}: {e}"));
    let (kind, retryable) = match e {
        XetError::KeyboardInterrupt | XetError::UserCancelled(_) | XetError::Cancelled(_) => {
            (ErrorKind::CANCELLED, true)
        }
        XetError::Authentication(_) => (ErrorKind::AUTH, false),
        XetError::Network(_) => (ErrorKind::NETWORK, true),
        XetError::RateLimited(_) => (ErrorKind::RATE_LIMITED, true),
        XetError::ServerError(_) => (ErrorKind::SERVER, true),
        XetError::Timeout(_) => (ErrorKind::TIMEOUT, true),
        XetError::NotFound(_) => (ErrorKind::NOT_FOUND, false),
        XetError::DataIntegrity(_) => (ErrorKind::INTEGRITY, false),
        XetError::Io(_) => (ErrorKind::IO, false),
        XetError::Configuration(_) | XetError::WrongRuntimeMode(_) => (ErrorKind::OTHER, false),
        _ => classify_message(&e.to_string()),
    };
    PluginError::new(kind, message).retryable(retryable)
}

/// Classifies a flattened error message (hf-xet's `TaskError`), most specific first.
///
/// URLs are left out before matching (a port such as `:45401` or a hash must not read as a
/// status), and numeric needles (`"401"`) match only as whole numbers.
pub fn classify_message(message: &str) -> (ErrorKind, bool) {
    let m = message
        .to_ascii_lowercase()
        .split_whitespace()
        .filter(|word| !word.contains("://"))
        .collect::<Vec<_>>()
        .join(" ");
    let has = |needles: &[&str]| needles.iter().any(|n| contains_needle(&m, n));
    if has(&["cancel", "keyboard interrupt"]) {
        (ErrorKind::CANCELLED, true)
    } else if has(&["429", "too many requests", "rate limit"]) {
        (ErrorKind::RATE_LIMITED, true)
    } else if has(&[
        "auth error",
        "unauthorized",
        "forbidden",
        "401",
        "403",
        "presigned url expired",
    ]) {
        (ErrorKind::AUTH, false)
    } else if has(&["timed out", "timeout", "deadline"]) {
        (ErrorKind::TIMEOUT, true)
    } else if has(&["server error", " 500", " 502", " 503", " 504"]) {
        (ErrorKind::SERVER, true)
    } else if has(&["not found", "404"]) {
        (ErrorKind::NOT_FOUND, false)
    } else if has(&[
        "size mismatch",
        "corrupted",
        "format error",
        "decompress",
        "lz4",
        "hash mismatch",
        "chunk header",
        "malformed",
    ]) {
        (ErrorKind::INTEGRITY, false)
    } else if has(&[
        "error sending request",
        "connection",
        "connect",
        "network",
        "dns",
        "reset",
        "broken pipe",
        "request error",
        "incomplete",
        "body",
    ]) {
        (ErrorKind::NETWORK, true)
    } else if has(&["i/o error", "io error", "no space", "permission denied"]) {
        (ErrorKind::IO, false)
    } else {
        (ErrorKind::OTHER, true)
    }
}

/// Whether `needle` occurs in `haystack`; a needle that is a number must stand alone (no digit
/// or letter right before or after it), so `401` does not match inside `45401` or a hex hash.
fn contains_needle(haystack: &str, needle: &str) -> bool {
    if !needle.trim().chars().all(|c| c.is_ascii_digit()) {
        return haystack.contains(needle);
    }
    let needle = needle.trim();
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Removes query strings (signed URLs, tokens) and `Bearer` values from a message.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(q) = rest.find('?') {
        let (head, tail) = rest.split_at(q);
        out.push_str(head);
        // Only a `?` inside a URL-like word is a query string.
        let word_start = head.rfind(|c: char| c.is_whitespace() || c == '(' || c == '"');
        let word = &head[word_start.map_or(0, |i| i + 1)..];
        if word.contains("://") || word.starts_with('/') {
            out.push_str("?<redacted>");
            let end = tail
                .find(|c: char| c.is_whitespace() || c == ')' || c == '"' || c == ',')
                .unwrap_or(tail.len());
            rest = &tail[end..];
        } else {
            out.push('?');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    redact_bearer(&out)
}

fn redact_bearer(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("Bearer ") {
        out.push_str(&rest[..i + "Bearer ".len()]);
        out.push_str("<redacted>");
        let tail = &rest[i + "Bearer ".len()..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == ',')
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_bearer_values_are_redacted() {
        let m = "error sending request for url (http://127.0.0.1:9/v1/fetch_term?term=abc&sig=zz) Bearer hf_secret, done?";
        let r = redact(m);
        assert!(!r.contains("sig=zz") && !r.contains("hf_secret"), "{r}");
        assert!(
            r.contains("http://127.0.0.1:9/v1/fetch_term?<redacted>)"),
            "{r}"
        );
        assert!(r.ends_with("done?"), "{r}");
    }

    #[test]
    fn flattened_messages_are_classified() {
        let k = |m: &str| classify_message(m).0;
        assert_eq!(
            k(
                "Task error: Client error: Request error: error sending request for url (http://x/), domain: x"
            ),
            ErrorKind::NETWORK
        );
        assert_eq!(
            k("HTTP status server error (503 Service Unavailable) for url"),
            ErrorKind::SERVER
        );
        assert_eq!(
            k("File size mismatch: expected 5 bytes but downloaded 4 bytes"),
            ErrorKind::INTEGRITY
        );
        assert_eq!(k("User cancelled: x"), ErrorKind::CANCELLED);
        assert_eq!(k("something odd"), ErrorKind::OTHER);
        assert!(classify_message("connection refused").1);
    }

    #[test]
    fn xet_variants_keep_their_class() {
        let e = from_xet(
            "download a.bin",
            &XetError::ServerError("500 for http://h/x?t=1".into()),
        );
        assert_eq!(e.kind, ErrorKind::SERVER);
        assert!(e.retryable);
        assert!(!e.message.contains("t=1"), "{}", e.message);
        let e = from_xet(
            "a",
            &XetError::TaskError("Auth error: token refresh failed".into()),
        );
        assert_eq!(e.kind, ErrorKind::AUTH);
    }

    #[test]
    fn ports_and_hashes_do_not_read_as_statuses() {
        let message = "Task error: CAS Client Error: Request error: HTTP status server error (503 Service \
                       Unavailable), domain: http://127.0.0.1:45401/v2/reconstructions/ed00cafdcc40b60e4395f0a3";
        assert_eq!(classify_message(message), (ErrorKind::SERVER, true));
        assert_eq!(
            classify_message("request to http://127.0.0.1:4290/x failed: connection reset").0,
            ErrorKind::NETWORK
        );
        assert_eq!(
            classify_message("HTTP status client error (401 Unauthorized)").0,
            ErrorKind::AUTH
        );
        assert_eq!(
            classify_message("status 404 for term a404b").0,
            ErrorKind::NOT_FOUND
        );
    }
}
