//! The `[plugins.mirror]` table: endpoint mirrors, directory mirrors and their policies.
//!
//! ```toml
//! [plugins.mirror]
//! # Hub-compatible endpoints, tried in order; a string or a table.
//! endpoints = [
//!     "https://hf-mirror.example",
//!     { url = "https://artifactory.example/api/huggingfaceml/hf", timeout_secs = 300, token = "..." },
//!     { url = "https://hub-proxy.internal", send_hub_token = true },
//! ]
//! # Hugging Face cache directories (the folder holding `models--org--name`), read-only.
//! dirs = ["/shared/team-cache/hub"]
//! # How long an endpoint that failed (connection, timeout, 5xx) is skipped.
//! cooldown_secs = 30
//! # When directory mirrors may resolve a revision: "offline" (default), "always", "never".
//! resolve_from_dirs = "offline"
//! # Whether endpoints resolve revisions (true) or only serve bytes (false: another backend,
//! # e.g. lfs against the Hub, resolves, and the mirror's bytes are checked against its hashes).
//! resolve_from_endpoints = true
//! ```

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// The parsed `[plugins.mirror]` table.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Hub-compatible endpoints, in order of preference.
    pub endpoints: Vec<EndpointSpec>,
    /// Hugging Face cache directories to copy from.
    pub dirs: Vec<PathBuf>,
    /// Seconds an endpoint stays marked down after a connection failure, timeout or 5xx.
    pub cooldown_secs: u64,
    /// When directory mirrors answer `resolve`.
    pub resolve_from_dirs: DirResolve,
    /// Whether endpoint mirrors answer `resolve`.
    pub resolve_from_endpoints: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            dirs: Vec::new(),
            cooldown_secs: 30,
            resolve_from_dirs: DirResolve::Offline,
            resolve_from_endpoints: true,
        }
    }
}

/// When a directory mirror may turn a revision into a manifest (see the crate docs for why).
#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DirResolve {
    /// Only when the host runs offline (`--offline`, `HF_HUB_OFFLINE=1`): a cache snapshot is
    /// then the best answer there is. Online, another backend resolves against the Hub and the
    /// directory still serves the bytes.
    #[default]
    Offline,
    /// Always (air-gapped sites that do not set offline mode): refs may be stale and a snapshot
    /// that was downloaded in part yields a partial manifest.
    Always,
    /// Never: directories only serve bytes.
    Never,
}

/// One endpoint: a bare URL or a table with per-endpoint settings.
#[derive(Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum EndpointSpec {
    /// `"https://mirror.example"`.
    Url(String),
    /// `{ url = ..., timeout_secs = ..., send_hub_token = ..., token = ... }`.
    Table(EndpointTable),
}

/// The table form of an endpoint.
#[derive(Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EndpointTable {
    /// The base URL, as for `HF_ENDPOINT`.
    pub url: String,
    /// Time limit between two reads of a response (and to connect), in seconds; the host's
    /// read timeout by default. Cold proxies may need long ones.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Send the Hub token to this endpoint (off by default: a mirror is another party).
    #[serde(default)]
    pub send_hub_token: bool,
    /// A token of this endpoint's own, sent as `Authorization: Bearer`.
    #[serde(default)]
    pub token: Option<String>,
}

impl EndpointSpec {
    /// The table form (a bare URL has default settings).
    pub fn table(&self) -> EndpointTable {
        match self {
            Self::Url(url) => EndpointTable {
                url: url.clone(),
                timeout_secs: None,
                send_hub_token: false,
                token: None,
            },
            Self::Table(t) => t.clone(),
        }
    }
}

impl fmt::Debug for EndpointSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.table().fmt(f)
    }
}

impl fmt::Debug for EndpointTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("timeout_secs", &self.timeout_secs)
            .field("send_hub_token", &self.send_hub_token)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubget_plugin_api::ErrorKind;
    use hubget_plugin_api::sdk::parse_config;

    #[test]
    fn empty_table_is_the_default() {
        let c: Config = parse_config("mirror", "").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.cooldown_secs, 30);
        assert_eq!(c.resolve_from_dirs, DirResolve::Offline);
        assert!(c.resolve_from_endpoints);
    }

    #[test]
    fn endpoints_accept_strings_and_tables() {
        let c: Config = parse_config(
            "mirror",
            r#"
endpoints = ["http://a.example", { url = "http://b.example", timeout_secs = 5, token = "t0k" },
             { url = "http://c.example", send_hub_token = true }]
dirs = ["/nfs/hub"]
cooldown_secs = 2
resolve_from_dirs = "always"
"#,
        )
        .unwrap();
        let t: Vec<EndpointTable> = c.endpoints.iter().map(EndpointSpec::table).collect();
        assert_eq!(t[0].url, "http://a.example");
        assert!(!t[0].send_hub_token && t[0].token.is_none() && t[0].timeout_secs.is_none());
        assert_eq!(t[1].timeout_secs, Some(5));
        assert_eq!(t[1].token.as_deref(), Some("t0k"));
        assert!(t[2].send_hub_token);
        assert_eq!(c.dirs, vec![PathBuf::from("/nfs/hub")]);
        assert_eq!(c.cooldown_secs, 2);
        assert_eq!(c.resolve_from_dirs, DirResolve::Always);
        assert!(
            !format!("{c:?}").contains("t0k"),
            "tokens are redacted in Debug"
        );
    }

    #[test]
    fn typos_are_config_errors() {
        let err = parse_config::<Config>("mirror", "endpoint = [\"http://a\"]\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::CONFIG);
        assert!(err.message.contains("endpoint"), "{}", err.message);
        let err =
            parse_config::<Config>("mirror", "resolve_from_dirs = \"sometimes\"\n").unwrap_err();
        assert_eq!(err.kind, ErrorKind::CONFIG);
        let err = parse_config::<Config>(
            "mirror",
            "endpoints = [{ url = \"http://a\", tokn = \"x\" }]\n",
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::CONFIG);
    }
}
