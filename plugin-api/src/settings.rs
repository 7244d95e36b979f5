//! Host settings, handed to every backend as JSON in `new_backend`.
//!
//! JSON, not a `#[repr(C)]` struct, so that the host can add settings in 1.x without breaking
//! old plugins: unknown fields are ignored and every field has a default.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Settings the host resolved once (command line > environment > config file > defaults).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HostSettings {
    /// The Hub origin, without a trailing slash (`https://huggingface.co` by default).
    pub endpoint: String,
    /// The Hub token. Send it **only** to `endpoint`'s origin, never to a CDN, CAS or mirror
    /// host unless the user configured that; never log it.
    pub token: Option<String>,
    /// The `User-Agent` to send.
    pub user_agent: String,
    /// An explicit proxy URL for all requests (else the usual `HTTPS_PROXY`/`NO_PROXY` variables).
    pub proxy: Option<String>,
    /// A PEM bundle of extra trusted CA certificates.
    pub ca_bundle: Option<PathBuf>,
    /// Time limit to establish a connection, in seconds.
    pub connect_timeout_secs: u64,
    /// Time limit between two reads of a response, in seconds.
    pub read_timeout_secs: u64,
    /// Concurrent connections per large file.
    pub connections_per_file: u32,
    /// Size of one range request for parallel ranged downloads, in bytes.
    pub range_size: u64,
    /// Attempts per HTTP request *inside one backend call* for retryable failures (1 = no
    /// retry): a plugin resumes a stream or repeats a request up to this many times. The host
    /// retries whole calls on its own (a few times, with backoff) and then falls back to the next
    /// backend, so a plugin should not add a retry loop of its own on top of this one.
    pub max_attempts: u32,
    /// Whether the user asked for offline mode; a network backend should refuse work.
    pub offline: bool,
    /// The Hugging Face cache directory (since 1.1; absent from older hosts). Backends may read
    /// it (for example blobs to take chunks from) and keep their own data under
    /// `<cache_dir>/.hubget/<plugin name>/`; everything else in it belongs to the host.
    pub cache_dir: Option<PathBuf>,
    /// The bandwidth cap for the whole run, bytes per second (since 1.1; `None`: no cap). A
    /// backend that honours it says so with [`Features::RATE_LIMIT`](crate::Features::RATE_LIMIT).
    pub limit_rate: Option<u64>,
    /// The largest metadata (JSON) answer a backend should read from a server, in bytes (since
    /// 1.1; 64 MiB by default): a hostile server cannot make a backend buffer without bound.
    pub max_metadata_bytes: u64,
    /// The longest a backend waits for a server's rate-limit window to reset before it gives up
    /// on a request, in seconds (since 1.1; 600 by default, longer than the Hub's 5-minute
    /// window). A wait is announced as a `RETRY` event carrying a
    /// [`RateLimitNote`](crate::protocol::RateLimitNote).
    pub max_rate_limit_wait_secs: u64,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            endpoint: "https://huggingface.co".to_owned(),
            token: None,
            user_agent: "hubget".to_owned(),
            proxy: None,
            ca_bundle: None,
            connect_timeout_secs: 10,
            read_timeout_secs: 30,
            connections_per_file: 8,
            range_size: 16 * 1024 * 1024,
            max_attempts: 5,
            offline: false,
            cache_dir: None,
            limit_rate: None,
            max_metadata_bytes: 64 * 1024 * 1024,
            max_rate_limit_wait_secs: 600,
        }
    }
}

impl fmt::Debug for HostSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user_agent", &self.user_agent)
            .field("proxy", &self.proxy)
            .field("ca_bundle", &self.ca_bundle)
            .field("connect_timeout_secs", &self.connect_timeout_secs)
            .field("read_timeout_secs", &self.read_timeout_secs)
            .field("connections_per_file", &self.connections_per_file)
            .field("range_size", &self.range_size)
            .field("max_attempts", &self.max_attempts)
            .field("offline", &self.offline)
            .field("cache_dir", &self.cache_dir)
            .field("limit_rate", &self.limit_rate)
            .field("max_metadata_bytes", &self.max_metadata_bytes)
            .field("max_rate_limit_wait_secs", &self.max_rate_limit_wait_secs)
            .finish()
    }
}
