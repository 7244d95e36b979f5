//! Isolated plugins: a plugin served by a helper process (hubget itself, hidden subcommand
//! [`protocol::SUBCOMMAND`]) that loads the same cdylib through the same v1 ABI, so that a
//! crash, an abort, a stack overflow or a runaway allocation costs only that plugin's in-flight
//! files, and a sandbox can take away what a download does not need.
//!
//! Design decisions:
//! - **Same plugin, no change.** The helper runs the loader's checks and the plugin's own
//!   `new_backend`, `resolve`, `fetch` and `call`; any 1.x plugin binary works in both modes.
//! - **No file bytes on the pipe.** The plugin writes the partial files the host named, as in
//!   process; only requests, answers, progress events and log records cross ([`protocol`]).
//! - **The host never opens an isolated library.** Discovery starts the helper, which answers
//!   with the plugin's info; the helper then serves that plugin for the whole run.
//! - **A dead helper is a failed call, never a hang.** When its pipe closes, every call in
//!   flight fails with the cause (`plugin `x` crashed: SIGSEGV`), the backend stays failed for
//!   the run, and the engine sends the files to the next backend. A call the engine abandons
//!   (cancelled and not returning) gets the helper killed.
//! - **Sandboxed from its first instruction** ([`sandbox`]), where the kernel allows.
//! - **Policy** (`[plugins.NAME] isolation`): plugins whose file lives outside the install's
//!   own plugin directories (third-party) are isolated by default; first-party ones run in
//!   process unless configured otherwise.

pub mod client;
pub mod protocol;
pub mod sandbox;
pub mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::SandboxPolicy;

/// Where a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In a helper process (`isolation = "process"`).
    Process,
    /// In hubget's own process (`isolation = "none"`).
    InProcess,
}

impl Mode {
    /// `"process"` or `"none"`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "process" => Some(Self::Process),
            "none" => Some(Self::InProcess),
            _ => None,
        }
    }

    /// The config value naming this mode.
    pub fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::InProcess => "none",
        }
    }
}

/// The host's keys of one `[plugins.NAME]` table (taken out before the plugin sees it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginPolicy {
    /// `isolation = "process" | "none"`.
    pub mode: Option<Mode>,
    /// `sandbox = false` turns the sandbox off for this isolated plugin.
    pub sandbox: Option<bool>,
    /// `allow_read = ["~/.aws"]`: more paths under the home the sandbox lets it read.
    pub allow_read: Vec<PathBuf>,
    /// `memory_limit_mib = N`: the helper's address-space limit.
    pub memory_limit_mib: Option<u64>,
}

/// The host's keys in `[plugins.NAME]` tables.
pub const HOST_KEYS: [&str; 4] = ["isolation", "sandbox", "allow_read", "memory_limit_mib"];

/// Which plugins run isolated, and how.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `HUBGET_PLUGIN_ISOLATION`: the mode of every plugin without its own setting.
    pub default: Option<Mode>,
    /// Per-plugin settings.
    pub plugins: BTreeMap<String, PluginPolicy>,
    /// The install's own plugin directories: plugins whose file lives there are first-party
    /// and run in process unless configured otherwise; any other is isolated.
    pub install_dirs: Vec<PathBuf>,
    /// The sandbox every isolated plugin gets (before its own `allow_read`).
    pub sandbox: SandboxPolicy,
    /// The address-space limit for helpers without their own, in MiB.
    pub memory_limit_mib: u64,
    /// The hubget executable that serves as the helper.
    pub exe: Option<PathBuf>,
    /// How long a helper may take to load and start its plugin.
    pub deadline: Duration,
}

impl Default for Policy {
    /// Everything in process (what library users and unit tests get without settings).
    fn default() -> Self {
        Self {
            default: Some(Mode::InProcess),
            plugins: BTreeMap::new(),
            install_dirs: Vec::new(),
            sandbox: SandboxPolicy::default(),
            memory_limit_mib: 0,
            exe: None,
            deadline: Duration::from_secs(15),
        }
    }
}

impl Policy {
    /// The mode of plugin `name` whose library is at `path` (canonical).
    pub fn mode_for(&self, name: &str, path: &Path) -> Mode {
        if let Some(mode) = self.plugins.get(name).and_then(|p| p.mode) {
            return mode;
        }
        if let Some(mode) = self.default {
            return mode;
        }
        let first_party = path.parent().is_some_and(|dir| {
            self.install_dirs
                .iter()
                .filter_map(|d| std::fs::canonicalize(d).ok())
                .any(|d| d == dir)
        });
        if first_party {
            Mode::InProcess
        } else {
            Mode::Process
        }
    }

    /// How to start the helper of plugin `name` at `path`; `None` without an executable.
    pub fn spawn_for(&self, name: &str, path: &Path) -> Option<client::Spawn> {
        let own = self.plugins.get(name).cloned().unwrap_or_default();
        let mut sandbox = self.sandbox.clone();
        sandbox.enabled = own.sandbox.unwrap_or(sandbox.enabled);
        sandbox.read_in_home.extend(own.allow_read);
        sandbox
            .read_in_home
            .extend(path.parent().map(Path::to_path_buf));
        Some(client::Spawn {
            exe: self.exe.clone()?,
            sandbox,
            memory_limit_mib: own.memory_limit_mib.unwrap_or(self.memory_limit_mib),
            deadline: self.deadline,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn third_party_plugins_are_isolated_unless_configured() {
        let install = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let install_dir = std::fs::canonicalize(install.path()).unwrap();
        let mut policy = Policy {
            default: None,
            install_dirs: vec![install.path().to_owned()],
            ..Policy::default()
        };
        let ours = install_dir.join("libhubget_lfs.so");
        let theirs = std::fs::canonicalize(elsewhere.path())
            .unwrap()
            .join("libhubget_acme.so");
        assert_eq!(policy.mode_for("lfs", &ours), Mode::InProcess);
        assert_eq!(policy.mode_for("acme", &theirs), Mode::Process);
        policy.plugins.insert(
            "lfs".into(),
            PluginPolicy {
                mode: Some(Mode::Process),
                ..PluginPolicy::default()
            },
        );
        policy.plugins.insert(
            "acme".into(),
            PluginPolicy {
                mode: Some(Mode::InProcess),
                ..PluginPolicy::default()
            },
        );
        assert_eq!(policy.mode_for("lfs", &ours), Mode::Process);
        assert_eq!(policy.mode_for("acme", &theirs), Mode::InProcess);
        policy.plugins.clear();
        policy.default = Some(Mode::Process);
        assert_eq!(policy.mode_for("lfs", &ours), Mode::Process);
    }
}
