//! The config file (TOML): where it is found, its shape, and the built-in defaults.
//!
//! Lookup: `--config FILE` > `HUBGET_CONFIG` > `$XDG_CONFIG_HOME/hubget/config.toml` (or
//! `~/.config/hubget/config.toml`) > none (built-in defaults, [`default_config`]). A file named
//! by `--config` or `HUBGET_CONFIG` must exist; the default location is optional. Unknown keys are
//! errors that name the file, the line and the key. `[plugins.<name>]` tables are not checked
//! here: each goes verbatim (as TOML text) to that plugin, which rejects unknown keys itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::env::Env;
use crate::error::HostError;

/// One key of the config file: the one place its name, command-line flag, environment
/// variables, default and help are written. The section structs, [`KEYS`], the default config
/// text ([`default_config`]) and `hubget config show` all come from the table in
/// [`config_keys!`]; `Settings::resolve` reads each key's flag and variables from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The `[section]` (empty for a top-level key).
    pub section: &'static str,
    /// The key within it.
    pub name: &'static str,
    /// The command-line flag that overrides it.
    pub flag: Option<&'static str>,
    /// Environment variables that override it, first found wins.
    pub env: &'static [&'static str],
    /// The default, in TOML.
    pub default: &'static str,
    /// One line of help (the comment above it in the default config; may start with a space,
    /// as doc comments do).
    pub help: &'static str,
}

impl Key {
    /// `section.name` (or `name` at the top level): how `config show` names it.
    pub fn path(&self) -> String {
        if self.section.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }

    /// The first of its environment variables that is set (and not empty), with its name.
    pub fn from_env(&self, env: &Env) -> Option<(String, &'static str)> {
        self.env
            .iter()
            .find_map(|name| env.get(name).filter(|v| !v.is_empty()).map(|v| (v, *name)))
    }
}

macro_rules! opt {
    () => {
        None
    };
    ($x:literal) => {
        Some($x)
    };
}

/// The config file's keys, section by section: `name: Type = "default TOML"`, optionally
/// `flag "--x"` and `env "VAR" ...`, with a one-line doc comment as the help. Generates one
/// `serde` struct per section (every field optional, unknown keys refused), a `keys::<section>`
/// module with one [`Key`] per key, and [`KEYS`] in file order.
macro_rules! config_keys {
    ($(
        $section:ident: $Struct:ident {
            $(
                #[doc = $help:literal]
                $key:ident: $ty:ty = $default:literal $(, flag $flag:literal)? $(, env $($env:literal)+)?;
            )*
        }
    )*) => {
        $(
            #[doc = concat!("`[", stringify!($section), "]`.")]
            #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
            #[serde(deny_unknown_fields)]
            pub struct $Struct {
                $(
                    #[doc = $help]
                    pub $key: Option<$ty>,
                )*
            }
        )*

        /// Every key of the table, one constant each (`keys::download::max_workers`).
        pub mod keys {
            use super::Key;
            /// The top-level `plugin_dirs`.
            pub const PLUGIN_DIRS: Key = Key {
                section: "",
                name: "plugin_dirs",
                flag: None,
                env: &[],
                default: "[]",
                help: "Extra directories searched for backend plugins (libhubget_<name>.so), before HUBGET_PLUGIN_DIR and the directory of the hubget executable; relative paths are relative to this file.",
            };
            $(
                #[doc = concat!("`[", stringify!($section), "]`.")]
                #[allow(non_upper_case_globals)]
                pub mod $section {
                    use super::Key;
                    $(
                        #[doc = $help]
                        pub const $key: Key = Key {
                            section: stringify!($section),
                            name: stringify!($key),
                            flag: opt!($($flag)?),
                            env: &[$($($env),+)?],
                            default: $default,
                            help: $help,
                        };
                    )*
                }
            )*
        }

        /// Every key of the config file, in file order.
        pub const KEYS: &[Key] = &[keys::PLUGIN_DIRS, $($(keys::$section::$key,)*)*];
    };
}

config_keys! {
    backends: BackendsSection {
        /// Fallback order; `--backend NAME` puts NAME first, `--no-fallback` uses it alone.
        order: Vec<String> = r#"["lfs", "xet", "mirror"]"#;
    }
    hub: HubSection {
        /// The Hub origin.
        endpoint: String = r#""https://huggingface.co""#, flag "--endpoint", env "HF_ENDPOINT";
    }
    download: DownloadSection {
        /// The Hugging Face cache; empty means $HF_HOME/hub.
        cache_dir: PathBuf = r#""""#, flag "--cache-dir", env "HF_HUB_CACHE" "HUGGINGFACE_HUB_CACHE";
        /// Files downloaded at once.
        max_workers: usize = "8", flag "--max-workers";
        /// Seconds without progress before a backend call is cancelled.
        stall_timeout_secs: u64 = "30", flag "--stall-timeout";
        /// Connections per large file.
        connections_per_file: u32 = "8", flag "--connections";
        /// Size of one range request, in MiB.
        range_size_mib: u64 = "16";
        /// Attempts per request for retryable failures (1 = no retry).
        max_attempts: u32 = "5";
        /// Seconds to wait for another process's lock on a file.
        lock_timeout_secs: u64 = "600";
        /// Bandwidth cap for the whole run, e.g. "50M" (bytes/s, 1024-based suffixes); empty: none.
        limit_rate: String = r#""""#, flag "--limit-rate", env "HUBGET_LIMIT_RATE";
        /// Longest wait, in seconds, for a server's rate-limit window (the Hub's is 5 minutes) before a request fails; a wait is shown, never an error.
        max_rate_limit_wait_secs: u64 = "600", flag "--max-rate-limit-wait", env "HUBGET_MAX_RATE_LIMIT_WAIT";
    }
    network: NetworkSection {
        /// Proxy URL for all requests; empty means the usual HTTPS_PROXY / NO_PROXY variables.
        proxy: String = r#""""#;
        /// PEM file of extra trusted CA certificates; empty means none.
        ca_bundle: PathBuf = r#""""#;
        /// Seconds to wait for a connection.
        connect_timeout_secs: u64 = "10";
        /// Seconds to wait for the next bytes of an answer.
        read_timeout_secs: u64 = "30";
        /// The largest JSON answer (a page of the file list, an LFS batch, a token) read from a server, in MiB.
        max_metadata_mib: u64 = "64";
        /// Allow the Hub token over plain http:// to a host that is not this machine.
        allow_insecure_http: bool = "false", flag "--allow-insecure-http";
    }
}

/// The built-in defaults in config-file syntax, made from [`KEYS`]: every key with its help, its
/// flag and variables, and its default. `hubget config show --defaults` prints it.
pub fn default_config() -> &'static str {
    static TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut out = String::from(
            "# hubget configuration: copy to ~/.config/hubget/config.toml and edit.\n\
             # Precedence everywhere: command line > environment > this file > built-in defaults.\n",
        );
        let mut section = None;
        for key in KEYS {
            if section != Some(key.section) {
                section = Some(key.section);
                out.push('\n');
                if !key.section.is_empty() {
                    out.push_str(&format!("[{}]\n", key.section));
                }
            }
            let overrides: Vec<&str> = key
                .flag
                .into_iter()
                .chain(key.env.iter().copied())
                .collect();
            out.push_str(&format!("# {}", key.help.trim()));
            if !overrides.is_empty() {
                out.push_str(&format!(" ({})", overrides.join(", ")));
            }
            out.push_str(&format!("\n{} = {}\n", key.name, key.default));
        }
        out.push_str(
            "\n# [plugins.<name>] tables go verbatim to that plugin, for example:\n\
             # [plugins.mirror]\n\
             # endpoints = [\"https://hf-mirror.example\"]\n",
        );
        out
    });
    &TEXT
}

/// The parsed config file. Every key is optional; missing ones fall back to the defaults.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Extra plugin directories ([`keys::PLUGIN_DIRS`]).
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
    fn the_default_config_sets_every_key_of_the_table_with_its_type() {
        let d = parse(default_config()).expect("the default config parses into the typed sections");
        assert_eq!(
            d.backends.order.as_deref(),
            Some(&["lfs".to_owned(), "xet".to_owned(), "mirror".to_owned()][..])
        );
        assert_eq!(d.download.max_workers, Some(8));
        let table: toml::Table = toml::from_str(default_config()).unwrap();
        let mut set = Vec::new();
        for (k, v) in &table {
            match v.as_table() {
                Some(t) => set.extend(t.keys().map(|n| format!("{k}.{n}"))),
                None => set.push(k.clone()),
            }
        }
        let mut table_keys: Vec<String> = KEYS.iter().map(Key::path).collect();
        set.sort();
        table_keys.sort();
        assert_eq!(set, table_keys, "one line per key of the table");
    }

    #[test]
    fn each_key_shows_its_help_and_overrides_in_the_default_config() {
        let text = default_config();
        for key in KEYS {
            assert!(text.contains(key.help.trim()), "{}", key.path());
        }
        assert!(text.contains("# Files downloaded at once. (--max-workers)\nmax_workers = 8\n"));
        assert!(text.contains("(--cache-dir, HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE)"));
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
