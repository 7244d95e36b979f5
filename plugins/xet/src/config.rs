//! The `[plugins.xet]` table and how it maps onto hf-xet's [`XetConfig`].
//!
//! hf-xet reads its knobs from `HF_XET_*` environment variables when a config is created
//! (`XetConfig::new`). Environment variables are process-global, shared with the host and the
//! other plugins, so this plugin never sets any: it builds the config programmatically and
//! overwrites every knob it exposes. `HF_XET_*` variables still apply to the knobs not listed
//! here. Defaults keep peak memory modest (a few hundred MiB at most) instead of hf-xet's
//! memory-derived buffers (usable RAM / 16 .. / 4).

use std::path::PathBuf;
use std::time::Duration;

use hubget_plugin_api::{HostSettings, PluginError};
use serde::Deserialize;
use xet::xet_session::XetConfig;

const MIB: u64 = 1024 * 1024;

/// The plugin's configuration table, `[plugins.xet]` in hubget's config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Small Xet files (at most two segments) reconstructed at the same time through hf-xet's
    /// file download group (`data.max_concurrent_file_downloads`).
    pub max_concurrent_files: usize,
    /// Larger files (and resumed ones) are fetched as ranged streams of this many MiB each (at
    /// least 1/512 of the file).
    pub segment_mib: u64,
    /// Segments fetched at the same time, over the whole batch.
    pub parallel_segments: usize,
    /// Parallel xorb-range requests to start with (hf-xet `client.ac_initial_download_concurrency`).
    /// Also the fixed count when `adaptive_concurrency` is off.
    pub download_concurrency: usize,
    /// Upper bound for the adaptive controller (`client.ac_max_download_concurrency`).
    pub max_download_concurrency: usize,
    /// Let hf-xet adapt the request concurrency to the link (`client.enable_adaptive_concurrency`).
    pub adaptive_concurrency: bool,
    /// Download buffer always available for reconstruction, MiB (`reconstruction.download_buffer_size`).
    /// Bounds the bytes fetched but not yet written: the main memory knob.
    pub buffer_mib: u64,
    /// Extra buffer per active file, MiB (`reconstruction.download_buffer_perfile_size`).
    pub buffer_per_file_mib: u64,
    /// Ceiling of the total download buffer, MiB (`reconstruction.download_buffer_limit`).
    pub buffer_limit_mib: u64,
    /// Retries of one CAS request inside hf-xet (`client.retry_max_attempts`); default: the
    /// host's `max_attempts - 1`.
    pub retry_max_attempts: Option<usize>,
    /// First retry delay inside hf-xet, milliseconds (`client.retry_base_delay`).
    pub retry_base_delay_ms: u64,
    /// Send hf-xet's transfer telemetry (`POST /v1/telemetry` to the CAS). Off unless turned on;
    /// the usual opt-outs (`HF_HUB_DISABLE_TELEMETRY`, `DO_NOT_TRACK`, ...) still win.
    pub telemetry: bool,
    /// Where hf-xet keeps its (small) session/staging directories. Default:
    /// `$XDG_CACHE_HOME/hubget/xet` (else `~/.cache/hubget/xet`), outside the Hugging Face cache.
    pub cache_dir: Option<PathBuf>,
    /// Worker threads of the plugin's runtime (decompression runs there); default: the number
    /// of CPUs, between 2 and 8.
    pub threads: Option<usize>,
    /// Take the chunks a file shares with files already on disk from those files instead of the
    /// network (see the `reuse` module). On by default.
    pub reuse: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_concurrent_files: 4,
            segment_mib: 4,
            parallel_segments: 12,
            download_concurrency: 8,
            max_download_concurrency: 32,
            adaptive_concurrency: true,
            buffer_mib: 128,
            buffer_per_file_mib: 16,
            buffer_limit_mib: 256,
            retry_max_attempts: None,
            retry_base_delay_ms: 500,
            telemetry: false,
            cache_dir: None,
            threads: None,
            reuse: true,
        }
    }
}

impl Config {
    /// Parses the table (empty text gives the defaults) and checks the values.
    pub fn parse(toml_text: &str) -> Result<Self, PluginError> {
        let config: Self = hubget_plugin_api::sdk::parse_config("xet", toml_text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), PluginError> {
        let invalid = |key: &str, why: &str| {
            Err(PluginError::new(
                hubget_plugin_api::ErrorKind::CONFIG,
                format!("invalid [plugins.xet] table (key `{key}`): {why}"),
            ))
        };
        if self.max_concurrent_files == 0 {
            return invalid("max_concurrent_files", "must be at least 1");
        }
        if self.segment_mib == 0 {
            return invalid("segment_mib", "must be at least 1");
        }
        if self.parallel_segments == 0 {
            return invalid("parallel_segments", "must be at least 1");
        }
        if self.download_concurrency == 0 {
            return invalid("download_concurrency", "must be at least 1");
        }
        if self.max_download_concurrency < self.download_concurrency {
            return invalid(
                "max_download_concurrency",
                "must be at least `download_concurrency`",
            );
        }
        if self.buffer_mib == 0 {
            return invalid("buffer_mib", "must be at least 1");
        }
        if self.buffer_limit_mib < self.buffer_mib {
            return invalid("buffer_limit_mib", "must be at least `buffer_mib`");
        }
        if self.threads == Some(0) {
            return invalid("threads", "must be at least 1");
        }
        Ok(())
    }

    /// How files are split into ranged streams.
    pub fn tuning(&self) -> crate::fetch::Tuning {
        crate::fetch::Tuning {
            segment: self.segment_mib * MIB,
            parallel: self.parallel_segments,
        }
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

    /// The directory handed to hf-xet as its cache root.
    pub fn cache_root(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })
            .unwrap_or_else(std::env::temp_dir);
        base.join("hubget").join("xet")
    }

    /// hf-xet's config: its defaults (and the `HF_XET_*` environment), then every knob of this
    /// table, then the host's timeouts.
    pub fn to_xet_config(&self, settings: &HostSettings) -> XetConfig {
        let mut c = XetConfig::new();

        c.data.max_concurrent_file_downloads = self.max_concurrent_files;

        let initial = self.download_concurrency;
        c.client.enable_adaptive_concurrency = self.adaptive_concurrency;
        c.client.ac_initial_download_concurrency = initial;
        if self.adaptive_concurrency {
            c.client.ac_min_download_concurrency = 1;
            c.client.ac_max_download_concurrency = self.max_download_concurrency;
        } else {
            c.client.ac_min_download_concurrency = initial;
            c.client.ac_max_download_concurrency = initial;
        }

        c.reconstruction.download_buffer_size = (self.buffer_mib * MIB).into();
        c.reconstruction.download_buffer_perfile_size = (self.buffer_per_file_mib * MIB).into();
        c.reconstruction.download_buffer_limit = (self.buffer_limit_mib * MIB).into();
        // Prefetch is bounded by the buffer anyway; keep the target no larger than it.
        c.reconstruction.min_prefetch_buffer = (self.buffer_limit_mib * MIB).into();

        c.client.retry_max_attempts = self
            .retry_max_attempts
            .unwrap_or_else(|| settings.max_attempts.saturating_sub(1) as usize);
        c.client.retry_base_delay = Duration::from_millis(self.retry_base_delay_ms);
        if settings.connect_timeout_secs > 0 {
            c.client.connect_timeout = Duration::from_secs(settings.connect_timeout_secs);
        }
        if settings.read_timeout_secs > 0 {
            c.client.read_timeout = Duration::from_secs(settings.read_timeout_secs);
        }

        // `XetConfig::new` already applied the opt-out variables; only ever turn it off here.
        c.telemetry.enabled = c.telemetry.enabled && self.telemetry;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_modest_and_telemetry_is_off() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        let x = c.to_xet_config(&HostSettings::default());
        assert!(!x.telemetry.enabled);
        assert!(x.reconstruction.download_buffer_limit.as_u64() <= 256 * MIB);
        assert_eq!(x.client.retry_max_attempts, 4);
        assert_eq!(x.client.read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn table_keys_reach_hf_xet() {
        let c = Config::parse(
            "download_concurrency = 6\nadaptive_concurrency = false\nbuffer_mib = 64\n\
             buffer_limit_mib = 128\nmax_concurrent_files = 2\ntelemetry = true\nretry_max_attempts = 1\n",
        )
        .unwrap();
        let x = c.to_xet_config(&HostSettings::default());
        assert_eq!(x.client.ac_initial_download_concurrency, 6);
        assert_eq!(x.client.ac_min_download_concurrency, 6);
        assert_eq!(x.client.ac_max_download_concurrency, 6);
        assert!(!x.client.enable_adaptive_concurrency);
        assert_eq!(x.reconstruction.download_buffer_size.as_u64(), 64 * MIB);
        assert_eq!(x.reconstruction.download_buffer_limit.as_u64(), 128 * MIB);
        assert_eq!(x.data.max_concurrent_file_downloads, 2);
        assert_eq!(x.client.retry_max_attempts, 1);
    }

    #[test]
    fn unknown_and_invalid_keys_are_config_errors() {
        let e = Config::parse("buffer_size = 3\n").unwrap_err();
        assert_eq!(e.kind, hubget_plugin_api::ErrorKind::CONFIG);
        assert!(e.message.contains("buffer_size"), "{}", e.message);
        let e = Config::parse("buffer_mib = 600\n").unwrap_err();
        assert!(e.message.contains("buffer_limit_mib"), "{}", e.message);
        let e = Config::parse("segment_mib = 0\n").unwrap_err();
        assert!(e.message.contains("segment_mib"), "{}", e.message);
        let e = Config::parse("buffer_mib = 600\nbuffer_limit_mib = 100\n").unwrap_err();
        assert!(e.message.contains("buffer_limit_mib"), "{}", e.message);
    }

    #[test]
    fn cache_root_stays_out_of_the_hf_cache() {
        let c = Config::default();
        let root = c.cache_root();
        assert!(root.ends_with("hubget/xet"), "{}", root.display());
        let c = Config {
            cache_dir: Some("/x/y".into()),
            ..Config::default()
        };
        assert_eq!(c.cache_root(), PathBuf::from("/x/y"));
    }
}
