//! Shared helpers for hubget's end-to-end tests (the testkit).
//!
//! Tests assume `cargo build --workspace` ran first: the `hubget` binary and the plugin
//! libraries sit in `target/debug/`, found relative to the test executable
//! (`target/debug/deps/<test>` → `target/debug`).
//!
//! - [`TestEnv`]: an isolated environment (its own `HOME`, `HF_HOME`, `XDG_CONFIG_HOME`,
//!   `XDG_CACHE_HOME`, plugin directory; every other variable cleared except `PATH`) to run
//!   `hubget` in, with [`TestEnv::hubget`] returning a [`Run`] (exit code, stdout, stderr).
//! - [`built_library`], [`first_party_plugin`], [`test_plugin`]: paths of the built libraries;
//!   [`TestEnv::install_plugin`] copies one into the plugin directory as `libhubget_<name>.so`.
//! - [`hub`]: a hubsim, a [`TestEnv`] and `hubget download` runs against them ([`hub::Dl`],
//!   [`Run`]), shared fixtures, cache-layout checks and the pinned Python client.
//! - [`venv`]: pinned Python tools (the S3 gateway, maturin) in venvs under `target/`.
//! - [`plugins`]: building the third-party example plugins (`examples/*-backend`) and running
//!   their own tests.

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod hub;
pub mod plugins;
pub mod s3;
pub mod venv;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root (the parent of the `tests` package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `target/debug` (or whichever profile directory the test executable was built in).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("target/debug/deps");
    deps.parent().expect("target/debug").to_path_buf()
}

/// The `hubget` binary (refused when it is missing or older than its sources).
pub fn hubget_exe() -> PathBuf {
    let path = bin_dir().join(format!("hubget{}", std::env::consts::EXE_SUFFIX));
    assert_built(&path, &["host", "plugin-api"]);
    path
}

/// Panics with the command to run unless `artifact` exists and is newer than every source file
/// (`.rs`, `Cargo.toml`) under `dirs`, the crates it is built from: an e2e test must never run a
/// binary older than the code it tests (`cargo test -p hubget-tests` rebuilds neither the host
/// nor the plugins). Only the artifact's own crates count: cargo does not relink an artifact
/// when an unrelated crate (or the workspace manifest) changes.
#[track_caller]
pub fn assert_built(artifact: &Path, dirs: &[&str]) {
    let built = std::fs::metadata(artifact)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --workspace` before the tests",
                artifact.display()
            )
        });
    let root = workspace_root();
    let mut sources = Vec::new();
    for d in dirs {
        sources.extend(
            walkdir::WalkDir::new(root.join(d))
                .into_iter()
                .flatten()
                .filter(|e| e.file_type().is_file())
                .filter(|e| {
                    let name = e.file_name().to_string_lossy();
                    name.ends_with(".rs") || name == "Cargo.toml"
                })
                .filter(|e| !e.path().components().any(|c| c.as_os_str() == "target"))
                .map(|e| e.into_path()),
        );
    }
    for src in sources {
        let changed = std::fs::metadata(&src).and_then(|m| m.modified());
        if changed.is_ok_and(|t| t > built) {
            panic!(
                "{} is older than {}: run `cargo build --workspace` before the tests",
                artifact.display(),
                src.display()
            );
        }
    }
}

/// The file name of a library called `stem` on this platform (`lib<stem>.so`).
pub fn library_file_name(stem: &str) -> String {
    format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A library built into `target/debug` (`lib<stem>.so`); panics with a hint if it is missing
/// or older than its sources.
pub fn built_library(stem: &str) -> PathBuf {
    let path = bin_dir().join(library_file_name(stem));
    let own = match stem.strip_prefix("hubget_") {
        Some(plugin) => format!("plugins/{plugin}"),
        None => format!(
            "tests/plugins/{}",
            stem.trim_start_matches("test_plugin_").replace('_', "-")
        ),
    };
    // Its own crate, and the workspace crates its manifest names.
    let manifest =
        std::fs::read_to_string(workspace_root().join(&own).join("Cargo.toml")).unwrap_or_default();
    let mut dirs = vec![own.as_str()];
    for (dep, dir) in [
        ("hubget-plugin-api", "plugin-api"),
        ("hubget-hub-http", "plugins/hub-http"),
    ] {
        if manifest.contains(dep) {
            dirs.push(dir);
        }
    }
    assert_built(&path, &dirs);
    path
}

/// A first-party plugin (`libhubget_<name>.so`).
pub fn first_party_plugin(name: &str) -> PathBuf {
    built_library(&format!("hubget_{name}"))
}

/// A test-only plugin from `tests/plugins/<name>` (`libtest_plugin_<name>.so`; `-` becomes `_`).
pub fn test_plugin(name: &str) -> PathBuf {
    built_library(&format!("test_plugin_{}", name.replace('-', "_")))
}

/// A system shared library that is not a hubget plugin (for loader tests), if one is found.
pub fn system_library() -> Option<PathBuf> {
    [
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/aarch64-linux-gnu/libz.so.1",
        "/usr/lib/libz.so.1",
        "/lib64/libz.so.1",
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib/libz.dylib",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// The result of running `hubget` (or another command of a test).
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// stdout, lossily decoded.
    pub stdout: String,
    /// stderr, lossily decoded.
    pub stderr: String,
    /// Seconds since `started` (see [`Run::from`]; 0 from [`Run::from_output`]).
    pub secs: f64,
}

impl Run {
    /// The result of a finished command.
    pub fn from_output(out: Output) -> Self {
        Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            secs: 0.0,
        }
    }

    /// The result of a finished command started at `started`.
    pub fn from(out: Output, started: std::time::Instant) -> Self {
        Self {
            secs: started.elapsed().as_secs_f64(),
            ..Self::from_output(out)
        }
    }

    /// Panics (showing both streams) unless the exit code is `code`.
    #[track_caller]
    pub fn code_is(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command succeeded.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        self.code_is(0)
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The NDJSON events on stdout (with `--json`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect()
    }

    /// The events of one kind (`"file_done"`, ...).
    pub fn of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// The first event of one kind; panics (showing stdout) when there is none.
    #[track_caller]
    pub fn first(&self, kind: &str) -> serde_json::Value {
        self.of(kind)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no {kind} event:\n{}", self.stdout))
    }

    /// The first `fallback` event; panics (showing stdout) when there is none or it moved the
    /// file away from another backend than `from`.
    pub fn fallback_from(&self, from: &str) -> serde_json::Value {
        let fb = self.first("fallback");
        assert_eq!(fb["from"], from, "{}", self.stdout);
        fb
    }

    /// The last line of stdout.
    pub fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    /// The `error: ...` line of stderr, if any.
    pub fn error_line(&self) -> Option<&str> {
        self.stderr.lines().find(|l| l.starts_with("error: "))
    }
}

/// The rate of a `file_done` event: file bytes over its seconds from start to verified.
pub fn done_rate(file_done: &serde_json::Value) -> f64 {
    file_done["bytes"].as_f64().unwrap() / file_done["secs"].as_f64().unwrap()
}

/// Panics unless `rate` (bytes/s) honours a `--limit-rate` of `cap`: at most 10% over it, and
/// not throttled far below it. The lower bound is loose (half the cap) because the measured
/// time also holds start-up and verification, on a loaded 2-core machine where the suite runs
/// many servers at once; the cap's accuracy (±5% over 30 s) is the benchmark's to measure
/// (bench case 9).
#[track_caller]
pub fn assert_rate_capped(rate: f64, cap: f64) {
    assert!(
        (0.5 * cap..=1.1 * cap).contains(&rate),
        "measured {rate:.0} B/s against a cap of {cap} B/s"
    );
}

/// Panics, showing `text`, unless it contains `needle`.
#[track_caller]
pub fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} not in:\n{text}");
}

/// `hubget download acme/tiny` on the test plugin `faulty` alone.
pub const TINY_ON_FAULTY: &[&str] = &[
    "download",
    "acme/tiny",
    "--backend",
    "faulty",
    "--no-fallback",
];

/// The entry of plugin `name` in the output of `hubget plugins --json`.
#[track_caller]
pub fn plugin_entry<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["plugins"]
        .as_array()
        .expect("plugins array")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin `{name}` in {doc:#}"))
}

/// An isolated environment to run `hubget` in. Everything lives in one temp dir that is removed
/// on drop.
#[derive(Debug)]
pub struct TestEnv {
    dir: tempfile::TempDir,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh environment with an empty plugin directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["home", "hf", "xdg-config", "xdg-cache", "plugins"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create dir");
        }
        Self { dir }
    }

    /// A path inside the environment's temp dir.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `$HOME`.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }

    /// `$HF_HOME`.
    pub fn hf_home(&self) -> PathBuf {
        self.path("hf")
    }

    /// `$XDG_CONFIG_HOME`.
    pub fn xdg_config(&self) -> PathBuf {
        self.path("xdg-config")
    }

    /// The directory in `$HUBGET_PLUGIN_DIR`.
    pub fn plugin_dir(&self) -> PathBuf {
        self.path("plugins")
    }

    /// Copies `library` into the plugin directory as `libhubget_<name>.so`; returns the copy.
    pub fn install_plugin(&self, library: &Path, name: &str) -> PathBuf {
        let target = self
            .plugin_dir()
            .join(library_file_name(&format!("hubget_{name}")));
        std::fs::copy(library, &target)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", library.display(), target.display()));
        target
    }

    /// Writes a plugin-named file with arbitrary bytes into the plugin directory.
    pub fn install_bytes(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let target = self
            .plugin_dir()
            .join(library_file_name(&format!("hubget_{name}")));
        std::fs::write(&target, bytes).expect("write plugin file");
        target
    }

    /// A fresh environment with the test plugin `faulty` installed and `table` as the body of
    /// its `[plugins.faulty]` table in `<env>/config.toml` (see [`Self::hubget_configured`]).
    pub fn with_faulty(table: &str) -> Self {
        let env = Self::new();
        env.install_plugin(&test_plugin("faulty"), "faulty");
        env.write_config(&format!("[plugins.faulty]\n{table}\n"));
        env
    }

    /// Writes `toml` to `<env>/config.toml` (pass it with `--config`); returns the path.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.path("config.toml");
        std::fs::write(&path, toml).expect("write config");
        path
    }

    /// Writes `toml` to the default location, `$XDG_CONFIG_HOME/hubget/config.toml`.
    pub fn write_default_config(&self, toml: &str) -> PathBuf {
        let path = self.xdg_config().join("hubget").join("config.toml");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, toml).expect("write config");
        path
    }

    /// A `hubget` command with a cleared environment: `PATH` kept; `HOME`, `HF_HOME`,
    /// `XDG_CONFIG_HOME`, `XDG_CACHE_HOME` and `HUBGET_PLUGIN_DIR` pointing into this env.
    pub fn command(&self) -> Command {
        self.command_for(&hubget_exe())
    }

    /// [`Self::command`] for another `hubget` executable (an installed one).
    pub fn command_for(&self, exe: &Path) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", self.home())
            .env("HF_HOME", self.hf_home())
            .env("XDG_CONFIG_HOME", self.xdg_config())
            .env("XDG_CACHE_HOME", self.path("xdg-cache"))
            .env("HUBGET_PLUGIN_DIR", self.plugin_dir())
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `hubget <args>` with extra environment variables.
    pub fn hubget_with_env<I, S>(&self, args: I, env: &[(&str, &str)]) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from_output(cmd.output().expect("run hubget"))
    }

    /// Runs `hubget --config <env>/config.toml <args>` (the file [`Self::write_config`] writes)
    /// with extra environment variables.
    pub fn hubget_configured_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let config = self.path("config.toml");
        let mut all = vec![OsStr::new("--config"), config.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        self.hubget_with_env(all, env)
    }

    /// Runs `hubget --config <env>/config.toml <args>`.
    pub fn hubget_configured(&self, args: &[&str]) -> Run {
        self.hubget_configured_env(args, &[])
    }

    /// Runs `hubget <args>`.
    pub fn hubget<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.hubget_with_env(args, &[])
    }
}
