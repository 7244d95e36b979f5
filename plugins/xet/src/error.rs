//! The plugin's own errors, and the redaction every message passes through (presigned xorb
//! URLs carry signatures in their query strings).

use hubget_plugin_api::{ErrorKind, PluginError};

/// Errors raised by this plugin itself (transport errors come classified from hub-http).
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
}

impl From<Error> for PluginError {
    fn from(e: Error) -> Self {
        PluginError::new(ErrorKind::IO, redact(&e.to_string()))
    }
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
}
