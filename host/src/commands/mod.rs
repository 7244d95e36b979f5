//! The commands, and the steps they share: resolving settings, loading plugins and opening
//! backends in the effective order.

pub mod cache;
pub mod config;
pub mod download;
pub mod export;
pub mod plugin_helper;
pub mod plugins;
pub mod project;

use std::io::Write;
use std::path::PathBuf;

use crate::backend::BackendHandle;
use crate::cli::{Cli, Command, ConfigCommand};
use crate::error::HostError;
use crate::loader::{LoadedPlugin, Registry};
use crate::settings::{Env, Overrides, Settings};

/// Runs the parsed command line. The environment is read once, here.
pub fn run(cli: Cli) -> Result<(), HostError> {
    let env = Env::from_process();
    let config: Option<PathBuf> = cli.config;
    match cli.command {
        Command::Download(args) => download::run(&env, config, &args),
        Command::Export(args) => {
            if args.download.local_dir.is_some() {
                return Err(HostError::Usage(
                    "hubget export reads the Hugging Face cache; --local-dir does not apply"
                        .to_owned(),
                ));
            }
            download::run_then_export(&env, config, &args.download, Some(&args.to))
        }
        Command::Plugins(args) => plugins::run(&env, config, &args),
        Command::Config(ConfigCommand::Show(args)) => config::show(&env, config, &args),
        Command::Cache(command) => cache::run(&env, config, &command),
        Command::Add(args) => project::add(&args),
        Command::Remove(args) => project::remove(&args),
        Command::Lock(args) => project::lock(&env, config, &args),
        Command::Sync(args) => project::sync(&env, config, &args),
        Command::PluginHelper => Err(HostError::Usage(
            "__plugin-helper is started by hubget itself".to_owned(),
        )),
    }
}

/// Discovers and loads the plugins in the settings' search path. The token (if any) is
/// registered first so that plugin log records never show it.
pub fn load_plugins(settings: &Settings) -> Registry {
    register_token(settings);
    let registry = Registry::discover(&settings.plugin_search_path(), &settings.isolation_policy());
    // A table for a plugin that is not loaded is most likely a typo in the name.
    for name in settings.plugin_tables.keys() {
        if registry.get(name).is_none() {
            log::warn!(
                "[plugins.{name}]{} configures no loaded plugin (loaded: {})",
                settings
                    .config_path()
                    .map(|p| format!(" in {}", p.display()))
                    .unwrap_or_default(),
                registry.names().join(", ")
            );
        }
    }
    registry
}

/// Loads the settings (see [`Settings::load`]) and registers the token for redaction.
pub fn load_settings(overrides: &Overrides, env: &Env) -> Result<Settings, HostError> {
    let settings = Settings::load(overrides, env)?;
    register_token(&settings);
    Ok(settings)
}

/// Registers the token (if any) with [`crate::redact::register_secret`], so that no log record
/// or error message shows it.
pub fn register_token(settings: &Settings) {
    if let Some(token) = &settings.token.value {
        crate::redact::register_secret(token);
    }
    // Plugins' own credentials (a mirror endpoint's `token`, a `secret`, a `password`) are
    // masked in everything the host prints, like the Hub token.
    for table in settings.plugin_tables.values() {
        register_table_secrets(&toml::Value::Table(table.clone()));
    }
}

/// Registers the string values of keys that name a credential, at any depth of `value`.
fn register_table_secrets(value: &toml::Value) {
    match value {
        toml::Value::Table(t) => {
            for (key, v) in t {
                let k = key.to_ascii_lowercase();
                let secret_key = ["token", "secret", "password", "api_key"]
                    .iter()
                    .any(|s| k.contains(s));
                match v {
                    toml::Value::String(s) if secret_key && !s.is_empty() => {
                        crate::redact::register_secret(s);
                    }
                    other => register_table_secrets(other),
                }
            }
        }
        toml::Value::Array(items) => items.iter().for_each(register_table_secrets),
        _ => {}
    }
}

/// Creates a backend of `plugin` with the host settings and its `[plugins.<name>]` table; a
/// configuration error names the config file.
pub fn open_backend(
    plugin: &LoadedPlugin,
    settings: &Settings,
) -> Result<BackendHandle, HostError> {
    let table = settings.plugin_config_toml(plugin.name());
    plugin
        .new_backend(&settings.host_settings(), &table)
        .map_err(|e| match e {
            HostError::PluginConfig {
                plugin, message, ..
            } => HostError::PluginConfig {
                plugin,
                message,
                config_file: settings.config_path().map(ToOwned::to_owned),
            },
            other => other,
        })
}

/// Opens the backends named in `order` (see [`Settings::effective_order`]). A configuration
/// error stops everything; a backend that fails to start otherwise (a caught panic, say) is
/// skipped with a warning, unless it is the only one asked for.
pub fn open_backends(
    registry: &Registry,
    settings: &Settings,
    order: &[String],
) -> Result<Vec<BackendHandle>, HostError> {
    let mut backends = Vec::new();
    let mut last_error = None;
    for name in order {
        let Some(plugin) = registry.get(name) else {
            return Err(HostError::UnknownBackend {
                name: name.clone(),
                loaded: registry.names(),
            });
        };
        match open_backend(plugin, settings) {
            Ok(backend) => backends.push(backend),
            Err(e @ HostError::PluginConfig { .. }) => return Err(e),
            Err(e) => {
                log::warn!("{e}; backend `{name}` skipped");
                last_error = Some(e);
            }
        }
    }
    match (backends.is_empty(), last_error) {
        (true, Some(e)) if order.len() == 1 => Err(e),
        (true, Some(e)) => Err(HostError::NoBackend(format!(
            "no backend could start; last error: {e}"
        ))),
        (true, None) => Err(HostError::NoBackend(
            "the backend order is empty".to_owned(),
        )),
        (false, _) => Ok(backends),
    }
}

/// Loads the plugins and opens the backends of the effective order, as transports for the
/// plan and the engine.
pub fn open_transports(
    settings: &Settings,
) -> Result<Vec<std::sync::Arc<dyn crate::transport::Transport>>, HostError> {
    let registry = load_plugins(settings);
    let order = settings.effective_order(&registry.names())?;
    Ok(open_backends(&registry, settings, &order)?
        .into_iter()
        .map(|h| std::sync::Arc::new(h) as std::sync::Arc<dyn crate::transport::Transport>)
        .collect())
}

/// Writes `text` to stdout (the commands' results); a closed pipe is not an error.
pub fn print_stdout(text: &str) -> Result<(), HostError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(HostError::io("cannot write to stdout", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_credentials_are_masked_like_the_hub_token() {
        let table: toml::Value = toml::from_str(
            r#"
endpoints = [{ url = "https://m.example", token = "mirror-s3cr3t-value", send_hub_token = true }]
nested = { api_key = "k3y-value-123" }
name = "not-a-secret"
"#,
        )
        .unwrap();
        register_table_secrets(&table);
        let shown = crate::redact::redact_registered(
            "GET with mirror-s3cr3t-value and k3y-value-123, not-a-secret",
        );
        assert!(
            !shown.contains("mirror-s3cr3t-value") && !shown.contains("k3y-value-123"),
            "{shown}"
        );
        assert!(shown.contains("not-a-secret"));
    }
}
