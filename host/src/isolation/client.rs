//! The host's side of an isolated plugin: [`Helper`] starts the helper process, reads its
//! answers on a thread of its own, and turns each call into a message and a wait. When the
//! helper's pipe closes, every call in flight fails with the cause and the helper stays dead
//! for the run (see the design notes in [`super`]).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, FetchBatch, FileOutcome, Manifest, PluginError,
    PluginInfo, Progress, ResolveRequest,
};
use tokio::sync::oneshot;

use super::protocol::{self, FromHelper, SandboxPolicy, ToHelper};

/// How to start a helper.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// The hubget executable (the helper is a hidden subcommand of it).
    pub exe: PathBuf,
    /// The sandbox.
    pub sandbox: SandboxPolicy,
    /// The address-space limit in MiB (0: none).
    pub memory_limit_mib: u64,
    /// How long loading and starting may take before the helper is killed.
    pub deadline: Duration,
}

/// What a started helper reported.
#[derive(Debug, Clone)]
pub struct Hello {
    /// The plugin's info.
    pub info: PluginInfo,
    /// The interface version the library was built against.
    pub interface_version: String,
    /// What the sandbox enforces.
    pub sandbox: String,
}

/// A call waiting for its answer.
enum Pending {
    Start(std::sync::mpsc::Sender<Result<Capabilities, PluginError>>),
    Resolve(oneshot::Sender<Result<Manifest, PluginError>>),
    Fetch {
        progress: Progress,
        done: oneshot::Sender<Vec<FileOutcome>>,
    },
    Call(oneshot::Sender<Result<String, PluginError>>),
}

impl Pending {
    fn fail(self, error: PluginError) {
        match self {
            Self::Start(tx) => drop(tx.send(Err(error))),
            Self::Resolve(tx) => drop(tx.send(Err(error))),
            Self::Call(tx) => drop(tx.send(Err(error))),
            // No outcomes: the caller fills every item with the error.
            Self::Fetch { done, .. } => drop(done.send(Vec::new())),
        }
    }
}

/// The id of the `NewBackend` exchange (calls count from 1).
const START_ID: u64 = 0;

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Why the helper is gone, once it is.
    dead: Option<PluginError>,
    /// Why the host killed it, if it did (said instead of "SIGKILL").
    kill_reason: Option<String>,
}

/// A running helper serving one plugin. Dropping the last handle kills it.
pub struct Helper {
    name: String,
    /// The plugin's temp dir: removed once the helper is gone (crashed, killed or dropped).
    temp: Mutex<Option<tempfile::TempDir>>,
    child: Mutex<Child>,
    stdin: Mutex<ChildStdin>,
    state: Mutex<State>,
    /// The helper's last lines on stderr (a panic message, "has overflowed its stack").
    last_words: Arc<Mutex<VecDeque<String>>>,
    next_id: AtomicU64,
    deadline: Duration,
    hello: Hello,
}

impl std::fmt::Debug for Helper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper")
            .field("name", &self.name)
            .field("sandbox", &self.hello.sandbox)
            .finish()
    }
}

impl Helper {
    /// Starts a helper for the plugin file `path` (named `name` by its file name) without
    /// waiting for it: several load their plugins at once, and [`Launching::finish`] collects
    /// each. `Err((reason, detail))` as the loader reports failures.
    pub fn launch(name: &str, path: &Path, spawn: &Spawn) -> Result<Launching, (String, String)> {
        // The sandbox allows writing below directories that exist when it is entered.
        for dir in &spawn.sandbox.write {
            let _ = std::fs::create_dir_all(dir);
        }
        // The plugin's temp dir: made here and removed with the helper, however it ends.
        let temp = tempfile::Builder::new()
            .prefix("hubget-plugin-")
            .tempdir()
            .map_err(|e| (format!("cannot make a temp dir: {e}"), String::new()))?;
        let mut command = Command::new(&spawn.exe);
        // Its own process group: a Ctrl-C at the terminal reaches hubget, which cancels the
        // helper's calls itself (partial files are then kept as in process).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .arg(protocol::SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                (
                    format!(
                        "cannot start the helper process ({}): {e}",
                        spawn.exe.display()
                    ),
                    String::new(),
                )
            })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            return Err(("the helper has no pipes".to_owned(), String::new()));
        };
        let last_words: Arc<Mutex<VecDeque<String>>> = Arc::default();
        spawn_stderr_reader(name, stderr, Arc::clone(&last_words));
        let open = ToHelper::Open {
            protocol: protocol::VERSION,
            path: path.to_owned(),
            max_log_level: log::max_level() as usize as u8,
            memory_limit_mib: spawn.memory_limit_mib,
            sandbox: spawn.sandbox.clone(),
            temp_dir: temp.path().to_owned(),
        };
        if let Err(e) = protocol::write(&mut stdin, &open) {
            let _ = child.kill();
            let _ = child.wait();
            return Err((format!("the helper did not start: {e}"), String::new()));
        }
        // The first answer, within the deadline.
        let mut stdout = BufReader::new(stdout);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("hubget-{name}-hello"))
            .spawn(move || {
                let first = loop {
                    match protocol::read::<FromHelper>(&mut stdout) {
                        // Records logged while loading come first.
                        Ok(Some(FromHelper::Log {
                            level,
                            target,
                            message,
                        })) => relog(level, &target, &message),
                        other => break other,
                    }
                };
                let _ = tx.send((first, stdout));
            })
            .map_err(|e| (format!("cannot start a thread: {e}"), String::new()))?;
        Ok(Launching {
            name: name.to_owned(),
            temp,
            child,
            stdin,
            last_words,
            hello: rx,
            deadline: std::time::Instant::now() + spawn.deadline,
            timeout: spawn.deadline,
        })
    }
}

/// A helper started by [`Helper::launch`], loading its plugin.
pub struct Launching {
    name: String,
    temp: tempfile::TempDir,
    child: Child,
    stdin: ChildStdin,
    last_words: Arc<Mutex<VecDeque<String>>>,
    #[allow(clippy::type_complexity)]
    hello: std::sync::mpsc::Receiver<(
        std::io::Result<Option<FromHelper>>,
        BufReader<std::process::ChildStdout>,
    )>,
    deadline: std::time::Instant,
    timeout: Duration,
}

impl std::fmt::Debug for Launching {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launching")
            .field("name", &self.name)
            .finish()
    }
}

impl Launching {
    /// Waits (until the load deadline) for the helper's hello; the running helper.
    pub fn finish(self) -> Result<Arc<Helper>, (String, String)> {
        let Self {
            name,
            temp,
            mut child,
            stdin,
            last_words,
            hello: rx,
            deadline,
            timeout,
        } = self;
        let name = name.as_str();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let answer = rx.recv_timeout(left);
        let (first, stdout) = match answer {
            Ok(x) => x,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    format!(
                        "the helper did not load the plugin within {} s; killed",
                        timeout.as_secs()
                    ),
                    String::new(),
                ));
            }
        };
        let hello = match first {
            Ok(Some(FromHelper::Hello {
                protocol: v,
                info,
                interface_version,
                sandbox,
            })) if v == protocol::VERSION => Hello {
                info,
                interface_version,
                sandbox,
            },
            Ok(Some(FromHelper::LoadFailed { reason, detail })) => {
                let _ = child.wait();
                return Err((reason, detail));
            }
            other => {
                let _ = child.kill();
                let status = child.wait().ok();
                let words = last_lines(&last_words);
                return Err((
                    format!(
                        "the helper failed while loading the plugin ({}){words}",
                        match (other, status) {
                            (Ok(None), Some(s)) => describe_exit(s),
                            (Ok(Some(_)), _) => "unexpected answer".to_owned(),
                            (Err(e), _) => e.to_string(),
                            (Ok(None), None) => "no answer".to_owned(),
                        }
                    ),
                    String::new(),
                ));
            }
        };
        let helper = Arc::new(Helper {
            name: name.to_owned(),
            temp: Mutex::new(Some(temp)),
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            state: Mutex::default(),
            last_words,
            next_id: AtomicU64::new(START_ID + 1),
            deadline: timeout,
            hello,
        });
        let weak = Arc::downgrade(&helper);
        std::thread::Builder::new()
            .name(format!("hubget-{name}-reader"))
            .spawn(move || read_answers(&weak, stdout))
            .map_err(|e| (format!("cannot start a thread: {e}"), String::new()))?;
        Ok(helper)
    }
}

impl Helper {
    /// What the helper reported when it loaded the plugin.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Creates the plugin's backend in the helper (`new_backend` with `settings_json` and the
    /// plugin's table); its capabilities. Blocking, within the load deadline.
    pub fn start(
        &self,
        settings_json: &str,
        config_toml: &str,
    ) -> Result<Capabilities, PluginError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(
            START_ID,
            Pending::Start(tx),
            ToHelper::NewBackend {
                settings_json: settings_json.to_owned(),
                config_toml: config_toml.to_owned(),
            },
        )?;
        match rx.recv_timeout(self.deadline) {
            Ok(result) => result,
            Err(_) => {
                let why = format!(
                    "did not answer within {} s (a plugin that hangs while starting)",
                    self.deadline.as_secs()
                );
                self.kill(&why);
                Err(PluginError::new(ErrorKind::TIMEOUT, why))
            }
        }
    }

    /// `resolve` in the helper.
    pub async fn resolve(
        &self,
        request: ResolveRequest,
        cancel: CancelToken,
    ) -> Result<Manifest, PluginError> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.send(id, Pending::Resolve(tx), ToHelper::Resolve { id, request })?;
        self.wait(id, rx, &cancel).await.unwrap_or_else(Err)
    }

    /// `fetch` in the helper; progress events go to `progress`. No outcomes when the helper
    /// died (the caller fills each item with [`Self::failure`]).
    pub async fn fetch(
        &self,
        batch: FetchBatch,
        progress: Progress,
        cancel: CancelToken,
    ) -> Result<Vec<FileOutcome>, PluginError> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.send(
            id,
            Pending::Fetch { progress, done: tx },
            ToHelper::Fetch { id, batch },
        )?;
        let outcomes = self.wait(id, rx, &cancel).await?;
        if outcomes.is_empty()
            && let Some(dead) = self.failure()
        {
            return Err(dead);
        }
        Ok(outcomes)
    }

    /// `call(method, json)` in the helper.
    pub async fn call(&self, method: &str, json: &str) -> Result<String, PluginError> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.send(
            id,
            Pending::Call(tx),
            ToHelper::Call {
                id,
                method: method.to_owned(),
                json: json.to_owned(),
            },
        )?;
        self.wait(id, rx, &CancelToken::new())
            .await
            .unwrap_or_else(Err)
    }

    /// Why the helper is gone, if it is.
    pub fn failure(&self) -> Option<PluginError> {
        self.lock_state().dead.clone()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `pending` under `id` and sends `message`; fails at once when the helper is
    /// gone.
    fn send(&self, id: u64, pending: Pending, message: ToHelper) -> Result<(), PluginError> {
        {
            let mut state = self.lock_state();
            if let Some(dead) = &state.dead {
                return Err(dead.clone());
            }
            state.pending.insert(id, pending);
        }
        let written = protocol::write(
            &mut *self.stdin.lock().unwrap_or_else(PoisonError::into_inner),
            &message,
        );
        if let Err(e) = written {
            // The reader thread sees the pipe close and fails the call with the cause.
            log::debug!("plugin `{}`: cannot write to the helper: {e}", self.name);
        }
        Ok(())
    }

    /// Waits for call `id`, forwarding cancellation. A wait dropped before the answer (the
    /// engine abandoned the call after its cancel grace) kills the helper: a plugin that does
    /// not stop when told cannot be trusted with the next files.
    async fn wait<T>(
        &self,
        id: u64,
        mut rx: oneshot::Receiver<T>,
        cancel: &CancelToken,
    ) -> Result<T, PluginError> {
        struct Abandon<'a>(&'a Helper, u64, bool);
        impl Drop for Abandon<'_> {
            fn drop(&mut self) {
                if !self.2 && self.0.lock_state().pending.remove(&self.1).is_some() {
                    self.0
                        .kill("a call was abandoned (it did not return after it was cancelled)");
                }
            }
        }
        let mut guard = Abandon(self, id, false);
        let mut cancel_sent = false;
        loop {
            tokio::select! {
                answer = &mut rx => {
                    guard.2 = true;
                    return answer.map_err(|_| self.failure().unwrap_or_else(|| {
                        PluginError::new(ErrorKind::PANIC, format!("plugin `{}`: the helper dropped the call", self.name))
                    }));
                }
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if !cancel_sent && cancel.is_cancelled() {
                cancel_sent = true;
                let _ = protocol::write(
                    &mut *self.stdin.lock().unwrap_or_else(PoisonError::into_inner),
                    &ToHelper::Cancel { id },
                );
            }
        }
    }

    /// Kills the helper, saying why (its calls then fail with this reason).
    pub fn kill(&self, why: &str) {
        {
            let mut state = self.lock_state();
            if state.dead.is_some() {
                return;
            }
            state.kill_reason.get_or_insert_with(|| why.to_owned());
        }
        log::warn!("plugin `{}`: killing its helper process: {why}", self.name);
        {
            // Reaped here (a SIGKILL'd process goes at once), so that its temp dir goes now,
            // even if hubget exits before the reader thread notices.
            let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(
            self.temp
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }

    /// The helper is gone: records why and fails every call in flight.
    fn died(&self) {
        let status = {
            let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
            // A closed pipe: the helper is exiting (or misbehaving); give it a moment to be
            // reaped with its own status, then make sure it is gone.
            let mut status = None;
            for _ in 0..50 {
                if let Ok(Some(s)) = child.try_wait() {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            status.or_else(|| {
                let _ = child.kill();
                child.wait().ok()
            })
        };
        let mut state = self.lock_state();
        let cause = match (&state.kill_reason, status) {
            (Some(why), _) => format!("was stopped by hubget: {why}"),
            (None, Some(s)) => format!("crashed: {}", describe_exit(s)),
            (None, None) => "crashed".to_owned(),
        };
        let error = PluginError::new(
            ErrorKind::PANIC,
            format!(
                "plugin `{}` {cause}{}",
                self.name,
                last_lines(&self.last_words)
            ),
        );
        if state.kill_reason.is_none() {
            log::warn!("{}", error.message);
        }
        // Nothing of a dead helper's temp dir is of use any more.
        drop(
            self.temp
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        state.dead = Some(error.clone());
        for (_, pending) in state.pending.drain() {
            pending.fail(error.clone());
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        let _ = child.kill();
        let _ = child.wait();
        drop(
            self.temp
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// The reader thread: dispatches answers until the pipe closes, then fails what is left.
fn read_answers(
    helper: &std::sync::Weak<Helper>,
    mut stdout: BufReader<std::process::ChildStdout>,
) {
    loop {
        let message = protocol::read::<FromHelper>(&mut stdout);
        let Some(helper) = helper.upgrade() else {
            return;
        };
        match message {
            Ok(Some(message)) => helper.dispatch(message),
            Ok(None) => return helper.died(),
            Err(e) => {
                helper.kill(&format!("it sent an unreadable message ({e})"));
                return helper.died();
            }
        }
    }
}

impl Helper {
    fn dispatch(&self, message: FromHelper) {
        let take = |id: u64| self.lock_state().pending.remove(&id);
        match message {
            FromHelper::Progress { id, event } => {
                if let Some(Pending::Fetch { progress, .. }) = self.lock_state().pending.get(&id) {
                    progress.on_event(event);
                }
            }
            FromHelper::Log {
                level,
                target,
                message,
            } => relog(level, &target, &message),
            FromHelper::Started { result } => {
                if let Some(Pending::Start(tx)) = take(START_ID) {
                    let _ = tx.send(result);
                }
            }
            FromHelper::Resolved { id, result } => {
                if let Some(Pending::Resolve(tx)) = take(id) {
                    let _ = tx.send(result);
                }
            }
            FromHelper::Fetched { id, outcomes } => {
                if let Some(Pending::Fetch { done, .. }) = take(id) {
                    let _ = done.send(outcomes);
                }
            }
            FromHelper::Called { id, result } => {
                if let Some(Pending::Call(tx)) = take(id) {
                    let _ = tx.send(result);
                }
            }
            FromHelper::Hello { .. } | FromHelper::LoadFailed { .. } => {
                log::debug!("plugin `{}`: a second hello ignored", self.name);
            }
        }
    }
}

/// Re-emits a record the helper forwarded (already under `plugin::<name>::...`), redacted.
fn relog(level: u8, target: &str, message: &str) {
    let Some(level) = protocol::log_level(level) else {
        return;
    };
    if level > log::max_level() {
        return;
    }
    let text = crate::redact::redact_registered(message);
    log::logger().log(
        &log::Record::builder()
            .level(level)
            .target(target)
            .args(format_args!("{text}"))
            .build(),
    );
}

/// Keeps the helper's last stderr lines (and logs them at debug level).
fn spawn_stderr_reader(
    name: &str,
    stderr: std::process::ChildStderr,
    last_words: Arc<Mutex<VecDeque<String>>>,
) {
    let name = name.to_owned();
    let _ = std::thread::Builder::new()
        .name(format!("hubget-{name}-stderr"))
        .spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let line = crate::redact::redact_registered(&line).into_owned();
                log::debug!("plugin `{name}` (stderr): {line}");
                let mut words = last_words.lock().unwrap_or_else(PoisonError::into_inner);
                if words.len() == 3 {
                    words.pop_front();
                }
                words.push_back(line);
            }
        });
}

/// `": <last stderr lines>"`, or nothing.
fn last_lines(words: &Mutex<VecDeque<String>>) -> String {
    // The stderr reader may still be draining the pipe of a process that just died.
    std::thread::sleep(Duration::from_millis(20));
    let words = words.lock().unwrap_or_else(PoisonError::into_inner);
    let text: Vec<&str> = words
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if text.is_empty() {
        String::new()
    } else {
        format!(" (its last words: {})", text.join(" / "))
    }
}

/// "SIGSEGV", "SIGABRT", "exit code 3".
fn describe_exit(status: std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGSEGV => "SIGSEGV".to_owned(),
                libc::SIGABRT => "SIGABRT".to_owned(),
                libc::SIGKILL => "SIGKILL (out of memory?)".to_owned(),
                libc::SIGBUS => "SIGBUS".to_owned(),
                libc::SIGILL => "SIGILL".to_owned(),
                libc::SIGFPE => "SIGFPE".to_owned(),
                libc::SIGTERM => "SIGTERM".to_owned(),
                other => format!("signal {other}"),
            };
            return name;
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => "an unknown status".to_owned(),
    }
}
