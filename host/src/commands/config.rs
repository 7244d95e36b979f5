//! `hubget config show [--json]`: every effective setting and where it came from (command line,
//! environment, config file or default); `--defaults` prints the built-in defaults as a commented
//! config file. The token is shown only as `set`/`not set` with its
//! source; `[plugins.<name>]` tables are listed with their keys, values of secret-looking keys
//! masked; the plugin search path is listed in order.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::cli::ConfigShowArgs;
use crate::commands::{load_settings, print_stdout};
use crate::env::Env;
use crate::error::HostError;

/// Runs `hubget config show`.
pub fn show(env: &Env, config: Option<PathBuf>, args: &ConfigShowArgs) -> Result<(), HostError> {
    if args.defaults {
        return print_stdout(crate::config::default_config());
    }
    let settings = load_settings(&args.settings.overrides(config), env)?;
    let entries = settings.entries();
    let file = settings
        .config_file
        .as_ref()
        .map(|(p, origin)| json!({"path": p.display().to_string(), "origin": origin}));
    let tables: Map<String, Value> = settings
        .plugin_tables
        .iter()
        .map(|(name, table)| (name.clone(), mask_secrets(&table_json(table))))
        .collect();

    let search_path: Vec<Value> = settings
        .plugin_search_path()
        .iter()
        .map(|d| json!({"path": d.path.display().to_string(), "origin": d.origin}))
        .collect();

    if args.json {
        let settings_json: Map<String, Value> = entries
            .iter()
            .map(|(k, v, s)| (k.clone(), json!({"value": v, "source": s})))
            .collect();
        let doc = json!({
            "config_file": file,
            "settings": settings_json,
            "plugins": tables,
            "plugin_search_path": search_path,
        });
        return print_stdout(&format!("{doc}\n"));
    }

    let mut out = String::new();
    match &settings.config_file {
        Some((p, origin)) => {
            let _ = writeln!(out, "# config file: {} (from {origin})", p.display());
        }
        None => out.push_str("# config file: none (built-in defaults)\n"),
    }
    let width = entries.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    for (key, value, source) in &entries {
        let shown = match value {
            Value::String(s) => s.clone(),
            Value::Null => "(none)".to_owned(),
            other => other.to_string(),
        };
        let _ = writeln!(out, "{key:<width$} = {shown}  # {source}");
    }
    for dir in &search_path {
        let _ = writeln!(
            out,
            "# plugin dir: {} ({})",
            dir["path"].as_str().unwrap_or(""),
            dir["origin"].as_str().unwrap_or("")
        );
    }
    for (name, table) in &tables {
        let _ = writeln!(out, "[plugins.{name}] = {table}  # config file");
    }
    print_stdout(&out)
}

fn table_json(table: &toml::Table) -> Value {
    serde_json::to_value(table).unwrap_or(Value::Null)
}

/// Masks values of keys that look secret (`token`, `password`, `secret`, `key`).
fn mask_secrets(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let lower = k.to_ascii_lowercase();
                    let secret = ["token", "password", "secret", "key"]
                        .iter()
                        .any(|s| lower.contains(s));
                    let v = if secret && !v.is_object() {
                        Value::String(crate::redact::MASK.to_owned())
                    } else {
                        mask_secrets(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_looking_keys_are_masked() {
        let v = json!({"root": "/x", "api_token": "abc", "nested": {"password": "p"}});
        let m = mask_secrets(&v);
        assert_eq!(m["root"], "/x");
        assert_eq!(m["api_token"], "***");
        assert_eq!(m["nested"]["password"], "***");
    }
}
