//! Plugin discovery and loading.
//!
//! Plugins are found by file name (`libhubget_<name>.so`, `libhubget_<name>.dylib`,
//! `hubget_<name>.dll`) in trusted directories only: the config file's `plugin_dirs`, the
//! `HUBGET_PLUGIN_DIR` path list and the directory of the running executable (see
//! [`search_path`]). `dlopen` runs a library's initialisers before any check, so world-writable
//! files and directories are skipped with a warning, and the current directory is never searched.
//!
//! Each file is loaded with `lib_header_from_path(..)?.init_root_module::<PluginModRef>()` (never
//! `RootModule::load_from_file`, which caches one module per type). Every problem becomes a
//! [`LoadFailure`] with a one-line reason (abi_stable's layout errors run to thousands of lines;
//! the full text is kept in `detail` and logged at debug level) and does not stop other plugins.
//! Plugins built with `panic = "abort"` are refused. Duplicates are dropped by canonical path
//! (silently) and then by plugin name (the first wins; later ones become failures).
//!
//! After the checks the host calls the plugin's `init` with a [`HostContext`] whose log callback
//! re-emits the plugin's records through the host's `log` logger under the target
//! `plugin::<name>::<plugin target>`. Libraries are never unloaded.
//!
//! A plugin the [`Policy`] isolates is never opened here: its helper process opens it (with
//! the same checks, [`Registry::load_one`]) and reports its info ([`crate::isolation`]).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::Duration;

use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::std_types::{RStr, RString};
use hubget_plugin_api::{
    API_VERSION, ErrorKind, HostContext, HostSettings, LogFn, PluginError, PluginInfo, PluginModRef,
};

use crate::backend::BackendHandle;
use crate::error::HostError;
use crate::isolation::client::{Helper, Launching};
use crate::isolation::{Mode, Policy};

/// The host's own version, reported to plugins at `init`.
pub const HOST_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Origin label of directories from the config file's `plugin_dirs`.
pub const ORIGIN_CONFIG: &str = "config";
/// Origin label of directories from the `HUBGET_PLUGIN_DIR` environment variable.
pub const ORIGIN_ENV: &str = "HUBGET_PLUGIN_DIR";
/// Origin label of the running executable's directory.
pub const ORIGIN_EXE: &str = "executable dir";
/// Origin label of a plugin a helper process loaded for the host.
pub const ORIGIN_HELPER: &str = "helper";
/// Origin label of `<executable dir>/../lib/hubget`, where installs put plugins next to
/// `bin/hubget` (the Python wheel, the release archive, `make install`-style prefixes).
pub const ORIGIN_LIB: &str = "install lib dir";

/// A directory to search for plugins, and why it is searched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDir {
    /// The directory.
    pub path: PathBuf,
    /// Where it came from: [`ORIGIN_CONFIG`], [`ORIGIN_ENV`], [`ORIGIN_EXE`] or [`ORIGIN_LIB`].
    pub origin: &'static str,
}

/// A file (or directory) that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// The file or directory.
    pub path: PathBuf,
    /// One line for `hubget plugins` and warnings.
    pub reason: String,
    /// The full text (abi_stable's layout report, for instance); logged at debug level.
    pub detail: String,
}

/// A plugin that loaded, passed every check and was initialised.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// What the plugin says about itself.
    pub info: PluginInfo,
    /// The canonical path of the library.
    pub path: PathBuf,
    /// The origin of the directory it was found in.
    pub origin: &'static str,
    /// The interface version the library was built against (from abi_stable's header).
    pub interface_version: String,
    runs: Runs,
}

/// Where a loaded plugin runs.
#[derive(Clone)]
enum Runs {
    /// Opened in this process.
    InProcess(PluginModRef),
    /// Opened by a helper process, which serves it.
    Isolated(std::sync::Arc<Helper>),
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("info", &self.info)
            .field("path", &self.path)
            .field("origin", &self.origin)
            .field("interface_version", &self.interface_version)
            .field("isolated", &self.isolation().is_some())
            .finish()
    }
}

impl LoadedPlugin {
    /// The plugin name (`lfs`, `xet`, ...).
    pub fn name(&self) -> &str {
        self.info.name.as_str()
    }

    /// For an isolated plugin, what its sandbox enforces ("landlock", or why not); `None`
    /// for a plugin in process.
    pub fn isolation(&self) -> Option<&str> {
        match &self.runs {
            Runs::Isolated(helper) => Some(helper.hello().sandbox.as_str()),
            Runs::InProcess(_) => None,
        }
    }

    /// Calls the plugin's `new_backend` directly, without a deadline (the helper process
    /// serving an isolated plugin; its host enforces the deadline).
    pub fn raw_backend(
        &self,
        settings_json: &str,
        config_toml: &str,
    ) -> Result<hubget_plugin_api::BackendBox, PluginError> {
        match &self.runs {
            Runs::InProcess(module) => {
                (module.new_backend())(RStr::from_str(settings_json), RStr::from_str(config_toml))
                    .into_result()
            }
            Runs::Isolated(_) => Err(PluginError::new(
                ErrorKind::UNSUPPORTED,
                "an isolated plugin is started through its helper",
            )),
        }
    }

    /// Creates a backend instance from the host settings and the plugin's `[plugins.<name>]`
    /// table (TOML text, possibly empty).
    ///
    /// A `CONFIG` error from the plugin becomes [`HostError::PluginConfig`] (exit code 2); the
    /// caller may fill in the config file path. Any other error (including a caught panic)
    /// becomes [`HostError::Backend`] with operation `start`.
    pub fn new_backend(
        &self,
        settings: &HostSettings,
        config_toml: &str,
    ) -> Result<BackendHandle, HostError> {
        let json = serde_json::to_string(settings)
            .map_err(|e| HostError::Other(format!("cannot encode host settings: {e}")))?;
        let module = match &self.runs {
            Runs::InProcess(module) => *module,
            Runs::Isolated(helper) => {
                let started = helper
                    .start(&json, config_toml)
                    .map(|caps| BackendHandle::isolated(self.name(), caps, helper.clone()));
                return self.started(started);
            }
        };
        let new_backend = module.new_backend();
        let (name, config) = (self.name().to_owned(), config_toml.to_owned());
        // Starting a backend (and asking its capabilities) has a deadline: a plugin that hangs
        // here is reported and skipped, not waited for.
        let started = within_deadline(move || {
            new_backend(RStr::from_str(&json), RStr::from_str(&config))
                .into_result()
                .map(|backend| BackendHandle::new(name, backend))
        })
        .map_err(|why| {
            HostError::backend(
                self.name(),
                "start",
                hubget_plugin_api::PluginError::new(ErrorKind::TIMEOUT, why),
            )
        })?;
        self.started(started)
    }

    fn started(
        &self,
        started: Result<BackendHandle, PluginError>,
    ) -> Result<BackendHandle, HostError> {
        match started {
            Ok(handle) => Ok(handle),
            Err(error) if error.kind == ErrorKind::CONFIG => Err(HostError::PluginConfig {
                plugin: self.name().to_owned(),
                message: error.message.to_string(),
                config_file: None,
            }),
            Err(error) => Err(HostError::backend(self.name(), "start", error)),
        }
    }
}

/// A plugin file that passed the trust checks, to be loaded.
struct Found {
    /// As found.
    file: PathBuf,
    /// Canonical.
    path: PathBuf,
    origin: &'static str,
    /// From the file name.
    name: String,
}

/// The result of discovery: loaded plugins (in search order) and the files that failed.
#[derive(Debug, Default)]
pub struct Registry {
    plugins: Vec<LoadedPlugin>,
    failures: Vec<LoadFailure>,
}

impl Registry {
    /// Searches `dirs` in order and loads every plugin file found, each in process or in a
    /// helper process as `policy` says. Never fails: problems are recorded in
    /// [`failures`](Self::failures) and logged as warnings.
    pub fn discover(dirs: &[PluginDir], policy: &Policy) -> Registry {
        let mut registry = Registry::default();
        let mut seen_paths = HashSet::new();
        let mut found = Vec::new();
        for dir in dirs {
            registry.scan_dir(dir, &mut seen_paths, &mut found);
        }
        // Isolated plugins' helpers start together (each loads its library while the others
        // do), then every file is taken in search order.
        let launched: Vec<_> = found
            .iter()
            .map(|f| match policy.mode_for(&f.name, &f.path) {
                Mode::InProcess => None,
                Mode::Process => Some(
                    policy
                        .spawn_for(&f.name, &f.path)
                        .ok_or_else(|| {
                            (
                                "cannot isolate it: the hubget executable is unknown".to_owned(),
                                String::new(),
                            )
                        })
                        .and_then(|spawn| Helper::launch(&f.name, &f.path, &spawn)),
                ),
            })
            .collect();
        for (f, launch) in found.into_iter().zip(launched) {
            let loaded = match launch {
                None => registry.load_file(&f.path, f.origin),
                Some(launch) => launch
                    .and_then(Launching::finish)
                    .and_then(|helper| registry.isolated(&f.path, f.origin, helper)),
            };
            match loaded {
                Ok(plugin) => {
                    log::debug!(
                        "loaded plugin `{}` {} from {} ({}{})",
                        plugin.name(),
                        plugin.info.version,
                        plugin.path.display(),
                        plugin.origin,
                        if plugin.isolation().is_some() {
                            ", isolated"
                        } else {
                            ""
                        }
                    );
                    registry.plugins.push(plugin);
                }
                Err((reason, detail)) => registry.fail(&f.file, reason, detail),
            }
        }
        registry
    }

    /// Loads the one library at `path` in this process, with every check (the helper process
    /// of an isolated plugin).
    pub fn load_one(path: &Path) -> Result<LoadedPlugin, LoadFailure> {
        Registry::default()
            .load_file(path, ORIGIN_HELPER)
            .map_err(|(reason, detail)| LoadFailure {
                path: path.to_owned(),
                reason,
                detail,
            })
    }

    /// The loaded plugins, in discovery order.
    pub fn plugins(&self) -> &[LoadedPlugin] {
        &self.plugins
    }

    /// Files and directories that were skipped or failed to load.
    pub fn failures(&self) -> &[LoadFailure] {
        &self.failures
    }

    /// The loaded plugin called `name`.
    pub fn get(&self, name: &str) -> Option<&LoadedPlugin> {
        self.plugins.iter().find(|p| p.name() == name)
    }

    /// The names of the loaded plugins, in discovery order.
    pub fn names(&self) -> Vec<String> {
        self.plugins.iter().map(|p| p.name().to_owned()).collect()
    }

    fn fail(&mut self, path: &Path, reason: String, detail: String) {
        log::warn!("skipping plugin {}: {reason}", path.display());
        if !detail.is_empty() && detail != reason {
            log::debug!("full error for {}:\n{detail}", path.display());
        }
        self.failures.push(LoadFailure {
            path: path.to_owned(),
            reason,
            detail,
        });
    }

    /// Lists the plugin files of `dir` that pass the trust checks into `found` (failures are
    /// recorded).
    fn scan_dir(
        &mut self,
        dir: &PluginDir,
        seen_paths: &mut HashSet<PathBuf>,
        found: &mut Vec<Found>,
    ) {
        let meta = match std::fs::metadata(&dir.path) {
            Ok(meta) if meta.is_dir() => meta,
            Ok(_) => {
                log::warn!(
                    "plugin directory {} (from {}) is not a directory; skipped",
                    dir.path.display(),
                    dir.origin
                );
                return;
            }
            Err(e) => {
                // A directory the user named (config, HUBGET_PLUGIN_DIR) that cannot be read is
                // worth a warning, but not an error: it may list optional places.
                if dir.origin == ORIGIN_EXE || dir.origin == ORIGIN_LIB {
                    log::debug!(
                        "plugin directory {} ({}) not searched: {e}",
                        dir.path.display(),
                        dir.origin
                    );
                } else {
                    log::warn!(
                        "plugin directory {} (from {}) not searched: {e}",
                        dir.path.display(),
                        dir.origin
                    );
                }
                return;
            }
        };
        if let Some(why) = untrusted(&meta) {
            let reason = format!(
                "plugin directory (from {}) is {why}; someone else could plant a library \
                 there, so it is skipped",
                dir.origin
            );
            self.fail(&dir.path, reason, String::new());
            return;
        }
        let entries = match std::fs::read_dir(&dir.path) {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!(
                    "cannot read plugin directory {} (from {}): {e}",
                    dir.path.display(),
                    dir.origin
                );
                return;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(OsStr::to_str)
                    .is_some_and(|n| plugin_name_from_file(n).is_some())
            })
            .collect();
        files.sort();
        for file in files {
            let canonical = match std::fs::canonicalize(&file) {
                Ok(c) => c,
                Err(e) => {
                    self.fail(
                        &file,
                        format!("cannot resolve the path: {e}"),
                        String::new(),
                    );
                    continue;
                }
            };
            if !seen_paths.insert(canonical.clone()) {
                log::debug!(
                    "plugin {} already seen as {}",
                    file.display(),
                    canonical.display()
                );
                continue;
            }
            // A symlinked plugin: the directory it really lives in must be trusted too.
            let real_dir = canonical.parent().map(std::fs::metadata);
            if let Some(Ok(dir_meta)) = real_dir
                && let Some(why) = untrusted(&dir_meta)
            {
                self.fail(
                    &file,
                    format!("the directory the file really lives in is {why}, so it is skipped"),
                    String::new(),
                );
                continue;
            }
            match std::fs::metadata(&canonical) {
                Ok(meta) if !meta.is_file() => continue,
                Ok(meta) if untrusted(&meta).is_some() => {
                    let why = untrusted(&meta).unwrap_or_default();
                    self.fail(
                        &file,
                        format!(
                            "the file is {why}; someone else could replace it, so it is skipped"
                        ),
                        String::new(),
                    );
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    self.fail(&file, format!("cannot read: {e}"), String::new());
                    continue;
                }
            }
            let name = file
                .file_name()
                .and_then(OsStr::to_str)
                .and_then(plugin_name_from_file)
                .unwrap_or_default()
                .to_owned();
            found.push(Found {
                file,
                path: canonical,
                origin: dir.origin,
                name,
            });
        }
    }

    /// The plugin a helper loaded from `path`, unless its name is taken.
    fn isolated(
        &self,
        path: &Path,
        origin: &'static str,
        helper: std::sync::Arc<Helper>,
    ) -> Result<LoadedPlugin, (String, String)> {
        let hello = helper.hello().clone();
        let name = hello.info.name.to_string();
        if let Some(first) = self.get(&name) {
            return Err((
                format!(
                    "duplicate of {} (plugin `{name}` is already loaded from there)",
                    first.path.display()
                ),
                String::new(),
            ));
        }
        Ok(LoadedPlugin {
            info: hello.info,
            path: path.to_owned(),
            origin,
            interface_version: hello.interface_version,
            runs: Runs::Isolated(helper),
        })
    }

    /// Loads and checks one library; `Err((reason, detail))` on failure.
    fn load_file(
        &self,
        path: &Path,
        origin: &'static str,
    ) -> Result<LoadedPlugin, (String, String)> {
        let header = lib_header_from_path(path).map_err(|e| summarize_error(&e, None))?;
        let interface_version = header.version_strings().version.to_string();
        let module = header
            .init_root_module::<PluginModRef>()
            .map_err(|e| summarize_error(&e, Some(&interface_version)))?;
        let info =
            within_deadline(move || (module.info())()).map_err(|why| (why, String::new()))?;
        let name = info.name.to_string();
        if !valid_plugin_name(&name) {
            return Err((
                format!("invalid plugin name `{name}` (expected lowercase [a-z0-9_-])"),
                String::new(),
            ));
        }
        if !info.panic_unwind {
            return Err((
                format!(
                    "plugin `{name}` was built with panic = \"abort\": a panic would kill \
                     hubget; rebuild with panic = \"unwind\""
                ),
                String::new(),
            ));
        }
        if let Some(first) = self.get(&name) {
            return Err((
                format!(
                    "duplicate of {} (plugin `{name}` is already loaded from there)",
                    first.path.display()
                ),
                String::new(),
            ));
        }
        let context = HostContext {
            host_version: RString::from(HOST_VERSION),
            features_json: RString::from("{}"),
            max_log_level: log::max_level() as usize as u8,
            log: log_fn_for(&name),
        };
        let init = module.init();
        let initialised = within_deadline(move || init(context).into_result())
            .map_err(|why| (format!("plugin `{name}`: init {why}"), String::new()))?;
        if let Err(e) = initialised {
            return Err((
                format!(
                    "plugin `{name}` failed to initialise: {}",
                    one_line(&e.message)
                ),
                e.to_string(),
            ));
        }
        Ok(LoadedPlugin {
            info,
            path: path.to_owned(),
            origin,
            interface_version,
            runs: Runs::InProcess(module),
        })
    }
}

/// The directories to search, in order: `config_dirs` (from the config file), then the entries
/// of `env_dirs` (the value of `HUBGET_PLUGIN_DIR`, a path list), then the directory of the
/// running executable.
pub fn search_path(config_dirs: &[PathBuf], env_dirs: Option<&OsStr>) -> Vec<PluginDir> {
    let mut dirs: Vec<PluginDir> = config_dirs
        .iter()
        .map(|p| PluginDir {
            path: p.clone(),
            origin: ORIGIN_CONFIG,
        })
        .collect();
    if let Some(value) = env_dirs {
        dirs.extend(
            std::env::split_paths(value)
                .filter(|p| !p.as_os_str().is_empty())
                .filter(|p| {
                    // A relative entry would depend on the working directory: where anyone
                    // may have put a library.
                    let absolute = p.is_absolute();
                    if !absolute {
                        log::warn!(
                            "HUBGET_PLUGIN_DIR entry {} is relative; it is ignored (use an \
                             absolute path)",
                            p.display()
                        );
                    }
                    absolute
                })
                .map(|path| PluginDir {
                    path,
                    origin: ORIGIN_ENV,
                }),
        );
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        // `<prefix>/bin/hubget` finds `<prefix>/lib/hubget/` (the wheel's data files land there).
        let lib = dir.parent().map(|prefix| prefix.join("lib").join("hubget"));
        dirs.push(PluginDir {
            path: dir,
            origin: ORIGIN_EXE,
        });
        if let Some(lib) = lib {
            dirs.push(PluginDir {
                path: lib,
                origin: ORIGIN_LIB,
            });
        }
    }
    dirs
}

/// The plugin name in a plugin file name (`libhubget_lfs.so` → `lfs`), or `None` if the file is
/// not named like a plugin on this platform.
pub fn plugin_name_from_file(file_name: &str) -> Option<&str> {
    let prefix = format!("{}hubget_", std::env::consts::DLL_PREFIX);
    let name = file_name
        .strip_prefix(&prefix)?
        .strip_suffix(std::env::consts::DLL_SUFFIX)?;
    (!name.is_empty()).then_some(name)
}

/// The file name a plugin called `name` has on this platform (`libhubget_<name>.so`).
pub fn plugin_file_name(name: &str) -> String {
    format!(
        "{}hubget_{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// How long a plugin may take to answer `info`, `init`, `new_backend` and `capabilities`
/// (`HUBGET_PLUGIN_LOAD_TIMEOUT_SECS` overrides it, for tests).
pub fn load_deadline() -> Duration {
    std::env::var("HUBGET_PLUGIN_LOAD_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(15), Duration::from_secs)
}

/// Runs `f` on a thread of its own and waits at most [`load_deadline`]; a call that does not
/// return is abandoned (its thread left behind) and reported.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let deadline = load_deadline();
    std::thread::Builder::new()
        .name("hubget-plugin-load".to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    rx.recv_timeout(deadline).map_err(|_| {
        format!(
            "did not answer within {} s (a plugin that hangs while loading); skipped",
            deadline.as_secs()
        )
    })
}

fn valid_plugin_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Why a plugin file or directory cannot be trusted, if it cannot: owned by someone other than
/// root or the current user, or writable by its group or by everyone.
#[cfg(unix)]
fn untrusted(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Some("world-writable");
    }
    if mode & 0o020 != 0 {
        return Some("group-writable");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Some("owned by another user");
    }
    None
}

#[cfg(not(unix))]
fn untrusted(_meta: &std::fs::Metadata) -> Option<&'static str> {
    None
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The `major.minor` the host speaks.
fn host_interface() -> String {
    API_VERSION.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// Turns an abi_stable loading error into `(one-line reason, full text)`.
fn summarize_error(error: &LibraryError, built_against: Option<&str>) -> (String, String) {
    let detail = error.to_string().trim().to_owned();
    let versions = || match built_against {
        Some(v) => format!(
            "built against plugin-api {v}, host speaks {}",
            host_interface()
        ),
        None => format!("host speaks plugin-api {}", host_interface()),
    };
    let reason = match error {
        LibraryError::OpenError { err, path } => {
            let text = err.to_string();
            let shown = path.to_string_lossy();
            let text = text
                .strip_prefix(shown.as_ref())
                .map_or(text.as_str(), |t| t.trim_start_matches(':'));
            format!("cannot load the library: {}", one_line(text))
        }
        LibraryError::GetSymbolError { .. } => {
            "not a hubget plugin: the library does not export abi_stable's root module".to_owned()
        }
        LibraryError::InvalidAbiHeader(found) => format!(
            "built with an incompatible abi_stable (ABI {}.{}); hubget uses abi_stable 0.11",
            found.abi_major, found.abi_minor
        ),
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => format!(
            "incompatible interface version: built against plugin-api {actual_version}, host \
             speaks {}",
            host_interface()
        ),
        LibraryError::AbiInstability(_) => {
            format!(
                "interface layout differs ({}): {}",
                versions(),
                layout_summary(&detail)
            )
        }
        LibraryError::RootModule { err, .. } => {
            format!(
                "the plugin's root module failed to load: {}",
                one_line(&err.to_string())
            )
        }
        LibraryError::ParseVersionError(e) => {
            format!(
                "invalid interface version string: {}",
                one_line(&e.to_string())
            )
        }
        LibraryError::InvalidCAbi { .. } => {
            "the library's C ABI differs from the host's (different compiler or target)".to_owned()
        }
        LibraryError::Many(list) => match list.first() {
            Some(first) => summarize_error(first, built_against).0,
            None => "unknown loading error".to_owned(),
        },
    };
    (reason, detail)
}

/// The first `Error:` line of an abi_stable layout report with the `Expected`/`Found` values
/// that follow it, as one line.
fn layout_summary(report: &str) -> String {
    let lines: Vec<&str> = report.lines().map(str::trim).collect();
    let Some(start) = lines.iter().position(|l| l.starts_with("Error:")) else {
        return lines
            .iter()
            .find(|l| !l.is_empty())
            .map_or_else(|| "layout mismatch".to_owned(), |l| one_line(l));
    };
    let mut parts = vec![one_line(lines[start].trim_start_matches("Error:").trim())];
    for label in ["Expected", "Found"] {
        if let Some(i) = lines[start + 1..]
            .iter()
            .take(12)
            .position(|l| l.starts_with(label))
        {
            let at = start + 1 + i;
            let inline = lines[at]
                .trim_start_matches(label)
                .trim_start_matches(':')
                .trim();
            let value = if inline.is_empty() {
                lines.get(at + 1).copied().unwrap_or("").trim()
            } else {
                inline
            };
            if !value.is_empty() {
                let value: String = one_line(value).chars().take(80).collect();
                parts.push(format!("{} {value}", label.to_lowercase()));
            }
        }
    }
    parts.join(", ")
}

// ---- the log bridge ----
//
// `HostContext::log` is a plain function pointer without a context argument, so the host gives
// each plugin its own monomorphised function (one per slot) to know whose record it is.

const LOG_SLOTS: usize = 32;
static SLOT_NAMES: [OnceLock<String>; LOG_SLOTS] = [const { OnceLock::new() }; LOG_SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

/// Registers secrets (the Hub token) that are masked in every log record (see
/// [`crate::redact::register_secret`]).
pub fn set_log_secrets(secrets: Vec<String>) {
    for secret in &secrets {
        crate::redact::register_secret(secret);
    }
}

extern "C" fn plugin_log<const SLOT: usize>(level: u8, target: RStr<'_>, message: RStr<'_>) {
    let name = SLOT_NAMES[SLOT].get().map_or("unknown", String::as_str);
    emit(name, level, target.as_str(), message.as_str());
}

extern "C" fn plugin_log_unknown(level: u8, target: RStr<'_>, message: RStr<'_>) {
    emit("unknown", level, target.as_str(), message.as_str());
}

macro_rules! slot_fns {
    ($($n:literal)*) => { [$(plugin_log::<$n> as LogFn),*] };
}

static LOG_FNS: [LogFn; LOG_SLOTS] = slot_fns!(
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
);

fn log_fn_for(plugin: &str) -> LogFn {
    // Reuse the slot of a name seen before (a plugin's init may run more than once).
    for (i, slot) in SLOT_NAMES.iter().enumerate() {
        if slot.get().is_some_and(|n| n == plugin) {
            return LOG_FNS[i];
        }
    }
    let slot = NEXT_SLOT.fetch_add(1, Ordering::SeqCst);
    if slot < LOG_SLOTS && SLOT_NAMES[slot].set(plugin.to_owned()).is_ok() {
        LOG_FNS[slot]
    } else {
        plugin_log_unknown
    }
}

/// Re-emits a plugin record through the host logger. Must never panic: it is called from
/// plugin code across the FFI boundary.
fn emit(plugin: &str, level: u8, target: &str, message: &str) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(level) = crate::isolation::protocol::log_level(level) else {
            return;
        };
        if level > log::max_level() {
            return;
        }
        let target = format!("plugin::{plugin}::{target}");
        let text = crate::redact::redact_registered(message);
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(&target)
                .args(format_args!("{text}"))
                .build(),
        );
    }));
}

/// Wraps a plugin error with the plugin name for messages.
pub fn describe(plugin: &str, error: &PluginError) -> String {
    format!("{plugin}: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_file_names() {
        let file = plugin_file_name("lfs");
        assert_eq!(plugin_name_from_file(&file), Some("lfs"));
        assert_eq!(plugin_name_from_file(&plugin_file_name("")), None);
        assert_eq!(plugin_name_from_file("libtest_plugin_faulty.so"), None);
        assert_eq!(plugin_name_from_file("libhubget_lfs.so.1"), None);
        assert!(valid_plugin_name("hub-http_2"));
        assert!(!valid_plugin_name("Lfs"));
    }

    #[test]
    fn layout_reports_become_one_line() {
        let report = "\nAn error ocurred\n   Error:too many fields\n   Expected:\n      4\n   \
                      Found:\n      3\n... 700 more lines\nError:other\n";
        assert_eq!(
            layout_summary(report),
            "too many fields, expected 4, found 3"
        );
        assert_eq!(layout_summary("\n\nsomething odd\n"), "something odd");
    }

    #[test]
    fn search_path_order() {
        let dirs = search_path(&[PathBuf::from("/cfg")], Some(OsStr::new("/env1:/env2")));
        let origins: Vec<_> = dirs.iter().map(|d| d.origin).collect();
        assert_eq!(
            origins,
            [
                ORIGIN_CONFIG,
                ORIGIN_ENV,
                ORIGIN_ENV,
                ORIGIN_EXE,
                ORIGIN_LIB
            ]
        );
        assert_eq!(dirs[2].path, PathBuf::from("/env2"));
        assert!(dirs[4].path.ends_with("lib/hubget"), "{:?}", dirs[4].path);
        assert_eq!(
            dirs[4].path.parent().unwrap().parent(),
            dirs[3].path.parent()
        );
    }

    #[test]
    fn log_slots_are_stable_per_name() {
        let a = log_fn_for("slot-test-a") as usize;
        let b = log_fn_for("slot-test-b") as usize;
        assert_ne!(a, b);
        assert_eq!(a, log_fn_for("slot-test-a") as usize);
    }
}
