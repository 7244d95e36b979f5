//! The command line (clap), shaped like `hf download` so that muscle memory carries over.
//!
//! `hubget download REPO_ID [FILES]...`, `hubget export`, `hubget plugins [--json]`, `hubget
//! config show [--json]`, `hubget cache ls|verify|rm|prune`, `hubget add|remove|lock|sync`; global `-v/--verbose` (repeatable) and `--config FILE`. `REPO_ID` may also be an
//! `hf://[type/]owner/name[@revision][/path]` URI (see [`RepoSpec::parse`]).

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};
use hubget_plugin_api::RepoType;

use crate::error::HostError;
use crate::settings::Overrides;

/// hubget: a fast, verifying Hugging Face Hub downloader with backend plugins.
#[derive(Debug, Parser)]
#[command(name = "hubget", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG works too.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Config file (default: $HUBGET_CONFIG, else $XDG_CONFIG_HOME/hubget/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// hubget's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download files of a repository into the Hugging Face cache (or --local-dir).
    Download(DownloadArgs),
    /// Upload a revision from the cache (downloading what is missing first) to an object store
    /// that a fleet of machines then reads from (`--to s3://bucket/prefix`).
    Export(ExportArgs),
    /// List the backend plugins found, and the files that failed to load.
    Plugins(PluginsArgs),
    /// Show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect, verify and clean the Hugging Face cache (as `hf cache` does).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Declare a repository the project needs in hubget.toml (created in the current directory
    /// when none is found here or above).
    Add(AddArgs),
    /// Remove a repository from hubget.toml.
    Remove(RemoveArgs),
    /// Resolve hubget.toml into hubget.lock: each entry's commit and every file's hashes.
    Lock(LockArgs),
    /// Make the cache (or each entry's local_dir) hold exactly the files hubget.lock names.
    Sync(SyncArgs),
    /// Internal: serve one isolated plugin over stdin/stdout (started by hubget itself).
    #[command(name = "__plugin-helper", hide = true)]
    PluginHelper,
}

/// `--manifest`, for the project commands.
#[derive(Debug, Clone, Default, Args)]
pub struct ManifestArg {
    /// The manifest (default: hubget.toml in the current directory or the nearest above).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
}

/// `hubget add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// `owner/name`, `datasets/owner/name` or an `hf://` address of a repository.
    pub repo: String,
    /// model, dataset, space or kernel (for a name without a type prefix).
    #[arg(long, value_name = "TYPE")]
    pub repo_type: Option<String>,
    /// Branch, tag, refs/pr/N or commit to pin (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Only files matching (repeatable; fnmatch-style; `dir/` is a folder).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Not files matching (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Sync into this folder (relative to the manifest) instead of the Hugging Face cache.
    #[arg(long, value_name = "DIR")]
    pub local_dir: Option<PathBuf>,
    /// The manifest.
    #[command(flatten)]
    pub manifest: ManifestArg,
}

/// `hubget remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The repository, as `hubget add` named it.
    pub repo: String,
    /// model, dataset, space or kernel (for a name without a type prefix).
    #[arg(long, value_name = "TYPE")]
    pub repo_type: Option<String>,
    /// The manifest.
    #[command(flatten)]
    pub manifest: ManifestArg,
}

/// `hubget lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Move pins forward: every entry, or only REPO; without it, existing pins stay.
    #[arg(long, value_name = "REPO", num_args = 0..=1, default_missing_value = "")]
    pub upgrade: Option<String>,
    /// The manifest.
    #[command(flatten)]
    pub manifest: ManifestArg,
    /// Settings.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `hubget sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Fail if hubget.lock is out of date with hubget.toml (instead of relocking).
    #[arg(long)]
    pub locked: bool,
    /// Use hubget.lock as it is, resolving nothing: no Hub API call (implies --locked).
    #[arg(long)]
    pub frozen: bool,
    /// Change nothing; list what is missing, extra or different, and exit 8 if anything is.
    #[arg(long)]
    pub check: bool,
    /// Show what would move, in bytes; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove cached revisions of the manifest's repositories that the lock does not name.
    #[arg(long)]
    pub prune: bool,
    /// Also upload exactly the locked files to an object store (`s3://bucket/prefix`), as
    /// `hubget export` does; the entries sync into the cache first.
    #[arg(long, value_name = "URL")]
    pub to: Option<String>,
    /// NDJSON events on stdout (as `hubget download --json`).
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(short, long)]
    pub quiet: bool,
    /// The manifest.
    #[command(flatten)]
    pub manifest: ManifestArg,
    /// Settings.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `hubget cache ...`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cached repositories (or revisions) with their size on disk and refs.
    Ls(CacheLsArgs),
    /// Check every file of a revision (or a local dir) against its hash; `--repair` fetches the
    /// bad and missing ones again.
    Verify(CacheVerifyArgs),
    /// Remove repositories or revisions: `owner/name`, `TYPE/owner/name`, `REPO@REV`,
    /// `hf://...` addresses, or commit hashes.
    Rm(CacheRmArgs),
    /// Remove detached revisions, stale partial downloads and unreferenced shared blobs.
    Prune(RemovalArgs),
}

/// `--cache-dir`, for the cache commands that need nothing else.
#[derive(Debug, Clone, Default, Args)]
pub struct CacheDirArg {
    /// Cache directory (default: $HF_HUB_CACHE, else $HF_HOME/hub).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// `hubget cache ls`.
#[derive(Debug, Args)]
pub struct CacheLsArgs {
    /// One line per revision instead of per repository.
    #[arg(long)]
    pub revisions: bool,
    /// Keep entries matching all of these: `type=dataset`, `size>1GB`, `size<10M`,
    /// `modified>7d` (older than), `modified<2h` (newer than), `name~bert` (id contains).
    #[arg(short, long = "filter", value_name = "EXPR")]
    pub filters: Vec<String>,
    /// Sort by `name`, `size` or `modified` (`:asc`/`:desc` to choose the order).
    #[arg(long, value_name = "KEY")]
    pub sort: Option<String>,
    /// Show at most N entries (after sorting).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The cache.
    #[command(flatten)]
    pub cache: CacheDirArg,
}

/// `hubget cache verify`.
#[derive(Debug, Args)]
pub struct CacheVerifyArgs {
    /// `owner/name` or an `hf://` address.
    #[arg(value_name = "REPO_ID")]
    pub repo_id: String,
    /// Repository type.
    #[arg(long, visible_alias = "type", value_name = "TYPE",
          value_parser = ["model", "dataset", "space", "kernel"])]
    pub repo_type: Option<String>,
    /// Branch, tag, refs/pr/N or commit (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Verify a local dir written by `download --local-dir` instead of the cache.
    #[arg(long, value_name = "DIR", conflicts_with = "cache_dir")]
    pub local_dir: Option<PathBuf>,
    /// Fetch the bad and missing files again through the normal download (only those).
    #[arg(long)]
    pub repair: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Settings (token, endpoint, backends; `--offline` checks against the hashes the cache
    /// records instead of the Hub's manifest).
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `hubget cache rm`.
#[derive(Debug, Args)]
pub struct CacheRmArgs {
    /// What to remove: `owner/name`, `TYPE/owner/name`, `REPO@REV`, `hf://...`, or a commit.
    #[arg(value_name = "TARGET", required = true)]
    pub targets: Vec<String>,
    /// The type of `owner/name` targets without one.
    #[arg(long, visible_alias = "type", value_name = "TYPE",
          value_parser = ["model", "dataset", "space", "kernel"])]
    pub repo_type: Option<String>,
    /// The cache, and how to remove.
    #[command(flatten)]
    pub removal: RemovalArgs,
}

/// `hubget cache prune`, and what `cache rm` shares with it.
#[derive(Debug, Args)]
pub struct RemovalArgs {
    /// Show what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// The cache.
    #[command(flatten)]
    pub cache: CacheDirArg,
}

/// `hubget config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every effective setting and where it came from.
    Show(ConfigShowArgs),
}

/// `hubget plugins`.
#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Settings handed to the backends while listing their capabilities.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// `hubget config show`.
#[derive(Debug, Args)]
pub struct ConfigShowArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print the built-in defaults as a commented config file (every key, its flag and
    /// environment variables) instead.
    #[arg(long, conflicts_with = "json")]
    pub defaults: bool,
    /// The same overrides `download` takes, to see their effect.
    #[command(flatten)]
    pub settings: SettingsArgs,
}

/// Options that override settings (shared by `download`, `plugins` and `config show`).
#[derive(Debug, Clone, Default, Args)]
pub struct SettingsArgs {
    /// Hub token (default: $HF_TOKEN, else the file at $HF_TOKEN_PATH or $HF_HOME/token).
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Hub endpoint (default: $HF_ENDPOINT, else the public Hub at huggingface.co).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Cache directory (default: $HF_HUB_CACHE, else $HF_HOME/hub).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Files downloaded at once (default 8).
    #[arg(long, value_name = "N")]
    pub max_workers: Option<usize>,
    /// Use only the local cache; no network (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Seconds without progress before a backend call is cancelled (default 30).
    #[arg(long = "stall-timeout", value_name = "SECS")]
    pub stall_timeout: Option<u64>,
    /// Connections per large file (default 8).
    #[arg(short = 'x', long, value_name = "N")]
    pub connections: Option<u32>,
    /// Bandwidth cap for the whole run, e.g. 50M or 500k (bytes/s; k, M, G are 1024-based).
    #[arg(long, value_name = "RATE")]
    pub limit_rate: Option<String>,
    /// Longest wait for a server's rate-limit window before a request fails, in seconds
    /// (default 600; the Hub's window is 5 minutes).
    #[arg(long = "max-rate-limit-wait", value_name = "SECS")]
    pub max_rate_limit_wait: Option<u64>,
    /// Try this backend first, then the configured order.
    #[arg(long, value_name = "NAME")]
    pub backend: Option<String>,
    /// Use only the backend given with --backend.
    #[arg(long)]
    pub no_fallback: bool,
    /// Same as --backend xet.
    #[arg(long, conflicts_with = "backend")]
    pub use_xet: bool,
    /// Allow the Hub token over plain http:// to a host that is not this machine.
    #[arg(long)]
    pub allow_insecure_http: bool,
}

impl SettingsArgs {
    /// The overrides for [`crate::settings::Settings::resolve`]; `config` is the global
    /// `--config`.
    pub fn overrides(&self, config: Option<PathBuf>) -> Overrides {
        let (backend, backend_flag) = if self.use_xet {
            (Some("xet".to_owned()), "--use-xet")
        } else {
            (self.backend.clone(), "--backend")
        };
        Overrides {
            config,
            endpoint: self.endpoint.clone(),
            token: self.token.clone(),
            cache_dir: self.cache_dir.clone(),
            max_workers: self.max_workers,
            offline: self.offline,
            stall_timeout_secs: self.stall_timeout,
            connections_per_file: self.connections,
            limit_rate: self.limit_rate.clone(),
            max_rate_limit_wait_secs: self.max_rate_limit_wait,
            backend,
            backend_flag,
            no_fallback: self.no_fallback,
            allow_insecure_http: self.allow_insecure_http,
        }
    }
}

/// `hubget export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where to: `s3://bucket/prefix` (a plugin that exports that scheme does the upload).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// What to export: the same selection as `hubget download`.
    #[command(flatten)]
    pub download: DownloadArgs,
}

/// `hubget download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// `owner/name`, or `hf://[datasets/|spaces/|kernels/]owner/name[@revision][/path]`.
    #[arg(value_name = "REPO_ID")]
    pub repo_id: String,
    /// Files to download (default: the whole repository, filtered by --include/--exclude).
    #[arg(value_name = "FILES")]
    pub files: Vec<String>,
    /// Repository type.
    #[arg(long, visible_alias = "type", value_name = "TYPE",
          value_parser = ["model", "dataset", "space", "kernel"])]
    pub repo_type: Option<String>,
    /// Branch, tag, refs/pr/N or full commit sha (default: main).
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// Only files matching these globs (repeatable).
    #[arg(long, value_name = "GLOB", num_args = 1.., action = ArgAction::Append)]
    pub include: Vec<String>,
    /// Skip files matching these globs (repeatable).
    #[arg(long, value_name = "GLOB", num_args = 1.., action = ArgAction::Append)]
    pub exclude: Vec<String>,
    /// Write real files into DIR instead of the cache.
    #[arg(long, value_name = "DIR", conflicts_with = "cache_dir")]
    pub local_dir: Option<PathBuf>,
    /// Download even if the files are already in the cache.
    #[arg(long)]
    pub force_download: bool,
    /// Show what would be downloaded, and fetch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON events on stdout (one per line).
    #[arg(long, conflicts_with = "quiet")]
    pub json: bool,
    /// Print only the resulting path.
    #[arg(short, long)]
    pub quiet: bool,
    /// Settings overrides.
    #[command(flatten)]
    pub settings: SettingsArgs,
    /// Deprecated, ignored (resuming is always on).
    #[arg(long, hide = true)]
    pub resume_download: bool,
    /// Deprecated, ignored (hubget decides how files land in --local-dir).
    #[arg(long, hide = true, value_name = "BOOL")]
    pub local_dir_use_symlinks: Option<String>,
}

/// What to download: a repository at a revision, with optional files. Built from `REPO_ID`
/// (possibly an `hf://` URI), `FILES`, `--repo-type` and `--revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// `owner/name` (or a bare `name` for legacy repos).
    pub repo_id: String,
    /// The revision asked for (`main` by default).
    pub revision: String,
    /// Files named on the command line or in the URI (empty: whole repository).
    pub files: Vec<String>,
}

impl RepoSpec {
    /// Parses the download arguments. `hf://` URIs (see [`HfUri`]): the path, if any, is added
    /// to `files` (a trailing `/` means a folder).
    pub fn parse(
        repo: &str,
        files: &[String],
        repo_type: Option<&str>,
        revision: Option<&str>,
    ) -> Result<RepoSpec, HostError> {
        let flag_type = repo_type
            .map(|t| {
                RepoType::parse(t).ok_or_else(|| HostError::InvalidValue {
                    name: "--repo-type".to_owned(),
                    message: format!("`{t}` is not one of model, dataset, space, kernel"),
                })
            })
            .transpose()?;
        let mut files = files.to_vec();
        let (repo_type, repo_id, uri_revision) = if let Some(rest) = repo.strip_prefix("hf://") {
            let uri = HfUri::parse(rest).map_err(|why| {
                HostError::Usage(format!(
                    "`{repo}` is not a valid hf:// address: {why} \
                     (expected hf://[datasets/|spaces/|kernels/]owner/name[@revision][/path])"
                ))
            })?;
            if let (Some(a), Some(b)) = (uri.repo_type, flag_type)
                && a != b
            {
                return Err(HostError::Usage(format!(
                    "`{repo}` is a {a} but --repo-type says {b}"
                )));
            }
            if !uri.path.is_empty() {
                files.push(uri.path);
            }
            (
                uri.repo_type.or(flag_type).unwrap_or(RepoType::MODEL),
                uri.repo_id,
                uri.revision,
            )
        } else {
            (flag_type.unwrap_or(RepoType::MODEL), repo.to_owned(), None)
        };
        if repo_id.is_empty()
            || repo_id.split('/').count() > 2
            || repo_id
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(HostError::Usage(format!(
                "`{repo}` is not a repository id (expected owner/name)"
            )));
        }
        let revision = match (uri_revision, revision) {
            (Some(a), Some(b)) if a != b => {
                return Err(HostError::Usage(format!(
                    "`{repo}` names revision `{a}` but --revision says `{b}`"
                )));
            }
            (Some(a), _) => a,
            (None, Some(b)) => b.to_owned(),
            (None, None) => "main".to_owned(),
        };
        if revision.is_empty() {
            return Err(HostError::Usage("the revision is empty".to_owned()));
        }
        Ok(RepoSpec {
            repo_type,
            repo_id,
            revision,
            files,
        })
    }
}

/// The body of an `hf://` address, as the `hf` CLI reads it:
/// `[models/|datasets/|spaces/|kernels/]owner/name[@revision][/path]`.
///
/// The `@` separates the revision only right after `owner/name` (an `@` in a file name is
/// literal); `refs/pr/N` and `refs/convert/NAME` are taken whole as revisions, and `%2F` in a
/// revision stands for `/`. A singular type prefix (`dataset/`) is refused with a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfUri {
    /// The type from the prefix, if any.
    pub repo_type: Option<RepoType>,
    /// `owner/name` (or a legacy bare `name` before an `@`).
    pub repo_id: String,
    /// The revision after `@`, if any.
    pub revision: Option<String>,
    /// The path inside the repository (empty: all of it).
    pub path: String,
}

/// The fuzz entry point of repository addresses (`hf://...`, `owner/name`, with types,
/// revisions and paths): `data` as the download argument.
pub fn fuzz_address(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = HfUri::parse(text);
    let _ = RepoSpec::parse(text, &[], None, None);
    let _ = RepoSpec::parse(text, &[], Some("dataset"), Some("main"));
}

impl HfUri {
    /// Parses what follows `hf://`; the error says what is wrong.
    pub fn parse(body: &str) -> Result<HfUri, String> {
        let (repo_type, location) = match body.split_once('/') {
            Some((first, rest)) => match first {
                "models" | "datasets" | "spaces" | "kernels" => (RepoType::parse(first), rest),
                "model" | "dataset" | "space" | "kernel" => {
                    return Err(format!(
                        "the type prefix is plural: `{first}s/`, not `{first}/`"
                    ));
                }
                _ => (None, body),
            },
            None if matches!(body, "models" | "datasets" | "spaces" | "kernels") => {
                return Err(format!("nothing after `{body}/`"));
            }
            None => (None, body),
        };
        let location = location.trim_start_matches('/');
        if location.is_empty() {
            return Err("no repository id".to_owned());
        }
        let at = location
            .find('@')
            .filter(|&i| location[..i].matches('/').count() <= 1);
        let (repo_id, revision, path) = match at {
            None => {
                let mut parts = location.splitn(3, '/');
                let owner = parts.next().unwrap_or_default();
                let repo_id = match parts.next() {
                    Some(name) => format!("{owner}/{name}"),
                    // A legacy repository without an owner (`gpt2`).
                    None => owner.to_owned(),
                };
                (repo_id, None, parts.next().unwrap_or_default())
            }
            Some(i) => {
                let rest = &location[i + 1..];
                let special = ["refs/pr/", "refs/convert/"].iter().find_map(|p| {
                    let tail = rest.strip_prefix(p)?;
                    let end = tail.find('/').unwrap_or(tail.len());
                    let valid = !tail[..end].is_empty()
                        && (p.ends_with("convert/")
                            || tail[..end].bytes().all(|b| b.is_ascii_digit()));
                    valid.then(|| p.len() + end)
                });
                let split = special.unwrap_or_else(|| rest.find('/').unwrap_or(rest.len()));
                let revision = rest[..split].replace("%2F", "/").replace("%2f", "/");
                if revision.is_empty() {
                    return Err("an empty revision after `@`".to_owned());
                }
                let path = rest[split..].trim_start_matches('/');
                (location[..i].to_owned(), Some(revision), path)
            }
        };
        Ok(HfUri {
            repo_type,
            repo_id,
            revision,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn download_flags_parse() {
        let cli = Cli::try_parse_from([
            "hubget",
            "-vv",
            "download",
            "org/name",
            "a.json",
            "--repo-type",
            "dataset",
            "--include",
            "*.json",
            "*.txt",
            "--exclude",
            "x",
            "--use-xet",
            "--no-fallback",
            "--max-workers",
            "3",
            "--json",
            "--config",
            "/c.toml",
        ])
        .unwrap();
        assert_eq!(cli.verbose, 2);
        assert_eq!(cli.config.as_deref(), Some(std::path::Path::new("/c.toml")));
        let Command::Download(d) = cli.command else {
            panic!("not download")
        };
        assert_eq!(d.files, ["a.json"]);
        assert_eq!(d.include, ["*.json", "*.txt"]);
        let o = d.settings.overrides(None);
        assert_eq!(o.backend.as_deref(), Some("xet"));
        assert!(o.no_fallback);
        assert_eq!(o.max_workers, Some(3));
        assert!(Cli::try_parse_from(["hubget", "download", "a/b", "--json", "-q"]).is_err());
        assert!(
            Cli::try_parse_from([
                "hubget",
                "download",
                "a/b",
                "--local-dir",
                "d",
                "--cache-dir",
                "c"
            ])
            .is_err()
        );
        assert!(Cli::try_parse_from(["hubget", "download", "a/b", "--repo-type", "x"]).is_err());
    }

    #[test]
    fn hf_uris() {
        let s = RepoSpec::parse("hf://datasets/org/name@v1.0/data/", &[], None, None).unwrap();
        assert_eq!(s.repo_type, RepoType::DATASET);
        assert_eq!(s.repo_id, "org/name");
        assert_eq!(s.revision, "v1.0");
        assert_eq!(s.files, ["data/"]);
        let s = RepoSpec::parse("hf://org/name@refs%2Fpr%2F1", &[], None, None).unwrap();
        assert_eq!(s.revision, "refs/pr/1");
        assert_eq!(s.repo_type, RepoType::MODEL);
        let s = RepoSpec::parse("org/name", &["f".into()], Some("space"), Some("dev")).unwrap();
        assert_eq!((s.repo_type, s.revision.as_str()), (RepoType::SPACE, "dev"));
        assert!(RepoSpec::parse("hf://datasets/o/n", &[], Some("model"), None).is_err());
        assert!(RepoSpec::parse("hf://o/n@a", &[], None, Some("b")).is_err());
        assert!(RepoSpec::parse("a/b/c", &[], None, None).is_err());
        assert!(RepoSpec::parse("../x", &[], None, None).is_err());
        assert_eq!(
            RepoSpec::parse("gpt2", &[], None, None).unwrap().repo_id,
            "gpt2"
        );
    }

    #[test]
    fn hf_uris_read_as_the_hf_cli_reads_them() {
        let s = RepoSpec::parse("hf://kernels/acme/flash@v2/build/", &[], None, None).unwrap();
        assert_eq!(s.repo_type, RepoType::KERNEL);
        assert_eq!(
            (s.repo_id.as_str(), s.revision.as_str()),
            ("acme/flash", "v2")
        );
        assert_eq!(s.files, ["build/"]);
        let s = RepoSpec::parse("x", &[], Some("kernel"), None).unwrap();
        assert_eq!(s.repo_type, RepoType::KERNEL);
        // refs/pr/N and refs/convert/NAME are whole revisions, the rest is the path.
        let s = RepoSpec::parse("hf://datasets/o/n@refs/pr/3/train.json", &[], None, None).unwrap();
        assert_eq!(
            (s.revision.as_str(), s.files.as_slice()),
            ("refs/pr/3", &["train.json".to_owned()][..])
        );
        let s = RepoSpec::parse(
            "hf://datasets/o/n@refs/convert/parquet/default/",
            &[],
            None,
            None,
        )
        .unwrap();
        assert_eq!(s.revision, "refs/convert/parquet");
        assert_eq!(s.files, ["default/"]);
        // An `@` past owner/name is part of a file name.
        let s = RepoSpec::parse("hf://o/n/dir/file@1.txt", &[], None, None).unwrap();
        assert_eq!(
            (s.revision.as_str(), s.files.as_slice()),
            ("main", &["dir/file@1.txt".to_owned()][..])
        );
        for (bad, why) in [
            ("hf://dataset/o/n", "plural"),
            ("hf://datasets", "nothing after"),
            ("hf://o/n@", "empty revision"),
            ("hf://", "no repository id"),
        ] {
            let e = RepoSpec::parse(bad, &[], None, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
