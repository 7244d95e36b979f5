//! The `[plugins.lfs]` table. Unset keys fall back to the host settings (`--connections`,
//! `range_size`, ...); keys set here win over them.

use hubget_plugin_api::{ErrorKind, HostSettings, PluginError};
use serde::Deserialize;

const MIB: u64 = 1024 * 1024;

/// The plugin's configuration table, `[plugins.lfs]` in hubget's config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Concurrent connections per large file (default: the host's `connections_per_file`).
    pub connections: Option<u32>,
    /// Size of one range request in MiB (default: the host's `range_size`).
    pub range_size_mib: Option<u64>,
    /// Ask the Git LFS batch API for LFS/Xet-backed files (one request per fetch); `false`
    /// fetches them through `resolve` and its redirect instead.
    pub use_batch_api: bool,
    /// Files of one fetch downloaded at the same time.
    pub concurrent_files: usize,
    /// Worker threads of the plugin's runtime.
    pub threads: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            connections: None,
            range_size_mib: None,
            use_batch_api: true,
            concurrent_files: 4,
            threads: 2,
        }
    }
}

impl Config {
    /// Parses the table (empty text gives the defaults) and checks the values.
    pub fn parse(toml_text: &str) -> Result<Self, PluginError> {
        let config: Self = hubget_plugin_api::sdk::parse_config("lfs", toml_text)?;
        let bad = |what: &str| {
            Err(PluginError::new(
                ErrorKind::CONFIG,
                format!("invalid [plugins.lfs] table: {what}"),
            ))
        };
        if config.connections == Some(0) || config.connections.is_some_and(|c| c > 64) {
            return bad("`connections` must be between 1 and 64");
        }
        if config.range_size_mib == Some(0) || config.range_size_mib.is_some_and(|r| r > 4096) {
            return bad("`range_size_mib` must be between 1 and 4096");
        }
        if !(1..=64).contains(&config.concurrent_files) {
            return bad("`concurrent_files` must be between 1 and 64");
        }
        if !(1..=64).contains(&config.threads) {
            return bad("`threads` must be between 1 and 64");
        }
        Ok(config)
    }

    /// Connections per file: this table, else the host settings.
    pub fn connections(&self, settings: &HostSettings) -> u32 {
        self.connections
            .unwrap_or(settings.connections_per_file)
            .max(1)
    }

    /// Range size in bytes: this table, else the host settings.
    pub fn range_size(&self, settings: &HostSettings) -> u64 {
        self.range_size_mib
            .map(|m| m * MIB)
            .unwrap_or(settings.range_size)
            .max(64 * 1024)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_host_settings() {
        let c = Config::parse("").unwrap();
        let s = HostSettings {
            connections_per_file: 3,
            range_size: 2 * MIB,
            ..HostSettings::default()
        };
        assert!(c.use_batch_api);
        assert_eq!(c.connections(&s), 3);
        assert_eq!(c.range_size(&s), 2 * MIB);
        let c =
            Config::parse("connections = 6\nrange_size_mib = 32\nuse_batch_api = false\n").unwrap();
        assert_eq!((c.connections(&s), c.range_size(&s)), (6, 32 * MIB));
        assert!(!c.use_batch_api);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_config_errors() {
        let e = Config::parse("conections = 4\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::CONFIG);
        assert!(e.message.contains("conections"), "{}", e.message);
        for bad in [
            "connections = 0",
            "range_size_mib = 0",
            "concurrent_files = 0",
            "threads = 0",
        ] {
            assert_eq!(
                Config::parse(bad).unwrap_err().kind,
                ErrorKind::CONFIG,
                "{bad}"
            );
        }
    }
}
