//! Origins (scheme, host, port): what the token rule and the request quotas are keyed on.

use reqwest::Url;

/// Whether two URLs share scheme, host and port (default ports made explicit).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.origin() == b.origin()
}

/// `scheme://host[:port]` of a URL, for reports (`FileDone::source`).
pub fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}
