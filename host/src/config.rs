//! The config file (TOML): where it is found, its shape, and the built-in defaults.
//!
//! Lookup: `--config FILE` > `HUBGET_CONFIG` > `$XDG_CONFIG_HOME/hubget/config.toml` (or
//! `~/.config/hubget/config.toml`) > none (built-in defaults, [`DEFAULT_CONFIG`]). A file named
//! by `--config` or `HUBGET_CONFIG` must exist; the default location is optional. Unknown keys are
//! errors that name the file, the line and the key. `[plugins.<name>]` tables are not checked
//! here: each goes verbatim (as TOML text) to that plugin, which rejects unknown keys itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::env::Env;
use crate::error::HostError;

/// The built-in defaults, in config-file syntax. Every key a user may set appears here.
pub const DEFAULT_CONFIG: &str = r#"# hubget configuration: copy to ~/.config/hubget/config.toml and edit.
# Precedence everywhere: command line > environment > this file > built-in defaults.

# Extra directories searched for backend plugins (libhubget_<name>.so), before
# HUBGET_PLUGIN_DIR and the directory of the hubget executable. Relative paths are
# relative to this file.
plugin_dirs = []

[backends]
# Fallback order; `--backend NAME` puts NAME first, `--no-fallback` uses it alone.
order = ["lfs", "xet", "mirror"]

[hub]
# The Hub origin (HF_ENDPOINT, --endpoint).
endpoint = "https://huggingface.co"

[download]
# The Hugging Face cache (HF_HUB_CACHE, --cache-dir); empty means $HF_HOME/hub.
cache_dir = ""
# Files downloaded at once (--max-workers).
max_workers = 8
# Seconds without progress before a backend call is cancelled (--stall-timeout).
stall_timeout_secs = 30
# Connections per large file (--connections).
connections_per_file = 8
# Size of one range request, in MiB.
range_size_mib = 16
# Attempts per request for retryable failures (1 = no retry).
max_attempts = 5
# Seconds to wait for another process's lock on a file.
lock_timeout_secs = 600
# Bandwidth cap for the whole run (--limit-rate, HUBGET_LIMIT_RATE), e.g. "50M"; empty: none.
limit_rate = ""

[network]
# Proxy URL for all requests; empty means the usual HTTPS_PROXY / NO_PROXY variables.
proxy = ""
# PEM file of extra trusted CA certificates; empty means none.
ca_bundle = ""
connect_timeout_secs = 10
read_timeout_secs = 30
# The largest JSON answer (a page of the file list, an LFS batch, a token) read from a server, in MiB.
max_metadata_mib = 64
# Allow the Hub token over plain http:// to a host that is not this machine (--allow-insecure-http).
allow_insecure_http = false

# [plugins.<name>] tables go verbatim to that plugin, for example:
# [plugins.mirror]
# endpoints = ["https://hf-mirror.example"]
"#;

/// The parsed config file. Every key is optional; missing ones fall back to the defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Extra plugin directories.
    pub plugin_dirs: Option<Vec<PathBuf>>,
    /// `[backends]`.
    #[serde(default)]
    pub backends: BackendsSection,
    /// `[hub]`.
    #[serde(default)]
    pub hub: HubSection,
    /// `[download]`.
    #[serde(default)]
    pub download: DownloadSection,
    /// `[network]`.
    #[serde(default)]
    pub network: NetworkSection,
    /// `[plugins.<name>]` tables, passed verbatim to each plugin.
    #[serde(default)]
    pub plugins: BTreeMap<String, toml::Table>,
}

/// `[backends]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendsSection {
    /// The fallback order.
    pub order: Option<Vec<String>>,
}

/// `[hub]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    /// The Hub origin.
    pub endpoint: Option<String>,
}

/// `[download]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DownloadSection {
    /// The cache directory (empty: `$HF_HOME/hub`).
    pub cache_dir: Option<PathBuf>,
    /// Files downloaded at once.
    pub max_workers: Option<usize>,
    /// Stall watchdog, seconds.
    pub stall_timeout_secs: Option<u64>,
    /// Connections per large file.
    pub connections_per_file: Option<u32>,
    /// Range request size, MiB.
    pub range_size_mib: Option<u64>,
    /// Attempts per request.
    pub max_attempts: Option<u32>,
    /// Lock wait, seconds.
    pub lock_timeout_secs: Option<u64>,
    /// Bandwidth cap (empty: none).
    pub limit_rate: Option<String>,
}

/// `[network]`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Proxy URL (empty: none).
    pub proxy: Option<String>,
    /// Extra CA bundle (empty: none).
    pub ca_bundle: Option<PathBuf>,
    /// Connect timeout, seconds.
    pub connect_timeout_secs: Option<u64>,
    /// Read timeout, seconds.
    pub read_timeout_secs: Option<u64>,
    /// Largest JSON answer read, MiB.
    pub max_metadata_mib: Option<u64>,
    /// Send the Hub token over plain http:// to a non-loopback host.
    pub allow_insecure_http: Option<bool>,
}

/// A config file that was found and parsed (or none).
#[derive(Debug, Clone, Default)]
pub struct LoadedConfig {
    /// The parsed contents (all `None` when there is no file).
    pub file: ConfigFile,
    /// The file, if one was used.
    pub path: Option<PathBuf>,
    /// How it was found: `--config`, `HUBGET_CONFIG` or `default location`.
    pub origin: Option<&'static str>,
}

impl LoadedConfig {
    /// Finds and parses the config file: `cli_path` (from `--config`) > `HUBGET_CONFIG` > the
    /// default location, if it exists.
    pub fn load(cli_path: Option<&Path>, env: &Env) -> Result<LoadedConfig, HostError> {
        let (path, origin, required) = if let Some(p) = cli_path {
            (p.to_path_buf(), "--config", true)
        } else if let Some(p) = env.get("HUBGET_CONFIG") {
            (PathBuf::from(p), "HUBGET_CONFIG", true)
        } else {
            (default_location(env), "default location", false)
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                log::debug!("no config file at {}", path.display());
                return Ok(LoadedConfig::default());
            }
            Err(source) if required => {
                return Err(HostError::ConfigRead {
                    path,
                    origin,
                    source,
                });
            }
            Err(source) => {
                return Err(HostError::io(
                    format!("cannot read config file {}", path.display()),
                    source,
                ));
            }
        };
        let mut file = parse(&text).map_err(|message| HostError::Config {
            path: path.clone(),
            message,
        })?;
        // Relative plugin directories are relative to the file.
        if let (Some(dirs), Some(base)) = (file.plugin_dirs.as_mut(), path.parent()) {
            for dir in dirs.iter_mut() {
                *dir = expand_home(dir, env);
                if dir.is_relative() {
                    *dir = base.join(&*dir);
                }
            }
        }
        log::debug!("using config file {} (from {origin})", path.display());
        Ok(LoadedConfig {
            file,
            path: Some(path),
            origin: Some(origin),
        })
    }
}

/// `$XDG_CONFIG_HOME/hubget/config.toml`, or `~/.config/hubget/config.toml`.
pub fn default_location(env: &Env) -> PathBuf {
    let base = env
        .get("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| env.home().join(".config"));
    base.join("hubget").join("config.toml")
}

/// Parses config text; the error is one line naming the line, the table and the key.
pub fn parse(text: &str) -> Result<ConfigFile, String> {
    toml::from_str(text).map_err(|e| describe_toml_error(text, &e))
}

/// The built-in defaults, parsed.
pub fn defaults() -> ConfigFile {
    // A unit test checks that this parses.
    parse(DEFAULT_CONFIG).unwrap_or_default()
}

/// Expands a leading `~/` with `$HOME`.
pub fn expand_home(path: &Path, env: &Env) -> PathBuf {
    match path.strip_prefix("~") {
        Ok(rest) => env.home().join(rest),
        Err(_) => path.to_path_buf(),
    }
}

fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let Some(span) = error.span() else {
        return message;
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        });
    let key = text
        .get(span.clone())
        .map(str::trim)
        .filter(|k| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        })
        .map(|k| match &table {
            Some(t) => format!("{t}.{k}"),
            None => k.to_owned(),
        });
    let mut out = format!("line {line}");
    if let Some(key) = key {
        out.push_str(&format!(", key `{key}`"));
    } else if let Some(t) = table {
        out.push_str(&format!(", in [{t}]"));
    }
    out.push_str(": ");
    out.push_str(&message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_are_complete() {
        let d = parse(DEFAULT_CONFIG).expect("DEFAULT_CONFIG parses");
        assert_eq!(
            d.backends.order.as_deref(),
            Some(&["lfs".to_owned(), "xet".to_owned(), "mirror".to_owned()][..])
        );
        assert!(d.plugin_dirs.is_some() && d.hub.endpoint.is_some());
        let dl = &d.download;
        assert!(dl.cache_dir.is_some() && dl.max_workers == Some(8));
        assert!(dl.stall_timeout_secs.is_some() && dl.connections_per_file.is_some());
        assert!(dl.range_size_mib.is_some() && dl.max_attempts.is_some());
        assert!(dl.lock_timeout_secs.is_some() && dl.limit_rate.is_some());
        let n = &d.network;
        assert!(n.proxy.is_some() && n.ca_bundle.is_some());
        assert!(n.connect_timeout_secs.is_some() && n.read_timeout_secs.is_some());
        assert!(n.max_metadata_mib.is_some() && n.allow_insecure_http.is_some());
    }

    #[test]
    fn unknown_keys_name_line_table_and_key() {
        let err =
            parse("[hub]\nendpoint = \"http://x\"\n\n[download]\nmax_workers = 2\nbogus = 1\n")
                .unwrap_err();
        assert!(err.starts_with("line 6, key `download.bogus`"), "{err}");
        assert!(err.contains("unknown field `bogus`"), "{err}");
        let err = parse("colour = 1\n").unwrap_err();
        assert!(err.contains("key `colour`"), "{err}");
    }

    #[test]
    fn plugin_tables_are_free_form() {
        let c = parse("[plugins.mirror]\nendpoints = [\"a\"]\nanything = { x = 1 }\n").unwrap();
        assert_eq!(c.plugins["mirror"].len(), 2);
    }

    #[test]
    fn lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[hub]\nendpoint = \"http://env\"\n").unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(xdg.join("hubget")).unwrap();
        std::fs::write(xdg.join("hubget/config.toml"), "plugin_dirs = [\"p\"]\n").unwrap();

        let env = Env::from_pairs([("XDG_CONFIG_HOME", xdg.to_str().unwrap())]);
        let c = LoadedConfig::load(None, &env).unwrap();
        assert_eq!(c.origin, Some("default location"));
        assert_eq!(c.file.plugin_dirs.unwrap(), vec![xdg.join("hubget/p")]);

        let env = Env::from_pairs([
            ("XDG_CONFIG_HOME", xdg.to_str().unwrap()),
            ("HUBGET_CONFIG", file.to_str().unwrap()),
        ]);
        let c = LoadedConfig::load(None, &env).unwrap();
        assert_eq!(c.origin, Some("HUBGET_CONFIG"));

        let missing = dir.path().join("missing.toml");
        let err = LoadedConfig::load(Some(&missing), &env).unwrap_err();
        assert!(err.to_string().contains("from --config"), "{err}");

        let empty = Env::from_pairs([("HOME", dir.path().to_str().unwrap())]);
        assert!(LoadedConfig::load(None, &empty).unwrap().path.is_none());
    }
}
