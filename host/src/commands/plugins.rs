//! `hubget plugins [--json]`: every loaded plugin (name, version, interface version, path,
//! where it runs and how it is sandboxed, capabilities) and, for each file that failed to
//! load, the one-line reason.
//!
//! Capabilities are a backend method, so each plugin gets a backend created with the current
//! settings and its `[plugins.<name>]` table; if that fails, the error is shown in place of the
//! capabilities (the command still succeeds).

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cli::PluginsArgs;
use crate::commands::{load_plugins, load_settings, open_backend, print_stdout};
use crate::env::Env;
use crate::error::HostError;
use crate::redact::redact;

/// Runs `hubget plugins`.
pub fn run(env: &Env, config: Option<PathBuf>, args: &PluginsArgs) -> Result<(), HostError> {
    let settings = load_settings(&args.settings.overrides(config), env)?;
    let registry = load_plugins(&settings);
    let token = settings.token.value.as_deref();

    let mut plugins = Vec::new();
    for plugin in registry.plugins() {
        let caps = match open_backend(plugin, &settings) {
            Ok(backend) => {
                let c = backend.capabilities();
                Ok(json!({
                    "repo_types": c.repo_types.iter().map(|t| t.name().into_owned()).collect::<Vec<_>>(),
                    "features": c.features.names(),
                    "feature_bits": c.features.0,
                    "max_batch_files": c.max_batch_files,
                }))
            }
            Err(e) => Err(redact(&e.to_string(), token)),
        };
        plugins.push(json!({
            "name": plugin.name(),
            "version": plugin.info.version.as_str(),
            "description": plugin.info.description.as_str(),
            "interface_version": plugin.interface_version,
            "api_version": plugin.info.api_version.as_str(),
            "path": plugin.path.display().to_string(),
            "origin": plugin.origin,
            "isolation": if plugin.isolation().is_some() { "process" } else { "none" },
            "sandbox": plugin.isolation(),
            "capabilities": caps.as_ref().ok(),
            "error": caps.as_ref().err(),
        }));
    }
    let failures: Vec<Value> = registry
        .failures()
        .iter()
        .map(|f| json!({"path": f.path.display().to_string(), "reason": f.reason}))
        .collect();

    if args.json {
        let doc = json!({"plugins": plugins, "failures": failures});
        return print_stdout(&format!("{doc}\n"));
    }

    let mut out = String::new();
    if plugins.is_empty() {
        out.push_str("no plugins loaded\n");
    }
    for p in &plugins {
        let _ = writeln!(
            out,
            "{} {} (plugin-api {})  {}  [{}]",
            p["name"].as_str().unwrap_or(""),
            p["version"].as_str().unwrap_or(""),
            p["interface_version"].as_str().unwrap_or(""),
            p["path"].as_str().unwrap_or(""),
            p["origin"].as_str().unwrap_or(""),
        );
        let description = p["description"].as_str().unwrap_or("");
        if !description.is_empty() {
            let _ = writeln!(out, "    {description}");
        }
        let _ = match p["sandbox"].as_str() {
            Some(sandbox) => writeln!(
                out,
                "    runs isolated (a helper process); sandbox: {sandbox}"
            ),
            None => writeln!(out, "    runs in hubget's process"),
        };
        match (&p["capabilities"], p["error"].as_str()) {
            (Value::Object(c), _) => {
                let list = |v: &Value| {
                    let items: Vec<&str> = v
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    if items.is_empty() {
                        "none".to_owned()
                    } else {
                        items.join(", ")
                    }
                };
                let _ = writeln!(
                    out,
                    "    repo types: {}; features: {}",
                    list(&c["repo_types"]),
                    list(&c["features"])
                );
            }
            (_, Some(error)) => {
                let _ = writeln!(out, "    cannot start: {error}");
            }
            _ => {}
        }
    }
    if !failures.is_empty() {
        out.push_str("\nnot loaded:\n");
        for f in &failures {
            let _ = writeln!(
                out,
                "  {}: {}",
                f["path"].as_str().unwrap_or(""),
                f["reason"].as_str().unwrap_or("")
            );
        }
    }
    print_stdout(&out)
}
