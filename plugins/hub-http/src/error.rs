//! Error classification shared by every first-party plugin: HTTP statuses and transport
//! failures become [`PluginError`]s with the right kind, retryability and `Retry-After`.
//!
//! Messages carry context (`GET <url>`, the query string stripped) and never a token: URLs go
//! through [`redact_url`], and reqwest errors are rendered without their URL.

use std::time::{Duration, SystemTime};

use hubget_plugin_api::{ErrorKind, PluginError};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

/// `X-Error-Code`, the Hub's machine-readable error name (`RepoNotFound`, `GatedRepo`, ...).
pub const X_ERROR_CODE: &str = "x-error-code";
/// `X-Error-Message`, the Hub's human-readable error text.
pub const X_ERROR_MESSAGE: &str = "x-error-message";

/// A URL safe for messages and logs: no user info, no query string (signed URLs keep their
/// signature there), no fragment.
pub fn redact_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// `"<METHOD> <redacted url>"`, the context every HTTP error message starts with.
pub fn request_context(method: &Method, url: &Url) -> String {
    format!("{method} {}", redact_url(url))
}

/// Parses `Retry-After` (delta seconds or an HTTP date) into a wait, if present and valid.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Classifies an HTTP error status. `context` is usually [`request_context`].
///
/// * 401/403 → `AUTH` (final); the Hub's `X-Error-Code` (`GatedRepo`, `RepoNotFound`) is named
///   in the message, with a hint about tokens;
/// * 404/410 → `NOT_FOUND` (final), naming `RepoNotFound`/`RevisionNotFound`/`EntryNotFound`;
/// * 408 → `TIMEOUT`, 429 → `RATE_LIMITED` (both retryable, `retry_after_ms` from `Retry-After`);
/// * 5xx → `SERVER` (retryable, `Retry-After` honoured when sent);
/// * 416 → `PROTOCOL`, other 4xx → `OTHER` (final).
pub fn classify(status: StatusCode, headers: &HeaderMap, context: &str) -> PluginError {
    let code = header_str(headers, X_ERROR_CODE);
    let hub_message = header_str(headers, X_ERROR_MESSAGE);
    let mut message = format!("{context}: {status}");
    if let Some(code) = code {
        message.push_str(&format!(" [{code}]"));
    }
    if let Some(text) = hub_message {
        let text: String = text.chars().take(200).collect();
        message.push_str(&format!(": {text}"));
    }
    let wait = retry_after(headers);
    let (kind, retryable) = match status.as_u16() {
        401 | 403 => {
            message.push_str(match code {
                Some("GatedRepo") => {
                    " (gated repository: accept its terms on the Hub and use a token that has access)"
                }
                _ => " (private, gated or missing repository? set HF_TOKEN or pass --token)",
            });
            (ErrorKind::AUTH, false)
        }
        404 | 410 => (ErrorKind::NOT_FOUND, false),
        408 => (ErrorKind::TIMEOUT, true),
        429 => (ErrorKind::RATE_LIMITED, true),
        416 => (ErrorKind::PROTOCOL, false),
        500..=599 => (ErrorKind::SERVER, true),
        _ => (ErrorKind::OTHER, false),
    };
    let mut error = PluginError::new(kind, message)
        .retryable(retryable)
        .with_status(status.as_u16());
    if let Some(wait) = wait {
        error = error.with_retry_after_ms(wait.as_millis().min(u128::from(u64::MAX)) as u64);
    }
    error
}

/// Classifies a transport failure (connect, reset, timeout, body read) from reqwest.
///
/// Timeouts → `TIMEOUT`, everything on the wire → `NETWORK`, both retryable; builder errors
/// (a malformed URL or header) → `CONFIG`, final. The reqwest URL is dropped from the message
/// (it may carry a signed query); the cause chain is kept.
pub fn classify_transport(error: &reqwest::Error, context: &str) -> PluginError {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !causes.contains(&text) {
            causes.push(text);
        }
        source = cause.source();
    }
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "connection failed while reading the body"
    } else if error.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    let mut message = format!("{context}: {what}");
    if !causes.is_empty() {
        message.push_str(": ");
        message.push_str(&causes.join(": "));
    }
    if error.is_builder() {
        PluginError::new(ErrorKind::CONFIG, message)
    } else if error.is_timeout() {
        PluginError::new(ErrorKind::TIMEOUT, message).retryable(true)
    } else if error.is_connect() && causes.iter().any(|c| c.contains("dns error")) {
        // A name that does not resolve does not start resolving in the seconds a retry waits.
        PluginError::new(ErrorKind::NETWORK, message)
    } else {
        PluginError::new(ErrorKind::NETWORK, message).retryable(true)
    }
}

/// A `PROTOCOL` error: the server answered something that breaks the protocol. Final.
pub fn protocol(context: &str, what: impl std::fmt::Display) -> PluginError {
    PluginError::new(ErrorKind::PROTOCOL, format!("{context}: {what}"))
}

/// An `IO` error on a local file, naming the path. Final.
pub fn io(path: &std::path::Path, what: &str, error: &std::io::Error) -> PluginError {
    PluginError::new(ErrorKind::IO, format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn auth_statuses_are_final_and_name_the_hub_code() {
        for status in [401, 403] {
            let e = classify(
                StatusCode::from_u16(status).unwrap(),
                &headers(&[(X_ERROR_CODE, "GatedRepo")]),
                "GET http://h/x",
            );
            assert_eq!(e.kind, ErrorKind::AUTH);
            assert!(!e.retryable);
            assert_eq!(e.http_status, status);
            assert!(e.message.contains("GatedRepo"), "{}", e.message);
            assert!(e.message.starts_with("GET http://h/x: "), "{}", e.message);
        }
        let e = classify(
            StatusCode::UNAUTHORIZED,
            &headers(&[(X_ERROR_CODE, "RepoNotFound")]),
            "c",
        );
        assert!(e.message.contains("RepoNotFound") && e.message.contains("HF_TOKEN"));
    }

    #[test]
    fn not_found_names_what_is_missing() {
        for code in ["RepoNotFound", "RevisionNotFound", "EntryNotFound"] {
            let e = classify(
                StatusCode::NOT_FOUND,
                &headers(&[(X_ERROR_CODE, code), (X_ERROR_MESSAGE, "nope")]),
                "c",
            );
            assert_eq!(e.kind, ErrorKind::NOT_FOUND);
            assert!(!e.retryable);
            assert!(e.message.contains(code) && e.message.contains("nope"));
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retryable() {
        let e = classify(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "3")]),
            "c",
        );
        assert_eq!(e.kind, ErrorKind::RATE_LIMITED);
        assert!(e.retryable);
        assert_eq!(e.retry_after_ms, 3000);

        let e = classify(StatusCode::REQUEST_TIMEOUT, &HeaderMap::new(), "c");
        assert_eq!((e.kind, e.retryable), (ErrorKind::TIMEOUT, true));

        for status in [500, 502, 503, 504] {
            let e = classify(
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                "c",
            );
            assert_eq!((e.kind, e.retryable), (ErrorKind::SERVER, true));
        }
        for status in [400, 409, 422] {
            let e = classify(
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                "c",
            );
            assert_eq!((e.kind, e.retryable), (ErrorKind::OTHER, false));
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        let later = SystemTime::now() + Duration::from_secs(120);
        let date = httpdate::fmt_http_date(later);
        let wait = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(wait > Duration::from_secs(100) && wait <= Duration::from_secs(120));
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)])),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    #[test]
    fn redaction_strips_query_and_credentials() {
        let url = Url::parse("https://user:pw@cdn.example/x/y?X-Amz-Signature=abc&t=1#f").unwrap();
        assert_eq!(redact_url(&url), "https://cdn.example/x/y");
        assert_eq!(
            request_context(&Method::GET, &url),
            "GET https://cdn.example/x/y"
        );
    }
}
