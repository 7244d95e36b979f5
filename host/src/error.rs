//! The host's top-level error: one enum for everything a command can fail with, each variant
//! with a user-facing message, an optional hint and a documented exit code.
//!
//! Exit codes (also in the README):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error |
//! | 2 | usage: bad arguments, bad config file, bad `[plugins.<name>]` table, unknown backend |
//! | 3 | not found: repository, revision or file |
//! | 4 | authentication failed, or the repository is gated/private |
//! | 5 | integrity failure: a file did not match its size or hash with any backend |
//! | 6 | offline mode and the cache does not hold what was asked |
//! | 7 | disk full: not enough free space for what is left to fetch, or a write failed with ENOSPC |
//! | 8 | `hubget cache verify`: files are bad, missing or extra |
//! | 130 | interrupted (Ctrl-C) |

use std::path::PathBuf;

use hubget_plugin_api::{ErrorKind, PluginError};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: any error not covered by a more specific code.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: usage error (arguments, configuration, unknown backend).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: repository, revision or file not found.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: authentication refused or gated repository.
pub const EXIT_AUTH: u8 = 4;
/// Exit code: a file failed verification with every backend.
pub const EXIT_INTEGRITY: u8 = 5;
/// Exit code: offline mode and the cache misses.
pub const EXIT_OFFLINE_MISS: u8 = 6;
/// Exit code: the disk is full (not enough free space for the download, or a write failed with
/// "no space left on device"); partial files are kept for resume.
pub const EXIT_DISK_FULL: u8 = 7;
/// Exit code: `hubget cache verify` found bad, missing or extra files.
pub const EXIT_VERIFY_FAILED: u8 = 8;
/// Exit code: interrupted by the user.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Everything a hubget command can fail with.
///
/// Messages never contain tokens or signed URL query strings: build them with
/// [`crate::redact`] helpers when they may carry server text.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad command-line usage that clap did not catch.
    #[error("{0}")]
    Usage(String),

    /// `hubget cache verify` found problems.
    #[error("{bad} bad, {missing} missing and {extra} extra file(s) in {what}")]
    VerifyFailed {
        /// The revision or local dir checked.
        what: String,
        /// Files whose content does not match.
        bad: usize,
        /// Files of the revision that are not on disk.
        missing: usize,
        /// Files on disk that the revision does not have.
        extra: usize,
    },

    /// A project file (`hubget.toml`, `hubget.lock`) could not be read, parsed or used.
    #[error("{}: {message}", path.display())]
    Project {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        message: String,
    },

    /// The lock does not hold what the Hub or the target holds (`hubget sync --check`).
    #[error("{what}: {count} difference(s) from the lock")]
    Drift {
        /// The lock file.
        what: String,
        /// How many differences were listed.
        count: usize,
    },

    /// The config file could not be read or parsed.
    #[error("invalid config file {}: {message}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// One line: where and what (`line 3: unknown field `bogus` in [download]`).
        message: String,
    },

    /// A config file named on the command line or in `HUBGET_CONFIG` does not exist.
    #[error("config file {} (from {origin}) cannot be read: {source}", path.display())]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// `--config` or `HUBGET_CONFIG`.
        origin: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },

    /// An environment variable or option has a value hubget cannot use.
    #[error("invalid value for {name}: {message}")]
    InvalidValue {
        /// The option or variable (`--max-workers`, `HF_HUB_OFFLINE`).
        name: String,
        /// What is wrong.
        message: String,
    },

    /// `--backend NAME` (or `[backends] order`) names a backend that is not loaded.
    #[error("unknown backend `{name}`; loaded backends: {}", list_or_none(loaded))]
    UnknownBackend {
        /// The requested name.
        name: String,
        /// The names of the loaded plugins.
        loaded: Vec<String>,
    },

    /// No backend is available for the operation.
    #[error("no usable backend: {0}")]
    NoBackend(String),

    /// A plugin refused its configuration table (`ErrorKind::CONFIG` from `new_backend`).
    #[error("{message}{}", config_file.as_ref().map(|p| format!(" (in {})", p.display())).unwrap_or_default())]
    PluginConfig {
        /// The plugin.
        plugin: String,
        /// The plugin's message; names `[plugins.<name>]` and the key.
        message: String,
        /// The config file holding the table, if any.
        config_file: Option<PathBuf>,
    },

    /// A backend failed an operation.
    #[error("{} failed to {operation}: {error}", backends_named(backend))]
    Backend {
        /// The backend name.
        backend: String,
        /// What the host asked (`resolve`, `fetch`, `start`).
        operation: &'static str,
        /// The plugin's structured error (boxed: it is large).
        error: Box<PluginError>,
    },

    /// Repository, revision or file not found.
    #[error("{0}")]
    NotFound(String),

    /// Authentication refused, or gated/private repository.
    #[error("{message}")]
    Auth {
        /// What was refused, with the causes (hints split off, see [`split_auth_hint`]).
        message: String,
        /// The backends' own hint (`gated repository: accept its terms ...`), if they gave one;
        /// else [`HostError::hint`] gives the generic token hint.
        hint: Option<String>,
    },

    /// A file failed verification with every backend.
    #[error("{0}")]
    Integrity(String),

    /// Offline mode, and the cache does not hold what was asked.
    #[error("offline mode: {what} is not in the cache at {}", cache_dir.display())]
    OfflineMiss {
        /// What was missing (`model org/name at main`, a file path).
        what: String,
        /// The cache directory that was searched.
        cache_dir: PathBuf,
    },

    /// The target filesystem is full: the preflight found less free space than the bytes still
    /// to fetch, or a write (by a backend or the host) failed with ENOSPC. Partial files and
    /// their resume state are kept.
    #[error("{message}")]
    DiskFull {
        /// The cache directory or local dir whose filesystem is full.
        dir: PathBuf,
        /// One line naming `dir` and the numbers or the failed write.
        message: String,
    },

    /// The user interrupted the command.
    #[error("interrupted")]
    Interrupted,

    /// Local I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What the host was doing, naming the path.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },

    /// A feature that is not built yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(String),

    /// Anything else, as one line.
    #[error("{0}")]
    Other(String),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

impl HostError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A backend error for `operation`.
    pub fn backend(backend: &str, operation: &'static str, error: PluginError) -> Self {
        Self::Backend {
            backend: backend.to_owned(),
            operation,
            error: Box::new(error),
        }
    }

    /// The process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_)
            | Self::Config { .. }
            | Self::ConfigRead { .. }
            | Self::InvalidValue { .. }
            | Self::UnknownBackend { .. }
            | Self::PluginConfig { .. } => EXIT_USAGE,
            Self::NotFound(_) => EXIT_NOT_FOUND,
            Self::Auth { .. } => EXIT_AUTH,
            Self::Integrity(_) => EXIT_INTEGRITY,
            Self::OfflineMiss { .. } => EXIT_OFFLINE_MISS,
            Self::Interrupted => EXIT_INTERRUPTED,
            Self::DiskFull { .. } => EXIT_DISK_FULL,
            Self::VerifyFailed { .. } | Self::Drift { .. } => EXIT_VERIFY_FAILED,
            Self::Project { .. } => EXIT_USAGE,
            Self::Backend { error, .. } => exit_code_for_kind(error.kind),
            Self::NoBackend(_) | Self::Io { .. } | Self::NotImplemented(_) | Self::Other(_) => {
                EXIT_ERROR
            }
        }
    }

    /// A suggestion for the user, printed as `hint: ...` under the error.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::VerifyFailed { bad, missing, .. } if bad + missing > 0 => Some(
                "`hubget cache verify --repair` fetches the bad and missing files again".to_owned(),
            ),
            Self::Config { .. } => Some(
                "run `hubget config show` to see the effective configuration; \
                 unknown keys are errors"
                    .to_owned(),
            ),
            Self::UnknownBackend { .. } => Some(
                "run `hubget plugins` to see which plugins loaded and why others did not"
                    .to_owned(),
            ),
            Self::NoBackend(_) => Some(
                "run `hubget plugins` to see the loaded backends; plugins are searched in \
                 `plugin_dirs` of the config file, HUBGET_PLUGIN_DIR and the directory of the \
                 hubget executable"
                    .to_owned(),
            ),
            Self::PluginConfig { plugin, .. } => Some(format!(
                "fix the [plugins.{plugin}] table of the config file; the plugin's documentation \
                 lists its keys"
            )),
            Self::Backend { error, .. } => match error.kind {
                ErrorKind::AUTH => Some(
                    "pass a token with --token or HF_TOKEN, and check that you were granted \
                     access to the repository"
                        .to_owned(),
                ),
                ErrorKind::PANIC => Some(
                    "this is a bug in the plugin; try another backend with --backend, and \
                     report it to the plugin's authors (run with -vv for details)"
                        .to_owned(),
                ),
                ErrorKind::NETWORK | ErrorKind::TIMEOUT => Some(
                    "check the network, the endpoint (--endpoint, HF_ENDPOINT) and the proxy \
                     settings"
                        .to_owned(),
                ),
                _ => None,
            },
            Self::Auth { hint: Some(h), .. } => Some(h.clone()),
            Self::Auth { hint: None, .. } => Some(
                "pass a token with --token or HF_TOKEN, and check that you were granted access \
                 to the repository"
                    .to_owned(),
            ),
            Self::OfflineMiss { .. } => Some(
                "run the same command without --offline / HF_HUB_OFFLINE=1 to download it"
                    .to_owned(),
            ),
            Self::DiskFull { dir, .. } => Some(format!(
                "free space in {}, or download to another filesystem with --cache-dir DIR \
                 (or --local-dir DIR); partial files are kept and the next run resumes them",
                dir.display()
            )),
            _ => None,
        }
    }
}

/// `backend `lfs``, or for a list (`lfs, xet`) `backends `lfs` and `xet``.
fn backends_named(list: &str) -> String {
    let names: Vec<String> = list.split(", ").map(|n| format!("`{n}`")).collect();
    match names.as_slice() {
        [one] => format!("backend {one}"),
        [init @ .., last] => format!("backends {} and {last}", init.join(", ")),
        [] => "no backend".to_owned(),
    }
}

impl HostError {
    /// An auth error with `message` and the backends' hint, if any.
    pub fn auth(message: impl Into<String>, hint: Option<String>) -> Self {
        Self::Auth {
            message: message.into(),
            hint,
        }
    }
}

/// Splits the hint a backend appended to an auth error message (hub-http ends 401/403 messages
/// with ` (private, gated or missing repository? set HF_TOKEN or pass --token)`), so the host
/// prints it once, on the `hint:` line, instead of inside every cause. Only a final
/// parenthesised clause that talks about tokens counts; other messages come back whole.
pub fn split_auth_hint(message: &str) -> (&str, Option<&str>) {
    let Some(body) = message.strip_suffix(')') else {
        return (message, None);
    };
    match body.rfind(" (") {
        Some(at) if body[at + 2..].to_ascii_lowercase().contains("token") => {
            let hint = &body[at + 2..];
            (message[..at].trim_end(), Some(hint))
        }
        _ => (message, None),
    }
}

/// One distinct failure cause and the backends that hit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// The backends, in first-seen order, each once.
    pub backends: Vec<String>,
    /// The kind.
    pub kind: ErrorKind,
    /// The message, without a backend's auth hint.
    pub message: String,
    /// The hint split off the message, if any.
    pub hint: Option<String>,
}

impl Cause {
    /// `lfs, xet: <message>`.
    pub fn line(&self) -> String {
        format!("{}: {}", self.backends.join(", "), self.message)
    }
}

/// Collapses failures with the same kind and the same message (after splitting auth hints) into
/// one [`Cause`] naming every backend that hit it; distinct causes stay, in first-seen order.
pub fn group_causes<'a>(
    failures: impl IntoIterator<Item = (&'a str, ErrorKind, &'a str)>,
) -> Vec<Cause> {
    let mut causes: Vec<Cause> = Vec::new();
    for (backend, kind, message) in failures {
        let (message, hint) = if kind == ErrorKind::AUTH {
            split_auth_hint(message)
        } else {
            (message, None)
        };
        match causes
            .iter_mut()
            .find(|c| c.kind == kind && c.message == message)
        {
            Some(c) => {
                if !c.backends.iter().any(|b| b == backend) {
                    c.backends.push(backend.to_owned());
                }
                if c.hint.is_none() {
                    c.hint = hint.map(str::to_owned);
                }
            }
            None => causes.push(Cause {
                backends: vec![backend.to_owned()],
                kind,
                message: message.to_owned(),
                hint: hint.map(str::to_owned),
            }),
        }
    }
    causes
}

/// The first hint of `causes` (the first failure is usually the most specific), or `None`.
pub fn causes_hint(causes: &[Cause]) -> Option<String> {
    causes.iter().find_map(|c| c.hint.clone())
}

/// The exit code for a plugin error kind (unknown kinds are generic errors).
pub fn exit_code_for_kind(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::NOT_FOUND => EXIT_NOT_FOUND,
        ErrorKind::AUTH => EXIT_AUTH,
        ErrorKind::INTEGRITY => EXIT_INTEGRITY,
        ErrorKind::CANCELLED => EXIT_INTERRUPTED,
        ErrorKind::CONFIG => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backend_or_several_are_named_as_a_person_would() {
        let e = |b: &str| {
            HostError::backend(b, "resolve", PluginError::new(ErrorKind::NETWORK, "down"))
                .to_string()
        };
        assert_eq!(e("lfs"), "backend `lfs` failed to resolve: down (network)");
        assert_eq!(
            e("lfs, xet"),
            "backends `lfs` and `xet` failed to resolve: down (network)"
        );
        assert_eq!(
            e("lfs, xet, mirror"),
            "backends `lfs`, `xet` and `mirror` failed to resolve: down (network)"
        );
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(HostError::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            HostError::UnknownBackend {
                name: "nope".into(),
                loaded: vec!["lfs".into()]
            }
            .exit_code(),
            2
        );
        assert_eq!(HostError::NotFound("x".into()).exit_code(), 3);
        assert_eq!(HostError::auth("x", None).exit_code(), 4);
        assert_eq!(HostError::Integrity("x".into()).exit_code(), 5);
        assert_eq!(
            HostError::OfflineMiss {
                what: "x".into(),
                cache_dir: "/c".into()
            }
            .exit_code(),
            6
        );
        assert_eq!(HostError::Interrupted.exit_code(), 130);
        let full = HostError::DiskFull {
            dir: "/c".into(),
            message: "not enough free space in /c".into(),
        };
        assert_eq!(full.exit_code(), 7);
        assert!(full.hint().unwrap().contains("--cache-dir"));
        let panic = PluginError::new(ErrorKind::PANIC, "boom");
        assert_eq!(HostError::backend("x", "resolve", panic).exit_code(), 1);
        let nf = PluginError::new(ErrorKind::NOT_FOUND, "gone");
        assert_eq!(HostError::backend("x", "resolve", nf).exit_code(), 3);
        assert_eq!(exit_code_for_kind(ErrorKind(999)), 1);
    }

    #[test]
    fn identical_causes_collapse_and_hints_are_split_off() {
        let msg = "GET http://h/api/models/a/b/revision/main: 401 Unauthorized [RepoNotFound]: \
                   Repository not found. (private, gated or missing repository? set HF_TOKEN or \
                   pass --token)";
        let causes = group_causes([
            ("lfs", ErrorKind::AUTH, msg),
            ("xet", ErrorKind::AUTH, msg),
            ("lfs", ErrorKind::AUTH, msg),
            ("mirror", ErrorKind::NETWORK, "cannot connect"),
        ]);
        assert_eq!(causes.len(), 2);
        assert_eq!(
            causes[0].line(),
            "lfs, xet: GET http://h/api/models/a/b/revision/main: 401 Unauthorized \
             [RepoNotFound]: Repository not found."
        );
        assert_eq!(causes[1].line(), "mirror: cannot connect");
        assert_eq!(
            causes_hint(&causes).as_deref(),
            Some("private, gated or missing repository? set HF_TOKEN or pass --token")
        );
        // Only a trailing clause about tokens is a hint.
        assert_eq!(
            split_auth_hint("refused (code 7)"),
            ("refused (code 7)", None)
        );
        let e = HostError::auth("refused", causes_hint(&causes));
        assert!(e.hint().unwrap().starts_with("private, gated"));
        assert!(
            HostError::auth("refused", None)
                .hint()
                .unwrap()
                .contains("--token")
        );
    }

    #[test]
    fn unknown_backend_lists_loaded_ones() {
        let e = HostError::UnknownBackend {
            name: "nope".into(),
            loaded: vec!["lfs".into(), "xet".into()],
        };
        assert_eq!(
            e.to_string(),
            "unknown backend `nope`; loaded backends: lfs, xet"
        );
        assert!(e.hint().unwrap().contains("hubget plugins"));
    }
}
