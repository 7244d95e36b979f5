//! A hubsim, a test environment, and `hubget` runs against them: what every end-to-end test
//! of a download goes through ([`Dl`], [`Run`]), the fixtures they share, cache-layout and
//! resume-state checks, and the pinned Python client (`python`, `hf`) for interop checks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hubsim::{FileInfo, FixtureSpec, HubSim, HubSimHandle, Shaping};
use serde_json::Value;

use crate::{Run, TestEnv, bin_dir};

/// The small model repository most tests download.
pub const TINY: &str = "acme/tiny";

/// acme/tiny, acme/private, acme/gated, acme/space, evil/traversal (from the default set) and
/// acme/resume (one 8 MiB LFS file, for resume tests).
pub fn fixtures() -> FixtureSpec {
    let mut spec = FixtureSpec::default_set(1);
    spec.repos.retain(|r| {
        [
            "acme/tiny",
            "acme/private",
            "acme/gated",
            "acme/space",
            "evil/traversal",
        ]
        .contains(&r.id.as_str())
    });
    let resume = one_commit(
        "acme/resume",
        "model",
        "one big LFS file",
        r#"
  { path = "big.bin", storage = "lfs", content = { kind = "random", size = 8388608, seed = 77 } },
  { path = "config.json", content = { kind = "text", text = "{}\n" } },"#,
    );
    spec.repos.extend(resume.repos);
    spec
}

/// A fixture set of one repository of `kind` (`model`, `dataset`, ...) with one commit;
/// `files` is the TOML of its file entries (`{ path = ..., content = ... },` each).
#[track_caller]
pub fn one_commit(id: &str, kind: &str, message: &str, files: &str) -> FixtureSpec {
    let toml = format!(
        "[[repos]]\nid = {id:?}\ntype = {kind:?}\n[[repos.commits]]\nmessage = {message:?}\n\
         files = [{files}\n]\n"
    );
    FixtureSpec::from_toml(&toml).unwrap_or_else(|e| panic!("fixture {id}: {e}\n{toml}"))
}

/// `acme/big` of hubsim's default set: one 8 MiB Xet file, `big.bin`, of random bytes.
pub const BIG_XET: &str = "acme/big";

/// [`BIG_XET`]'s file on xet alone: `acme/big big.bin --backend xet --no-fallback`.
pub const BIG_ON_XET: &[&str] = &["acme/big", "big.bin", "--backend", "xet", "--no-fallback"];

/// [`fixtures`] and [`BIG_XET`].
pub fn fixtures_with_big_xet() -> FixtureSpec {
    let mut spec = fixtures();
    let big = FixtureSpec::default_set(8)
        .repos
        .into_iter()
        .find(|r| r.id == BIG_XET)
        .expect("acme/big in the default set");
    spec.repos.push(big);
    spec
}

/// `acme/resume`'s 8 MiB file on lfs alone: `acme/resume big.bin --backend lfs --no-fallback`.
pub const BIG_LFS: &[&str] = &[
    "acme/resume",
    "big.bin",
    "--backend",
    "lfs",
    "--no-fallback",
];

/// A hubsim, a test environment, and `hubget download` runs against them.
pub struct Dl {
    pub sim: HubSimHandle,
    pub env: TestEnv,
}

impl Default for Dl {
    fn default() -> Self {
        Self::new()
    }
}

impl Dl {
    /// A hubsim with [`fixtures`] and a fresh [`TestEnv`].
    pub fn new() -> Self {
        Self::with(HubSim::builder().fixtures(fixtures()))
    }

    /// A hubsim started from `builder` and a fresh [`TestEnv`].
    pub fn with(builder: hubsim::HubSimBuilder) -> Self {
        Self {
            sim: HubSim::start_blocking(builder).expect("hubsim"),
            env: TestEnv::new(),
        }
    }

    /// A hubsim with [`fixtures`] whose answers together move at most `bytes_per_sec`.
    pub fn shaped(bytes_per_sec: u64) -> Self {
        Self::shaped_with(fixtures(), bytes_per_sec)
    }

    /// A hubsim with `spec` whose answers together move at most `bytes_per_sec`.
    pub fn shaped_with(spec: FixtureSpec, bytes_per_sec: u64) -> Self {
        Self::with(HubSim::builder().fixtures(spec).shape(Shaping {
            rate_total: Some(bytes_per_sec),
            ..Shaping::default()
        }))
    }

    /// `$HF_HOME/hub`.
    pub fn cache(&self) -> PathBuf {
        self.env.hf_home().join("hub")
    }

    /// A repository's folder in the cache (`models--acme--tiny`, `datasets--...`).
    pub fn repo_dir(&self, folder: &str) -> PathBuf {
        self.cache().join(folder)
    }

    /// The commit `main` of `repo` points to.
    pub fn head(&self, repo: &str) -> String {
        self.sim.info().repo(repo).expect("repo").head.clone()
    }

    /// What hubsim serves as `path` of `repo` at its head.
    pub fn file(&self, repo: &str, path: &str) -> FileInfo {
        self.sim.info().file(repo, path)
    }

    /// The cache folder of a model repository.
    pub fn model_dir(&self, repo: &str) -> PathBuf {
        self.repo_dir(&format!("models--{}", repo.replace('/', "--")))
    }

    /// The `blobs/` folder of a model repository in the cache.
    pub fn blobs(&self, repo: &str) -> PathBuf {
        self.model_dir(repo).join("blobs")
    }

    /// `path` in the snapshot of a model repository's head, in the cache.
    pub fn snapshot_file(&self, repo: &str, path: &str) -> PathBuf {
        self.model_dir(repo)
            .join("snapshots")
            .join(self.head(repo))
            .join(path)
    }

    /// Neither a blob of `path` (a Xet or LFS file of `repo`) nor its snapshot link exists; a
    /// partial file with its resume state may stay for the next run.
    #[track_caller]
    pub fn assert_never_landed(&self, repo: &str, path: &str) {
        let f = self.file(repo, path);
        assert!(
            !self.blobs(repo).join(&f.sha256).exists(),
            "a blob of {path}"
        );
        let link = self.snapshot_file(repo, path);
        assert!(!link.exists(), "{} exists", link.display());
    }

    /// [`assert_cache_layout`] of `only` at the head of `repo`.
    #[track_caller]
    pub fn assert_landed(&self, repo: &str, only: &[&str]) {
        assert_cache_layout(self, repo, &self.head(repo), Some(only));
    }

    /// `hubget download <args>` with the plugins of the environment's plugin folder (see
    /// [`TestEnv::install_plugin`]) and the first-party plugins of `target/debug`.
    pub fn command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Command {
        self.hubget_command(&[&["download"], args].concat(), extra_env)
    }

    /// `hubget <args>` (any command) against the hubsim, with the plugins of [`Self::command`].
    pub fn hubget_command(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Command {
        let mut cmd = self.env.command();
        let plugin_dirs = std::env::join_paths([self.env.plugin_dir(), bin_dir()])
            .expect("plugin folders without a path separator");
        cmd.args(args)
            .env("HUBGET_PLUGIN_DIR", plugin_dirs)
            .env("HF_ENDPOINT", self.sim.hub_url());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Runs `hubget download <args>` with extra environment variables.
    pub fn run_env(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let started = Instant::now();
        let out = self.command(args, extra_env).output().expect("run hubget");
        Run::from(out, started)
    }

    /// Runs `hubget <args>` (any command) against the hubsim.
    pub fn hubget(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let started = Instant::now();
        let out = self.hubget_command(args, extra_env).output();
        Run::from(out.expect("run hubget"), started)
    }

    /// Runs `hubget download <args>`.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    /// `hubget download <args> --config <file holding toml>`.
    pub fn run_config(&self, toml: &str, args: &[&str]) -> Run {
        let config = self.env.write_config(toml);
        let config = config.to_str().expect("a UTF-8 temp path");
        self.run(&[args, &["--config", config]].concat())
    }

    /// Starts `hubget download <args>` without waiting (see [`wait`]).
    pub fn spawn(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Child {
        self.command(args, extra_env).spawn().expect("spawn hubget")
    }

    /// Starts `hubget download <args>` and SIGKILLs it as soon as `until` holds (polled for up to
    /// 30 s); panics unless `until` held and the process died of the signal.
    #[track_caller]
    pub fn kill_when(&self, args: &[&str], until: impl FnMut() -> bool) -> Run {
        let started = Instant::now();
        let mut child = self.spawn(args, &[]);
        let reached = poll(Duration::from_secs(30), until);
        child.kill().expect("SIGKILL");
        let killed = wait(child, started);
        assert!(reached, "the condition to kill at never held: {killed:?}");
        assert_eq!(killed.code, None, "killed by a signal: {killed:?}");
        killed
    }

    /// [`Self::kill_when`] the resume state of `f` (in the cache folder of `args[0]`, the repo)
    /// records a checkpoint past a quarter of the file; returns the checkpoint the state kept,
    /// short of the file's end.
    #[track_caller]
    pub fn kill_past_a_quarter(&self, args: &[&str], f: &FileInfo) -> u64 {
        let blobs = self.blobs(args[0]);
        self.kill_when(args, || {
            checkpoint(&blobs, &f.sha256).is_some_and(|c| c >= f.size / 4)
        });
        let cp = checkpoint(&blobs, &f.sha256).expect("state survives the kill");
        assert!(cp < f.size, "killed before the end");
        cp
    }
}

/// Waits for a child with a deadline, returning what it printed.
pub fn wait(child: Child, started: Instant) -> Run {
    Run::from(child.wait_with_output().expect("wait"), started)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The sha256 of a file's content.
pub fn sha256_file(path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    hubget::verify::sha256_hex(&data)
}

/// Every file of `repo` at `commit` sits in `snapshots/<commit>/` as a relative symlink into
/// `blobs/<etag>` with the right content, as huggingface_hub lays it out.
pub fn assert_cache_layout(dl: &Dl, repo: &str, commit: &str, only: Option<&[&str]>) {
    let info = dl.sim.info().repo(repo).unwrap();
    let folder = format!("models--{}", repo.replace('/', "--"));
    let root = dl.repo_dir(&folder);
    let files = &info.commit(commit).unwrap().files;
    let mut expected_blobs = std::collections::BTreeSet::new();
    for f in files {
        if only.is_some_and(|o| !o.contains(&f.path.as_str())) {
            continue;
        }
        let link = root.join("snapshots").join(commit).join(&f.path);
        let target =
            std::fs::read_link(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        let etag = if f.storage == hubsim::Storage::Regular {
            &f.git_oid
        } else {
            &f.sha256
        };
        let depth = f.path.split('/').count() - 1;
        let want = format!("{}blobs/{etag}", "../".repeat(depth + 2));
        assert_eq!(target, Path::new(&want), "{}", f.path);
        assert_eq!(sha256_file(&link), f.sha256, "{}", f.path);
        expected_blobs.insert(etag.clone());
    }
    let blobs: std::collections::BTreeSet<String> = std::fs::read_dir(root.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        blobs, expected_blobs,
        "blobs/ holds exactly one blob per file, nothing partial"
    );
}

/// The resume state hubget keeps beside the partial file of `etag` in `blobs`, if any.
pub fn resume_state(blobs: &Path, etag: &str) -> Option<Value> {
    let text = std::fs::read_to_string(blobs.join(format!("{etag}.hubget-partial.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

/// The checkpoint recorded in the resume state of `etag`, if any.
pub fn checkpoint(blobs: &Path, etag: &str) -> Option<u64> {
    resume_state(blobs, etag)?["checkpoint"].as_u64()
}

/// The `written` ranges recorded in the resume state of `etag` (`[[start, end], ...]`), if any.
pub fn written_ranges(blobs: &Path, etag: &str) -> Vec<(u64, u64)> {
    let state = resume_state(blobs, etag).unwrap_or_default();
    let ranges = state["written"].as_array().cloned().unwrap_or_default();
    ranges
        .iter()
        .filter_map(|r| Some((r[0].as_u64()?, r[1].as_u64()?)))
        .collect()
}

/// The virtualenv with the pinned Python client (hubsim's, shared with its fidelity check).
pub fn venv_python() -> PathBuf {
    hubsim::python::venv_python().expect("the pinned Python client")
}

/// Runs `script` with the venv's python in `dl`'s environment (same HF_HOME), returning stdout
/// parsed as JSON.
pub fn python(dl: &Dl, script: &str, env: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new(venv_python());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dl.env.home())
        .env("HF_HOME", dl.env.hf_home())
        .env("HF_ENDPOINT", dl.sim.hub_url())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .args(["-c", script]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// A repository holding `xet-a.bin` of acme/tiny under another path ([`SHARED_PATH`]).
pub const TWIN: &str = "acme/twin";
/// Where acme/twin holds `xet-a.bin` of acme/tiny (3 MiB + 777 bytes, seed 1002).
pub const SHARED_PATH: &str = "copy/xet-a.bin";
const OWN_PATH: &str = "own.bin";
const OWN_SIZE: u64 = 1024 * 1024 + 5;

/// [`fixtures`] and [`TWIN`].
pub fn twin_fixtures() -> FixtureSpec {
    let mut spec = fixtures();
    let files = format!(
        r#"
  {{ path = "{SHARED_PATH}", storage = "xet", content = {{ kind = "random", size = 3146505, seed = 1002 }} }},
  {{ path = "{OWN_PATH}", storage = "xet", content = {{ kind = "random", size = {OWN_SIZE}, seed = 4242 }} }},
  {{ path = "config.json", content = {{ kind = "text", text = "{{}}\n" }} }},"#
    );
    let message = "a file identical to acme/tiny's xet-a.bin, and one of its own";
    let twin = one_commit(TWIN, "model", message, &files);
    spec.repos.extend(twin.repos);
    spec
}

/// The Xet hash and sha256 of `path` in `repo`.
pub fn hashes(dl: &Dl, repo: &str, path: &str) -> (String, String) {
    let info = dl.sim.info().repo(repo).expect("repo").clone();
    let f = info.file(path).expect("file");
    (f.xet_hash.clone().expect("a Xet file"), f.sha256.clone())
}

/// The shared store's entry for a Xet file (`blobs/<2 hex>/<xet hash>` under the cache).
pub fn store_entry(dl: &Dl, xet_hash: &str) -> PathBuf {
    dl.cache().join("blobs").join(&xet_hash[..2]).join(xet_hash)
}

/// Runs the pinned `hf` CLI in `dl`'s environment (same `HF_HOME`, the hubsim as the Hub).
pub fn hf(dl: &Dl, args: &[&str]) -> std::process::Output {
    let python = hubsim::python::venv_python().expect("the pinned Python client");
    let hf = python.parent().unwrap().join("hf");
    Command::new(hf)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dl.env.home())
        .env("HF_HOME", dl.env.hf_home())
        .env("HF_ENDPOINT", dl.sim.hub_url())
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .args(args)
        .output()
        .expect("run hf")
}

/// [`hf`], panicking (with its output) unless it succeeds; returns stdout and stderr.
#[track_caller]
pub fn hf_ok(dl: &Dl, args: &[&str]) -> String {
    let out = hf(dl, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "hf {args:?} failed:\n{text}");
    text
}
