//! The `[plugins.xet]` table.
//!
//! Since the plugin speaks the CAS download protocol itself ([`crate::cas`], [`crate::fetch`]),
//! hf-xet's downloader knobs (its buffers, adaptive concurrency, internal retries, telemetry and
//! staging directory) no longer exist here: an old config file naming one gets an error that
//! says so. Retries follow the host's `max_attempts`; timeouts, proxy and CA bundle are the
//! host's.

use hubget_plugin_api::{ErrorKind, PluginError};
use serde::Deserialize;

const MIB: u64 = 1024 * 1024;

/// Keys of earlier versions that configured hf-xet's downloader.
const RETIRED: &[&str] = &[
    "max_concurrent_files",
    "download_concurrency",
    "max_download_concurrency",
    "adaptive_concurrency",
    "buffer_mib",
    "buffer_per_file_mib",
    "buffer_limit_mib",
    "retry_max_attempts",
    "retry_base_delay_ms",
    "telemetry",
    "cache_dir",
];

/// The plugin's configuration table, `[plugins.xet]` in hubget's config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The bytes (MiB) of a file the first reconstruction query covers; the second covers twice
    /// that, the later ones 32 times that (xet-core's 256 MiB, 512 MiB, 8 GiB by default).
    pub window_mib: u64,
    /// The most fetch ranges downloaded at the same time by the plugin, over every file and
    /// call (the connections in use); the plugin starts with fewer and adds more while
    /// throughput grows.
    pub parallel_segments: usize,
    /// Worker threads of the plugin's runtime (decoding runs on blocking threads beside it);
    /// default: the number of CPUs, between 2 and 8.
    pub threads: Option<usize>,
    /// Take the chunks a file shares with files already on disk from those files instead of the
    /// network (see the `reuse` module). On by default.
    pub reuse: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window_mib: crate::fetch::WINDOW / MIB,
            parallel_segments: 12,
            threads: None,
            reuse: true,
        }
    }
}

impl Config {
    /// Parses the table (empty text gives the defaults) and checks the values.
    pub fn parse(toml_text: &str) -> Result<Self, PluginError> {
        let config: Self = hubget_plugin_api::sdk::parse_config("xet", toml_text).map_err(|e| {
            if e.message.contains("`segment_mib`") {
                return PluginError::new(
                    ErrorKind::CONFIG,
                    format!(
                        "{} (hint: files are no longer cut into segments; each reconstruction \
                         query covers a window, set with `window_mib`)",
                        e.message
                    ),
                );
            }
            match RETIRED
                .iter()
                .find(|k| e.message.contains(&format!("`{k}`")))
            {
                Some(key) => PluginError::new(
                    ErrorKind::CONFIG,
                    format!(
                        "{} (hint: `{key}` configured hf-xet's downloader, which the xet backend \
                         no longer uses; delete the key)",
                        e.message
                    ),
                ),
                None => e,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), PluginError> {
        let invalid = |key: &str, why: &str| {
            Err(PluginError::new(
                ErrorKind::CONFIG,
                format!("invalid [plugins.xet] table (key `{key}`): {why}"),
            ))
        };
        if self.window_mib == 0 {
            return invalid("window_mib", "must be at least 1");
        }
        if self.parallel_segments == 0 {
            return invalid("parallel_segments", "must be at least 1");
        }
        if self.threads == Some(0) {
            return invalid("threads", "must be at least 1");
        }
        Ok(())
    }

    /// How files are asked and fetched.
    pub fn tuning(&self) -> crate::fetch::Tuning {
        crate::fetch::Tuning::new(self.window_mib * MIB, self.parallel_segments)
    }

    /// Worker threads for the plugin runtime.
    pub fn worker_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(2, 8)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_sets_windows_connections_and_reuse() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::default().tuning().window, 256 * MIB);
        let c = Config::parse("window_mib = 8\nparallel_segments = 3\nreuse = false\n").unwrap();
        assert_eq!(c.tuning().window, 8 * MIB);
        assert_eq!(c.tuning().concurrency.max(), 3);
        assert!(!c.reuse);
    }

    #[test]
    fn unknown_and_invalid_keys_are_config_errors() {
        let e = Config::parse("buffer_size = 3\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::CONFIG);
        assert!(e.message.contains("buffer_size"), "{}", e.message);
        assert!(!e.message.contains("hint"), "{}", e.message);
        let e = Config::parse("window_mib = 0\n").unwrap_err();
        assert!(e.message.contains("window_mib"), "{}", e.message);
        let e = Config::parse("parallel_segments = 0\n").unwrap_err();
        assert!(e.message.contains("parallel_segments"), "{}", e.message);
    }

    #[test]
    fn a_retired_hf_xet_key_says_what_to_do() {
        let e = Config::parse("buffer_mib = 64\n").unwrap_err();
        assert_eq!(e.kind, ErrorKind::CONFIG);
        assert!(e.message.contains("delete the key"), "{}", e.message);
        let e = Config::parse("segment_mib = 4\n").unwrap_err();
        assert!(e.message.contains("window_mib"), "{}", e.message);
    }
}
