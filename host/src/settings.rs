//! The effective settings, resolved once per run from the command line, the environment, the
//! config file and the built-in defaults (in that order of precedence), each value remembering
//! where it came from for `hubget config show`.
//!
//! Environment variables follow huggingface_hub's semantics: `HF_ENDPOINT` (trailing slash
//! trimmed), `HF_TOKEN` (legacy `HUGGING_FACE_HUB_TOKEN`), `HF_TOKEN_PATH`, `HF_HOME`,
//! `HF_HUB_CACHE` (legacy `HUGGINGFACE_HUB_CACHE`), `HF_HUB_OFFLINE` (true for `1`, `ON`, `YES`,
//! `TRUE`, any case), `HF_HUB_DISABLE_IMPLICIT_TOKEN` (only `--token` counts). The token is
//! never printed: [`Settings`] redacts it in `Debug`, and `config show` says only where it came
//! from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use hubget_plugin_api::HostSettings;

use crate::config::{KEYS, Key, LoadedConfig, expand_home, keys};
pub use crate::env::{Env, is_true};
use crate::error::HostError;
use crate::isolation::protocol::SandboxPolicy;
use crate::isolation::{Mode, PluginPolicy, Policy};
use crate::loader::{ORIGIN_EXE, ORIGIN_LIB, PluginDir, search_path};

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The config file.
    ConfigFile(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line option.
    Cli(&'static str),
    /// Computed from something else (described).
    Derived(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::ConfigFile(p) => write!(f, "config file {}", p.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Cli(flag) => f.write_str(flag),
            Source::Derived(what) => f.write_str(what),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    /// The effective value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

impl<T> Setting<T> {
    fn new(value: T, source: Source) -> Self {
        Self { value, source }
    }
}

/// Settings the command line can override (filled from clap; all optional).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--endpoint`.
    pub endpoint: Option<String>,
    /// `--token`.
    pub token: Option<String>,
    /// `--cache-dir`.
    pub cache_dir: Option<PathBuf>,
    /// `--max-workers`.
    pub max_workers: Option<usize>,
    /// `--offline`.
    pub offline: bool,
    /// `--stall-timeout`.
    pub stall_timeout_secs: Option<u64>,
    /// `--connections`.
    pub connections_per_file: Option<u32>,
    /// `--limit-rate`.
    pub limit_rate: Option<String>,
    /// `--max-rate-limit-wait`.
    pub max_rate_limit_wait_secs: Option<u64>,
    /// `--backend` (or `xet` from `--use-xet`).
    pub backend: Option<String>,
    /// The flag that set `backend` (`--backend` or `--use-xet`).
    pub backend_flag: &'static str,
    /// `--no-fallback`.
    pub no_fallback: bool,
    /// `--allow-insecure-http`.
    pub allow_insecure_http: bool,
}

/// Every effective setting of a run.
#[derive(Clone)]
pub struct Settings {
    /// The config file used, and how it was found.
    pub config_file: Option<(PathBuf, &'static str)>,
    /// Plugin directories from the config file.
    pub plugin_dirs: Setting<Vec<PathBuf>>,
    /// `HUBGET_PLUGIN_DIR`, a path list.
    pub env_plugin_dirs: Option<OsString>,
    /// The configured fallback order.
    pub backend_order: Setting<Vec<String>>,
    /// `--backend NAME`: put first.
    pub preferred_backend: Option<Setting<String>>,
    /// `--no-fallback`: use the preferred backend alone.
    pub no_fallback: bool,
    /// The Hub origin, no trailing slash.
    pub endpoint: Setting<String>,
    /// The Hub token (never print it).
    pub token: Setting<Option<String>>,
    /// `HF_HOME`.
    pub hf_home: Setting<PathBuf>,
    /// The Hugging Face cache directory (`HF_HUB_CACHE`).
    pub cache_dir: Setting<PathBuf>,
    /// Offline mode.
    pub offline: Setting<bool>,
    /// Whether the cache's shared blob store is used (`HF_HUB_DISABLE_SHARED_BLOBS` turns it
    /// off, as in huggingface_hub).
    pub shared_blobs: Setting<bool>,
    /// Files downloaded at once.
    pub max_workers: Setting<usize>,
    /// Seconds without progress before a call is cancelled.
    pub stall_timeout_secs: Setting<u64>,
    /// Connections per large file.
    pub connections_per_file: Setting<u32>,
    /// The bandwidth cap for the whole run, bytes per second (0: none).
    pub limit_rate: Setting<u64>,
    /// The longest wait for a server's rate-limit window, in seconds.
    pub max_rate_limit_wait_secs: Setting<u64>,
    /// Range request size in MiB.
    pub range_size_mib: Setting<u64>,
    /// Attempts per request.
    pub max_attempts: Setting<u32>,
    /// Seconds to wait for a lock.
    pub lock_timeout_secs: Setting<u64>,
    /// Proxy URL.
    pub proxy: Setting<Option<String>>,
    /// Extra CA bundle.
    pub ca_bundle: Setting<Option<PathBuf>>,
    /// Connect timeout in seconds.
    pub connect_timeout_secs: Setting<u64>,
    /// Read timeout in seconds.
    pub read_timeout_secs: Setting<u64>,
    /// The largest metadata (JSON) answer read from a server, in MiB.
    pub max_metadata_mib: Setting<u64>,
    /// Whether the Hub token may cross plain http:// to another host.
    pub allow_insecure_http: Setting<bool>,
    /// `[plugins.<name>]` tables, without the host's keys (what each plugin sees).
    pub plugin_tables: BTreeMap<String, toml::Table>,
    /// The host's keys of those tables (isolation, sandbox, memory limit).
    pub plugin_policies: BTreeMap<String, PluginPolicy>,
    /// `HUBGET_PLUGIN_ISOLATION`: the mode of every plugin without its own `isolation`.
    pub default_isolation: Option<Mode>,
    /// Where isolated plugins may write (the commands set the target's partial-file
    /// directories; empty: the cache).
    pub plugin_write_dirs: Vec<PathBuf>,
    /// The user's home (what the sandbox of isolated plugins keeps them out of).
    pub home: Option<PathBuf>,
    /// The `User-Agent` backends send.
    pub user_agent: String,
    /// Every config-file key as `config show` prints it (value, source), recorded by `resolve`.
    shown: BTreeMap<String, (serde_json::Value, String)>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("config_file", &self.config_file)
            .field("endpoint", &self.endpoint)
            .field(
                "token",
                &format_args!("{} ({})", token_state(&self.token.value), self.token.source),
            )
            .field("cache_dir", &self.cache_dir)
            .field("backend_order", &self.backend_order)
            .field("offline", &self.offline)
            .finish_non_exhaustive()
    }
}

fn token_state(token: &Option<String>) -> &'static str {
    if token.is_some() { "set" } else { "not set" }
}

/// Resolves the keys of the config table ([`KEYS`]) one by one, recording each value and its
/// source for `config show`.
struct Resolver<'a> {
    file_path: Option<&'a Path>,
    shown: BTreeMap<String, (serde_json::Value, String)>,
}

impl Resolver<'_> {
    /// The first present value for `key`: the command line (its flag), the environment (one of
    /// its variables), the config file, its default.
    fn pick<T: serde::de::DeserializeOwned + serde::Serialize>(
        &mut self,
        key: &Key,
        cli: Option<T>,
        env: Option<(T, &'static str)>,
        file: Option<T>,
    ) -> Result<Setting<T>, HostError> {
        let setting = if let Some(v) = cli {
            Setting::new(v, Source::Cli(key.flag.unwrap_or("the command line")))
        } else if let Some((v, name)) = env {
            Setting::new(v, Source::Env(name))
        } else if let (Some(v), Some(p)) = (file, self.file_path) {
            Setting::new(v, Source::ConfigFile(p.to_owned()))
        } else {
            Setting::new(default_of(key)?, Source::Default)
        };
        self.show(
            key,
            serde_json::to_value(&setting.value).unwrap_or_default(),
            &setting.source,
        );
        Ok(setting)
    }

    /// [`Self::pick`] for a key only the config file sets.
    fn file<T: serde::de::DeserializeOwned + serde::Serialize>(
        &mut self,
        key: &Key,
        file: Option<T>,
    ) -> Result<Setting<T>, HostError> {
        self.pick(key, None, None, file)
    }

    /// Records what `config show` prints for `key` (when it is not the raw value).
    fn show(&mut self, key: &Key, value: serde_json::Value, source: &Source) {
        self.shown.insert(key.path(), (value, source.to_string()));
    }
}

/// The default of `key`, parsed from the table as its type.
fn default_of<T: serde::de::DeserializeOwned>(key: &Key) -> Result<T, HostError> {
    #[derive(serde::Deserialize)]
    struct One<T> {
        v: T,
    }
    toml::from_str::<One<T>>(&format!("v = {}", key.default))
        .map(|o| o.v)
        .map_err(|e| HostError::InvalidValue {
            name: key.path(),
            message: format!("the built-in default `{}` does not parse: {e}", key.default),
        })
}

fn positive<T: PartialOrd + Default + fmt::Display + Copy>(
    setting: &Setting<T>,
    name: &str,
) -> Result<(), HostError> {
    if setting.value <= T::default() {
        return Err(HostError::InvalidValue {
            name: name.to_owned(),
            message: format!(
                "must be at least 1, got {} (from {})",
                setting.value, setting.source
            ),
        });
    }
    Ok(())
}

fn non_empty<T: AsRef<std::ffi::OsStr>>(v: Option<T>) -> Option<T> {
    v.filter(|x| !x.as_ref().is_empty())
}

impl Settings {
    /// Loads the config file (see [`LoadedConfig::load`]) and resolves every setting.
    pub fn load(overrides: &Overrides, env: &Env) -> Result<Settings, HostError> {
        let config = LoadedConfig::load(overrides.config.as_deref(), env)?;
        Self::resolve(overrides, env, &config)
    }

    /// Resolves every setting from `overrides` > `env` > `config` > built-in defaults.
    pub fn resolve(
        overrides: &Overrides,
        env: &Env,
        config: &LoadedConfig,
    ) -> Result<Settings, HostError> {
        let f = &config.file;
        let home = env.home();
        let mut r = Resolver {
            file_path: config.path.as_deref(),
            shown: BTreeMap::new(),
        };
        let from_env = |key: &Key| key.from_env(env);

        let plugin_dirs = r.file(&keys::PLUGIN_DIRS, f.plugin_dirs.clone())?;
        let backend_order = r.file(&keys::backends::order, f.backends.order.clone())?;

        let key = &keys::hub::endpoint;
        let mut endpoint = r.pick(
            key,
            overrides.endpoint.clone(),
            from_env(key),
            f.hub.endpoint.clone(),
        )?;
        endpoint.value = endpoint.value.trim().trim_end_matches('/').to_owned();
        r.show(key, endpoint.value.clone().into(), &endpoint.source);
        if !(endpoint.value.starts_with("http://") || endpoint.value.starts_with("https://")) {
            return Err(HostError::InvalidValue {
                name: "endpoint".to_owned(),
                message: format!(
                    "`{}` (from {}) is not an http:// or https:// URL",
                    crate::redact::display_url(&endpoint.value),
                    endpoint.source
                ),
            });
        }

        let hf_home = if let Some(v) = env.get_os("HF_HOME") {
            Setting::new(PathBuf::from(v), Source::Env("HF_HOME"))
        } else if let Some(v) = env.get_os("XDG_CACHE_HOME") {
            Setting::new(
                PathBuf::from(v).join("huggingface"),
                Source::Derived("$XDG_CACHE_HOME/huggingface".to_owned()),
            )
        } else {
            Setting::new(home.join(".cache").join("huggingface"), Source::Default)
        };

        let token = resolve_token(overrides, env, &hf_home);
        let allow_insecure_http = r.pick(
            &keys::network::allow_insecure_http,
            overrides.allow_insecure_http.then_some(true),
            None,
            f.network.allow_insecure_http,
        )?;
        if token.value.is_some() && !allow_insecure_http.value && sends_in_clear(&endpoint.value) {
            return Err(HostError::InvalidValue {
                name: "endpoint".to_owned(),
                message: format!(
                    "`{}` is plain http:// to a host that is not this machine: the Hub token (from \
                     {}) would cross the network in clear text. Use https://, or pass \
                     --allow-insecure-http (or set [network] allow_insecure_http = true) if this \
                     network is trusted",
                    crate::redact::display_url(&endpoint.value),
                    token.source
                ),
            });
        }

        // An empty `cache_dir` in the file (the default) means `$HF_HOME/hub`.
        let key = &keys::download::cache_dir;
        let file_cache = non_empty(f.download.cache_dir.clone()).map(|p| expand_home(&p, env));
        let env_cache = key
            .env
            .iter()
            .find_map(|name| env.get_os(name).map(|v| (PathBuf::from(v), *name)));
        let cache_dir = match r.pick(key, overrides.cache_dir.clone(), env_cache, file_cache)? {
            s if s.source == Source::Default => {
                let source = match &hf_home.source {
                    Source::Default => Source::Default,
                    other => Source::Derived(format!("$HF_HOME/hub, HF_HOME from {other}")),
                };
                Setting::new(hf_home.value.join("hub"), source)
            }
            s => s,
        };
        r.show(
            key,
            cache_dir.value.display().to_string().into(),
            &cache_dir.source,
        );

        let offline = if overrides.offline {
            Setting::new(true, Source::Cli("--offline"))
        } else if let Some(v) = env.get("HF_HUB_OFFLINE") {
            Setting::new(is_true(&v), Source::Env("HF_HUB_OFFLINE"))
        } else {
            Setting::new(false, Source::Default)
        };
        let shared_blobs = match env.get("HF_HUB_DISABLE_SHARED_BLOBS") {
            Some(v) => Setting::new(!is_true(&v), Source::Env("HF_HUB_DISABLE_SHARED_BLOBS")),
            None => Setting::new(true, Source::Default),
        };

        use keys::{download as kd, network as kn};
        let (fd, fnw) = (&f.download, &f.network);
        let max_workers = r.pick(
            &kd::max_workers,
            overrides.max_workers,
            None,
            fd.max_workers,
        )?;
        let stall_timeout_secs = r.pick(
            &kd::stall_timeout_secs,
            overrides.stall_timeout_secs,
            None,
            fd.stall_timeout_secs,
        )?;
        let connections_per_file = r.pick(
            &kd::connections_per_file,
            overrides.connections_per_file,
            None,
            fd.connections_per_file,
        )?;
        let key = &kd::max_rate_limit_wait_secs;
        let max_rate_limit_wait_secs = r.pick(
            key,
            overrides.max_rate_limit_wait_secs,
            match from_env(key) {
                Some((text, name)) => Some((
                    text.trim()
                        .parse::<u64>()
                        .map_err(|_| HostError::InvalidValue {
                            name: name.to_owned(),
                            message: format!("`{text}` is not a number of seconds"),
                        })?,
                    name,
                )),
                None => None,
            },
            fd.max_rate_limit_wait_secs,
        )?;
        let key = &kd::limit_rate;
        let limit_rate_text = r.pick(
            key,
            overrides.limit_rate.clone(),
            from_env(key),
            fd.limit_rate.clone(),
        )?;
        let limit_rate = Setting::new(
            parse_rate(&limit_rate_text.value)
                .map(|r| r.unwrap_or(0))
                .map_err(|message| HostError::InvalidValue {
                    name: "limit_rate".to_owned(),
                    message: format!("{message} (from {})", limit_rate_text.source),
                })?,
            limit_rate_text.source.clone(),
        );
        r.show(key, limit_rate.value.into(), &limit_rate.source);
        let range_size_mib = r.file(&kd::range_size_mib, fd.range_size_mib)?;
        let max_attempts = r.file(&kd::max_attempts, fd.max_attempts)?;
        let lock_timeout_secs = r.file(&kd::lock_timeout_secs, fd.lock_timeout_secs)?;
        // Empty strings in the file (the defaults) mean "none".
        let key = &kn::proxy;
        let proxy_text = r.file(key, fnw.proxy.clone())?;
        let proxy = Setting::new(non_empty(Some(proxy_text.value)), proxy_text.source);
        r.show(
            key,
            serde_json::json!(
                proxy
                    .value
                    .as_deref()
                    .map(|p| crate::redact::display_url(p).into_owned())
            ),
            &proxy.source,
        );
        let key = &kn::ca_bundle;
        let ca_text = r.file(key, fnw.ca_bundle.clone())?;
        let ca_bundle = Setting::new(
            non_empty(Some(ca_text.value)).map(|p| expand_home(&p, env)),
            ca_text.source,
        );
        r.show(
            key,
            serde_json::json!(ca_bundle.value.as_ref().map(|p| p.display().to_string())),
            &ca_bundle.source,
        );
        let connect_timeout_secs = r.file(&kn::connect_timeout_secs, fnw.connect_timeout_secs)?;
        let read_timeout_secs = r.file(&kn::read_timeout_secs, fnw.read_timeout_secs)?;
        let max_metadata_mib = r.file(&kn::max_metadata_mib, fnw.max_metadata_mib)?;

        positive(&max_workers, "max_workers")?;
        positive(&stall_timeout_secs, "stall_timeout_secs")?;
        positive(&connections_per_file, "connections_per_file")?;
        positive(&range_size_mib, "range_size_mib")?;
        positive(&max_attempts, "max_attempts")?;
        positive(&max_metadata_mib, "max_metadata_mib")?;

        let preferred_backend = overrides
            .backend
            .clone()
            .map(|b| Setting::new(b, Source::Cli(overrides.backend_flag)));
        if overrides.no_fallback && preferred_backend.is_none() {
            return Err(HostError::Usage(
                "--no-fallback needs --backend NAME (the backend to use alone)".to_owned(),
            ));
        }

        let (plugin_tables, plugin_policies) = split_host_keys(&f.plugins, env)?;
        let default_isolation = match env.get("HUBGET_PLUGIN_ISOLATION") {
            Some(text) if !text.trim().is_empty() => Some(Mode::parse(text.trim()).ok_or_else(
                || HostError::InvalidValue {
                    name: "HUBGET_PLUGIN_ISOLATION".to_owned(),
                    message: format!("`{text}` is neither `process` nor `none`"),
                },
            )?),
            _ => None,
        };

        Ok(Settings {
            config_file: config.path.clone().zip(config.origin),
            plugin_dirs,
            env_plugin_dirs: env.get_os("HUBGET_PLUGIN_DIR").cloned(),
            backend_order,
            preferred_backend,
            no_fallback: overrides.no_fallback,
            endpoint,
            token,
            hf_home,
            cache_dir,
            offline,
            shared_blobs,
            max_workers,
            stall_timeout_secs,
            connections_per_file,
            limit_rate,
            max_rate_limit_wait_secs,
            range_size_mib,
            max_attempts,
            lock_timeout_secs,
            proxy,
            ca_bundle,
            connect_timeout_secs,
            read_timeout_secs,
            max_metadata_mib,
            allow_insecure_http,
            plugin_tables,
            plugin_policies,
            default_isolation,
            plugin_write_dirs: Vec::new(),
            home: Some(env.home()).filter(|h| h.is_absolute()),
            user_agent: format!("hubget/{}", env!("CARGO_PKG_VERSION")),
            shown: r.shown,
        })
    }

    /// The directories to search for plugins, in order (see [`search_path`]).
    pub fn plugin_search_path(&self) -> Vec<PluginDir> {
        search_path(&self.plugin_dirs.value, self.env_plugin_dirs.as_deref())
    }

    /// Which plugins run isolated and how: the per-plugin keys, `HUBGET_PLUGIN_ISOLATION`,
    /// the install's own plugin directories, and the sandbox (the write roots below, the
    /// paths under the home an isolated plugin may read).
    pub fn isolation_policy(&self) -> Policy {
        let search = self.plugin_search_path();
        let install_dirs = search
            .iter()
            .filter(|d| d.origin == ORIGIN_EXE || d.origin == ORIGIN_LIB)
            .map(|d| d.path.clone())
            .collect();
        let cache = &self.cache_dir.value;
        let mut write: Vec<PathBuf> = if self.plugin_write_dirs.is_empty() {
            vec![cache.clone()]
        } else {
            self.plugin_write_dirs.clone()
        };
        // hubget's state in the cache (rate-limit budgets, plugins' own state).
        write.push(cache.join(".hubget"));
        let mut read_in_home: Vec<PathBuf> = vec![cache.clone()];
        read_in_home.extend(write.iter().cloned());
        read_in_home.extend(search.into_iter().map(|d| d.path));
        read_in_home.extend(self.config_path().map(Path::to_path_buf));
        read_in_home.extend(self.ca_bundle.value.clone());
        Policy {
            default: self.default_isolation,
            plugins: self.plugin_policies.clone(),
            install_dirs,
            sandbox: SandboxPolicy {
                enabled: true,
                write,
                home: self.home.clone(),
                read_in_home,
            },
            memory_limit_mib: default_memory_limit_mib(),
            exe: std::env::current_exe().ok(),
            deadline: crate::loader::load_deadline(),
        }
    }

    /// The settings handed to every backend.
    pub fn host_settings(&self) -> HostSettings {
        HostSettings {
            endpoint: self.endpoint.value.clone(),
            token: self.token.value.clone(),
            user_agent: self.user_agent.clone(),
            proxy: self.proxy.value.clone(),
            ca_bundle: self.ca_bundle.value.clone(),
            connect_timeout_secs: self.connect_timeout_secs.value,
            read_timeout_secs: self.read_timeout_secs.value,
            connections_per_file: self.connections_per_file.value,
            range_size: self.range_size_mib.value.saturating_mul(1024 * 1024),
            max_attempts: self.max_attempts.value,
            offline: self.offline.value,
            cache_dir: Some(self.cache_dir.value.clone()),
            limit_rate: (self.limit_rate.value > 0).then_some(self.limit_rate.value),
            max_metadata_bytes: self.max_metadata_mib.value.saturating_mul(1024 * 1024),
            max_rate_limit_wait_secs: self.max_rate_limit_wait_secs.value,
        }
    }

    /// The `[plugins.<name>]` table as TOML text (empty if there is none).
    pub fn plugin_config_toml(&self, name: &str) -> String {
        self.plugin_tables
            .get(name)
            .and_then(|t| toml::to_string(t).ok())
            .unwrap_or_default()
    }

    /// The config file path, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_file.as_ref().map(|(p, _)| p.as_path())
    }

    /// The backends to use, in order: `--backend NAME` first (alone with `--no-fallback`), then
    /// the configured order. `loaded` are the names of the loaded plugins; configured names
    /// that did not load are skipped with a warning, an unknown `--backend` is an error.
    pub fn effective_order(&self, loaded: &[String]) -> Result<Vec<String>, HostError> {
        let is_loaded = |name: &str| loaded.iter().any(|l| l == name);
        let mut order = Vec::new();
        if let Some(pref) = &self.preferred_backend {
            if !is_loaded(&pref.value) {
                return Err(HostError::UnknownBackend {
                    name: pref.value.clone(),
                    loaded: loaded.to_vec(),
                });
            }
            order.push(pref.value.clone());
            if self.no_fallback {
                return Ok(order);
            }
        }
        for name in &self.backend_order.value {
            if order.contains(name) {
                continue;
            }
            if is_loaded(name) {
                order.push(name.clone());
            } else {
                log::warn!(
                    "backend `{name}` (in the fallback order, from {}) is not loaded; skipped \
                     (see `hubget plugins`)",
                    self.backend_order.source
                );
            }
        }
        if order.is_empty() {
            return Err(HostError::NoBackend(format!(
                "none of the configured backends ({}) is loaded; loaded: {}",
                self.backend_order.value.join(", "),
                if loaded.is_empty() {
                    "none".to_owned()
                } else {
                    loaded.join(", ")
                }
            )));
        }
        Ok(order)
    }

    /// Every setting as `(key, value, source)` for `config show`: the keys of the config table
    /// in its order, then the settings that only the command line or the environment set. The
    /// token's value is only `"set"` or `"not set"`.
    pub fn entries(&self) -> Vec<(String, serde_json::Value, String)> {
        use serde_json::json;
        let mut v: Vec<(String, serde_json::Value, String)> = KEYS
            .iter()
            .filter_map(|key| {
                let path = key.path();
                let (value, source) = self.shown.get(&path)?.clone();
                Some((path, value, source))
            })
            .collect();
        if let Some(pref) = &self.preferred_backend {
            v.push(("backend".into(), json!(pref.value), pref.source.to_string()));
            let source = if self.no_fallback {
                "--no-fallback"
            } else {
                "default"
            };
            v.push(("no_fallback".into(), json!(self.no_fallback), source.into()));
        }
        for (name, value, source) in [
            (
                "token",
                json!(token_state(&self.token.value)),
                &self.token.source,
            ),
            (
                "hf_home",
                json!(self.hf_home.value.display().to_string()),
                &self.hf_home.source,
            ),
            ("offline", json!(self.offline.value), &self.offline.source),
            (
                "shared_blobs",
                json!(self.shared_blobs.value),
                &self.shared_blobs.source,
            ),
        ] {
            v.push((name.into(), value, source.to_string()));
        }
        v
    }
}

fn resolve_token(
    overrides: &Overrides,
    env: &Env,
    hf_home: &Setting<PathBuf>,
) -> Setting<Option<String>> {
    if let Some(t) = overrides.token.clone().filter(|t| !t.trim().is_empty()) {
        return Setting::new(Some(t.trim().to_owned()), Source::Cli("--token"));
    }
    if env.is_true("HF_HUB_DISABLE_IMPLICIT_TOKEN") {
        return Setting::new(None, Source::Env("HF_HUB_DISABLE_IMPLICIT_TOKEN"));
    }
    for name in ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"] {
        if let Some(t) = env
            .get(name)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
        {
            return Setting::new(Some(t), Source::Env(name));
        }
    }
    let (file, source) = match env.get_os("HF_TOKEN_PATH") {
        Some(p) => (
            PathBuf::from(p),
            Source::Derived("file at HF_TOKEN_PATH".to_owned()),
        ),
        None => (
            hf_home.value.join("token"),
            Source::Derived("file $HF_HOME/token".to_owned()),
        ),
    };
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => Setting::new(Some(text.trim().to_owned()), source),
        Ok(_) => Setting::new(None, Source::Default),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("cannot read the token file {}: {e}", file.display());
            }
            Setting::new(None, Source::Default)
        }
    }
}

/// Parses a rate such as `50M`, `500k`, `1.5G` or `1048576` (bytes per second; suffixes are
/// binary, as curl's `--limit-rate`: k = 1024, M = 1024², G = 1024³; a trailing `B`, `/s` or
/// `iB` is allowed). `0` or empty means no cap.
pub fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let t = t.strip_suffix("/s").unwrap_or(t);
    let t = t.strip_suffix('B').unwrap_or(t);
    let t = t.strip_suffix('i').unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1024.0),
        Some('m' | 'M') => (&t[..t.len() - 1], 1024.0 * 1024.0),
        Some('g' | 'G') => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a rate (examples: 50M, 500k, 1.5G, 1048576)"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!(
            "`{text}` is not a rate: it must be a positive number"
        ));
    }
    let bytes = (value * mult).round();
    if bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is too large"));
    }
    Ok((bytes >= 1.0).then_some(bytes as u64))
}

/// Whether `url` is plain `http://` to a host other than this machine (loopback).
fn sends_in_clear(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host_port = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    !loopback
}

/// `[plugins.NAME]` tables by plugin name.
type PluginTables = BTreeMap<String, toml::Table>;

/// Takes the host's keys ([`crate::isolation::HOST_KEYS`]) out of each `[plugins.NAME]` table.
fn split_host_keys(
    tables: &BTreeMap<String, toml::Table>,
    env: &Env,
) -> Result<(PluginTables, BTreeMap<String, PluginPolicy>), HostError> {
    let mut plugin_tables = BTreeMap::new();
    let mut policies = BTreeMap::new();
    for (name, table) in tables {
        let mut table = table.clone();
        let invalid = |key: &str, message: String| HostError::InvalidValue {
            name: format!("[plugins.{name}] {key}"),
            message,
        };
        let mut policy = PluginPolicy::default();
        if let Some(v) = table.remove("isolation") {
            let text = v.as_str().unwrap_or_default();
            policy.mode = Some(Mode::parse(text).ok_or_else(|| {
                invalid(
                    "isolation",
                    format!("{v} is neither \"process\" nor \"none\""),
                )
            })?);
        }
        if let Some(v) = table.remove("sandbox") {
            policy.sandbox = Some(
                v.as_bool()
                    .ok_or_else(|| invalid("sandbox", format!("{v} is not true or false")))?,
            );
        }
        if let Some(v) = table.remove("allow_read") {
            let list = v
                .as_array()
                .ok_or_else(|| invalid("allow_read", format!("{v} is not a list of paths")))?;
            for item in list {
                let text = item
                    .as_str()
                    .ok_or_else(|| invalid("allow_read", format!("{item} is not a path")))?;
                policy.allow_read.push(expand_home(Path::new(text), env));
            }
        }
        if let Some(v) = table.remove("memory_limit_mib") {
            policy.memory_limit_mib = Some(
                v.as_integer()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| {
                        invalid("memory_limit_mib", format!("{v} is not a number of MiB"))
                    })?,
            );
        }
        if policy != PluginPolicy::default() {
            policies.insert(name.clone(), policy);
        }
        plugin_tables.insert(name.clone(), table);
    }
    Ok((plugin_tables, policies))
}

/// A helper's default address-space limit: the machine's memory, and at least 4 GiB (virtual
/// reservations of threads and allocator arenas count too).
fn default_memory_limit_mib() -> u64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads system constants.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return ((pages as u64).saturating_mul(size as u64) >> 20).max(4096);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings the environment `vars` alone gives (no flag, no config file).
    fn from_env<const N: usize>(vars: [(&str, &str); N]) -> Settings {
        let (none, env) = (Overrides::default(), Env::from_pairs(vars));
        Settings::resolve(&none, &env, &LoadedConfig::default()).unwrap()
    }

    #[test]
    fn a_token_over_plain_http_to_another_host_is_refused_unless_allowed() {
        assert!(sends_in_clear("http://hub.example"));
        assert!(sends_in_clear("http://10.0.0.5:8080/x"));
        for local in [
            "https://hub.example",
            "http://127.0.0.1:4000",
            "http://localhost",
            "http://[::1]:9",
        ] {
            assert!(!sends_in_clear(local), "{local}");
        }
        let env = Env::from_pairs([("HF_TOKEN", "hf_x"), ("HOME", "/h")]);
        let overrides = Overrides {
            endpoint: Some("http://hub.example".into()),
            ..Overrides::default()
        };
        let cfg = LoadedConfig::default();
        let err = Settings::resolve(&overrides, &env, &cfg)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("clear text") && err.contains("--allow-insecure-http"),
            "{err}"
        );
        assert!(!err.contains("hf_x"), "{err}");
        let allowed = Overrides {
            allow_insecure_http: true,
            ..overrides
        };
        assert!(Settings::resolve(&allowed, &env, &cfg).is_ok());
        // Without a token there is nothing to protect.
        let no_token = Env::from_pairs([("HOME", "/h")]);
        let plain = Overrides {
            endpoint: Some("http://hub.example".into()),
            ..Overrides::default()
        };
        assert!(Settings::resolve(&plain, &no_token, &cfg).is_ok());
    }

    #[test]
    fn rates_parse_with_binary_suffixes() {
        assert_eq!(parse_rate("50M"), Ok(Some(50 * 1024 * 1024)));
        assert_eq!(parse_rate("500k"), Ok(Some(500 * 1024)));
        assert_eq!(parse_rate("1.5G"), Ok(Some(1_610_612_736)));
        assert_eq!(parse_rate("2MiB/s"), Ok(Some(2 * 1024 * 1024)));
        assert_eq!(parse_rate("1048576"), Ok(Some(1_048_576)));
        assert_eq!(parse_rate(""), Ok(None));
        assert_eq!(parse_rate("0"), Ok(None));
        for bad in ["fast", "-5M", "1e400", "M"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    use crate::config::parse;

    fn config(text: &str) -> LoadedConfig {
        LoadedConfig {
            file: parse(text).unwrap(),
            path: Some(PathBuf::from("/etc/hubget.toml")),
            origin: Some("--config"),
        }
    }

    #[test]
    fn precedence_cli_env_file_default() {
        let cfg = config("[hub]\nendpoint = \"http://file\"\n[download]\nmax_workers = 3\n");
        let env = Env::from_pairs([("HF_ENDPOINT", "http://env/"), ("HOME", "/h")]);
        let cli = Overrides {
            endpoint: Some("http://cli".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&cli, &env, &cfg).unwrap();
        assert_eq!(s.endpoint.value, "http://cli");
        assert_eq!(s.endpoint.source, Source::Cli("--endpoint"));

        let s = Settings::resolve(&Overrides::default(), &env, &cfg).unwrap();
        assert_eq!(s.endpoint.value, "http://env", "trailing slash trimmed");
        assert_eq!(s.endpoint.source, Source::Env("HF_ENDPOINT"));
        assert_eq!(s.max_workers.value, 3);
        assert!(matches!(s.max_workers.source, Source::ConfigFile(_)));

        let s = Settings::resolve(&Overrides::default(), &Env::default(), &cfg).unwrap();
        assert_eq!(s.endpoint.value, "http://file");
        let s = from_env([]);
        assert_eq!(s.endpoint.value, "https://huggingface.co");
        assert_eq!(s.endpoint.source, Source::Default);
        assert_eq!(s.max_workers.value, 8);
        assert_eq!(s.backend_order.value, ["lfs", "xet", "mirror"]);
    }

    #[test]
    fn cache_and_home_follow_huggingface_hub() {
        let s = from_env([("HOME", "/h")]);
        assert_eq!(s.cache_dir.value, Path::new("/h/.cache/huggingface/hub"));
        let s = from_env([("HF_HOME", "/hf")]);
        assert_eq!(s.cache_dir.value, Path::new("/hf/hub"));
        assert!(s.cache_dir.source.to_string().contains("HF_HOME"));
        let s = from_env([("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/legacy")]);
        assert_eq!(s.cache_dir.value, Path::new("/legacy"));
        let s = from_env([
            ("HF_HUB_CACHE", "/new"),
            ("HUGGINGFACE_HUB_CACHE", "/legacy"),
        ]);
        assert_eq!(s.cache_dir.value, Path::new("/new"));
    }

    #[test]
    fn offline_uses_the_hf_boolean_rule() {
        for (v, want) in [
            ("1", true),
            ("on", true),
            ("Yes", true),
            ("TRUE", true),
            ("0", false),
            ("no", false),
        ] {
            let s = from_env([("HF_HUB_OFFLINE", v)]);
            assert_eq!(s.offline.value, want, "HF_HUB_OFFLINE={v}");
        }
    }

    #[test]
    fn token_order_and_no_leak() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap();
        std::fs::write(dir.path().join("token"), "hf_fromfile\n").unwrap();
        let tokfile = dir.path().join("other");
        std::fs::write(&tokfile, "hf_frompath").unwrap();
        let none = Overrides::default();
        let cfg = LoadedConfig::default();

        let s = Settings::resolve(&none, &Env::from_pairs([("HF_HOME", home)]), &cfg).unwrap();
        assert_eq!(s.token.value.as_deref(), Some("hf_fromfile"));
        let env = Env::from_pairs([
            ("HF_HOME", home),
            ("HF_TOKEN_PATH", tokfile.to_str().unwrap()),
        ]);
        let s = Settings::resolve(&none, &env, &cfg).unwrap();
        assert_eq!(s.token.value.as_deref(), Some("hf_frompath"));
        let env = Env::from_pairs([("HF_HOME", home), ("HUGGING_FACE_HUB_TOKEN", "hf_legacy")]);
        let s = Settings::resolve(&none, &env, &cfg).unwrap();
        assert_eq!(s.token.value.as_deref(), Some("hf_legacy"));
        let env = Env::from_pairs([
            ("HF_TOKEN", "hf_env"),
            ("HUGGING_FACE_HUB_TOKEN", "hf_legacy"),
        ]);
        let s = Settings::resolve(&none, &env, &cfg).unwrap();
        assert_eq!(s.token.value.as_deref(), Some("hf_env"));
        assert_eq!(s.token.source, Source::Env("HF_TOKEN"));
        let cli = Overrides {
            token: Some("hf_cli".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&cli, &env, &cfg).unwrap();
        assert_eq!(s.token.value.as_deref(), Some("hf_cli"));
        let debug = format!("{s:?}");
        assert!(!debug.contains("hf_cli"), "{debug}");
        assert!(
            !serde_json::to_string(&s.entries().iter().map(|e| &e.1).collect::<Vec<_>>())
                .unwrap()
                .contains("hf_cli")
        );
        let env = Env::from_pairs([
            ("HF_TOKEN", "hf_env"),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
        ]);
        let s = Settings::resolve(&none, &env, &cfg).unwrap();
        assert_eq!(s.token.value, None);
    }

    #[test]
    fn effective_order_rules() {
        let loaded = vec!["lfs".to_owned(), "xet".to_owned(), "hello".to_owned()];
        let with = |backend: Option<&str>, no_fallback: bool| {
            Settings::resolve(
                &Overrides {
                    backend: backend.map(str::to_owned),
                    backend_flag: "--backend",
                    no_fallback,
                    ..Default::default()
                },
                &Env::default(),
                &LoadedConfig::default(),
            )
        };
        assert_eq!(
            with(None, false).unwrap().effective_order(&loaded).unwrap(),
            ["lfs", "xet"]
        );
        assert_eq!(
            with(Some("xet"), false)
                .unwrap()
                .effective_order(&loaded)
                .unwrap(),
            ["xet", "lfs"]
        );
        assert_eq!(
            with(Some("hello"), true)
                .unwrap()
                .effective_order(&loaded)
                .unwrap(),
            ["hello"]
        );
        let err = with(Some("nope"), false)
            .unwrap()
            .effective_order(&loaded)
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("lfs, xet, hello"), "{err}");
        assert_eq!(with(None, true).unwrap_err().exit_code(), 2);
        let err = with(None, false).unwrap().effective_order(&[]).unwrap_err();
        assert!(matches!(err, HostError::NoBackend(_)));
    }

    #[test]
    fn plugin_tables_become_toml_text_and_host_settings_carry_values() {
        let cfg = config(
            "[plugins.faulty]\npanic_in = \"resolve\"\n[download]\nrange_size_mib = 2\n[network]\nmax_metadata_mib = 3\n",
        );
        let s = Settings::resolve(&Overrides::default(), &Env::default(), &cfg).unwrap();
        assert_eq!(
            s.plugin_config_toml("faulty").trim(),
            "panic_in = \"resolve\""
        );
        assert_eq!(s.plugin_config_toml("other"), "");
        let hs = s.host_settings();
        assert_eq!(hs.range_size, 2 * 1024 * 1024);
        assert_eq!(hs.max_metadata_bytes, 3 * 1024 * 1024);
        assert!(hs.user_agent.starts_with("hubget/"));
    }

    #[test]
    fn bad_values_are_errors() {
        let cli = Overrides {
            max_workers: Some(0),
            ..Default::default()
        };
        let err = Settings::resolve(&cli, &Env::default(), &LoadedConfig::default()).unwrap_err();
        assert!(err.to_string().contains("max_workers"), "{err}");
        let env = Env::from_pairs([("HF_ENDPOINT", "ftp://x")]);
        let err =
            Settings::resolve(&Overrides::default(), &env, &LoadedConfig::default()).unwrap_err();
        assert!(err.to_string().contains("HF_ENDPOINT"), "{err}");
    }
}
