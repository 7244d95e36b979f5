//! Keeping secrets out of output: redact a token from any text, and strip the query strings
//! (signed URL parameters) and credentials of URLs before they are shown or logged.
//!
//! Use [`redact`] on any text that may hold server messages or URLs before it reaches a log
//! record, an error or stdout.

use std::borrow::Cow;
use std::sync::RwLock;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Replaces every occurrence of `secret` in `text` with [`MASK`]. Secrets shorter than 4
/// characters are not searched for (they would mask ordinary words).
pub fn redact_secret<'a>(text: &'a str, secret: &str) -> Cow<'a, str> {
    if secret.len() < 4 || !text.contains(secret) {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.replace(secret, MASK))
    }
}

/// A URL for display: its query string and fragment replaced by `?***`, and any `user:pass@`
/// credentials masked. Text that is not a URL comes back unchanged.
pub fn display_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return Cow::Borrowed(url);
    };
    let rest_start = scheme_end + 3;
    // The authority ends at the first `/` after any `user:pass@` (a password written raw may
    // hold a `/`), or at the query or fragment.
    let before_query = url[rest_start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| rest_start + i);
    let after_userinfo = url[rest_start..before_query]
        .rfind('@')
        .map_or(rest_start, |at| rest_start + at);
    let authority_end = url[after_userinfo..before_query]
        .find('/')
        .map_or(before_query, |i| after_userinfo + i);
    let authority = &url[rest_start..authority_end];
    let query_at = url[authority_end..]
        .find(['?', '#'])
        .map(|i| authority_end + i);
    let userinfo_at = authority.rfind('@');
    if query_at.is_none() && userinfo_at.is_none() {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    match userinfo_at {
        Some(at) => {
            out.push_str(MASK);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    match query_at {
        Some(q) => {
            out.push_str(&url[authority_end..q]);
            out.push('?');
            out.push_str(MASK);
        }
        None => out.push_str(&url[authority_end..]),
    }
    Cow::Owned(out)
}

/// Applies [`display_url`] to every `http://` / `https://` URL inside `text`.
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(start) = find_url_start(rest) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')'))
            .unwrap_or(tail.len());
        let shown = display_url(&tail[..end]);
        changed |= matches!(shown, Cow::Owned(_));
        out.push_str(&shown);
        rest = &tail[end..];
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(rest);
    Cow::Owned(out)
}

fn find_url_start(text: &str) -> Option<usize> {
    // Schemes are case-insensitive (`HTTPS://`); ASCII lowercasing keeps byte offsets.
    let lower = text.to_ascii_lowercase();
    let http = lower.find("http://");
    let https = lower.find("https://");
    match (http, https) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret (the Hub token) that [`redact_registered`] masks from then on, in every
/// log record (the host's logger and plugin records) and in the final error message. Secrets
/// shorter than 4 characters are ignored.
pub fn register_secret(secret: &str) {
    let secret = secret.trim();
    if secret.len() < 4 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_owned());
    }
}

/// Strips URL query strings and credentials, and masks every secret registered with
/// [`register_secret`].
pub fn redact_registered(text: &str) -> Cow<'_, str> {
    let mut out = redact_urls(text);
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = Cow::Owned(out.replace(secret.as_str(), MASK));
        }
    }
    out
}

/// Both at once: masks `token` (if any) and strips URL query strings and credentials.
pub fn redact(text: &str, token: Option<&str>) -> String {
    let urls = redact_urls(text);
    match token {
        Some(t) => redact_secret(&urls, t).into_owned(),
        None => urls.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_whatever_the_scheme_case_and_a_slash_in_the_password() {
        let text = "GET HTTPS://cdn.example/x?X-Amz-Signature=abc failed";
        assert_eq!(redact_urls(text), "GET HTTPS://cdn.example/x?*** failed");
        let url = "https://user:pa/ss@proxy.example:8080/path?q=1";
        let shown = display_url(url);
        assert_eq!(shown, "https://***@proxy.example:8080/path?***");
        assert!(!redact_urls(&format!("via {url} now")).contains("pa/ss"));
    }

    #[test]
    fn registered_secrets_are_masked() {
        register_secret("hf_registered_1234");
        register_secret("ab");
        assert_eq!(
            redact_registered("a hf_registered_1234 b https://x/y?z=1 ab"),
            "a *** b https://x/y?*** ab"
        );
    }

    #[test]
    fn secrets_are_masked_everywhere() {
        assert_eq!(
            redact_secret("Bearer hf_abcdef and hf_abcdef", "hf_abcdef"),
            "Bearer *** and ***"
        );
        assert_eq!(redact_secret("abc", "ab"), "abc");
    }

    #[test]
    fn urls_lose_queries_and_credentials() {
        assert_eq!(
            display_url("https://cdn.example/a/b.bin?X-Amz-Signature=abc&Expires=1"),
            "https://cdn.example/a/b.bin?***"
        );
        assert_eq!(
            display_url("https://user:pw@host:8080/x#frag"),
            "https://***@host:8080/x?***"
        );
        assert_eq!(display_url("https://host/x"), "https://host/x");
        assert_eq!(display_url("not a url"), "not a url");
    }

    #[test]
    fn urls_inside_text_are_redacted() {
        let text = "GET https://cdn/x?sig=1 failed; see \"http://a/b?c=d\" (retry)";
        assert_eq!(
            redact_urls(text),
            "GET https://cdn/x?*** failed; see \"http://a/b?***\" (retry)"
        );
        assert!(matches!(redact_urls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            redact(
                "token hf_secret at https://h/p?t=hf_secret",
                Some("hf_secret")
            ),
            "token *** at https://h/p?***"
        );
    }
}
