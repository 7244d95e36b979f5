//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay in `cargo test`: the
//! parsers of what a server sends, fed arbitrary bytes.

use reqwest::header::{HeaderMap, HeaderValue};

/// `data` as the value of every header a server sets that hubget parses (`RateLimit`,
/// `RateLimit-Policy`, `Retry-After`, `Link`).
pub fn headers(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut h = HeaderMap::new();
    for name in ["ratelimit", "ratelimit-policy", "retry-after", "link"] {
        h.insert(name, value.clone());
    }
    let _ = crate::quota::announced(&h);
    let _ = crate::error::retry_after(&h);
    let _ = crate::api::next_link(&h);
}

/// `data` as a tree / paths-info page and as a Git LFS batch answer: parsed and checked as the
/// API client does.
pub fn metadata_json(data: &[u8]) {
    crate::api::fuzz_metadata(data);
}

/// `data` as a `Content-Range` header value.
pub fn content_range(data: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let _ = crate::download::parse_content_range(&value);
    }
}
