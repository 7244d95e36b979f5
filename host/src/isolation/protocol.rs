//! The pipe protocol between the host and a plugin's helper process: JSON lines, one message
//! per line, host → helper on the helper's stdin and helper → host on its stdout. The plugin
//! types inside are plugin-api's own serde forms (one codec for them).
//!
//! A session: the host sends [`ToHelper::Open`]; the helper answers [`FromHelper::Hello`] (or
//! [`FromHelper::LoadFailed`] and exits); [`ToHelper::NewBackend`] is answered by
//! [`FromHelper::Started`]. Then calls, each with an id chosen by the host: `Resolve`, `Fetch`
//! and `Call` run concurrently in the helper and end with exactly one `Resolved`, `Fetched` or
//! `Called` of their id; a `Fetch` streams `Progress` before it. `Cancel` sets the call's
//! cancel token. `Log` records may come at any time. End of the host's stream: the helper exits.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use hubget_plugin_api::{
    Capabilities, FetchBatch, FileOutcome, Manifest, PluginError, PluginInfo, ProgressEvent,
    ResolveRequest,
};
use serde::{Deserialize, Serialize};

/// The protocol's version: the host and helper are the same binary, but a helper started from
/// an older install (an upgrade during a run) must be refused, not misread.
pub const VERSION: u32 = 1;

/// The hidden subcommand that runs a helper.
pub const SUBCOMMAND: &str = "__plugin-helper";

/// What the sandbox allows an isolated plugin (Linux Landlock; see [`super::sandbox`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    /// Whether to sandbox at all.
    pub enabled: bool,
    /// Directories the plugin may write below (the target's partial-file directories, hubget's
    /// state directory in the cache, the helper's temp dir).
    pub write: Vec<PathBuf>,
    /// The user's home: nothing below it may be read except [`Self::read_in_home`].
    pub home: Option<PathBuf>,
    /// Paths below the home the plugin may read (the cache, the config file, the plugin's
    /// own directory, a CA bundle).
    pub read_in_home: Vec<PathBuf>,
}

/// Host → helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToHelper {
    /// Load the plugin at `path` (after entering the sandbox).
    Open {
        /// [`VERSION`].
        protocol: u32,
        /// The plugin library.
        path: PathBuf,
        /// The most verbose log level to forward (0 off .. 5 trace).
        max_log_level: u8,
        /// The address-space limit in MiB (0: none).
        memory_limit_mib: u64,
        /// The sandbox.
        sandbox: SandboxPolicy,
        /// The plugin's temp dir (`TMPDIR`; writable in the sandbox). The host made it and
        /// removes it when the helper is gone, however it ended.
        temp_dir: PathBuf,
    },
    /// `new_backend(settings, config)`.
    NewBackend {
        /// The host settings, as plugin-api's JSON.
        settings_json: String,
        /// The plugin's `[plugins.<name>]` table as TOML.
        config_toml: String,
    },
    /// `resolve`.
    Resolve {
        /// Call id.
        id: u64,
        /// The request.
        request: ResolveRequest,
    },
    /// `fetch`.
    Fetch {
        /// Call id.
        id: u64,
        /// The batch.
        batch: FetchBatch,
    },
    /// `call(method, json)`.
    Call {
        /// Call id.
        id: u64,
        /// The extension method.
        method: String,
        /// Its JSON request.
        json: String,
    },
    /// Sets the cancel token of call `id`.
    Cancel {
        /// Call id.
        id: u64,
    },
}

/// Helper → host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromHelper {
    /// The plugin loaded and passed the loader's checks.
    Hello {
        /// [`VERSION`].
        protocol: u32,
        /// What the plugin says about itself.
        info: PluginInfo,
        /// The interface version the library was built against.
        interface_version: String,
        /// What the sandbox could enforce ("landlock", or why not).
        sandbox: String,
    },
    /// The plugin could not be loaded; the helper exits.
    LoadFailed {
        /// One line.
        reason: String,
        /// The full text.
        detail: String,
    },
    /// The answer to `NewBackend`.
    Started {
        /// The backend's capabilities, or why it did not start.
        result: Result<Capabilities, PluginError>,
    },
    /// A progress event of fetch `id`.
    Progress {
        /// Call id.
        id: u64,
        /// The event.
        event: ProgressEvent,
    },
    /// The answer to `Resolve`.
    Resolved {
        /// Call id.
        id: u64,
        /// The manifest or the error.
        result: Result<Manifest, PluginError>,
    },
    /// The answer to `Fetch`.
    Fetched {
        /// Call id.
        id: u64,
        /// The outcomes, as the plugin returned them.
        outcomes: Vec<FileOutcome>,
    },
    /// The answer to `Call`.
    Called {
        /// Call id.
        id: u64,
        /// The JSON answer or the error.
        result: Result<String, PluginError>,
    },
    /// A log record of the plugin (re-emitted by the host, redacted).
    Log {
        /// 1 error .. 5 trace.
        level: u8,
        /// The plugin's target.
        target: String,
        /// The message.
        message: String,
    },
}

/// The `log` level of a level number as plugin-api's log callback and [`FromHelper::Log`]
/// carry it (1 error .. 5 trace); `None` for 0 (off) and unknown numbers.
pub fn log_level(n: u8) -> Option<log::Level> {
    match n {
        1 => Some(log::Level::Error),
        2 => Some(log::Level::Warn),
        3 => Some(log::Level::Info),
        4 => Some(log::Level::Debug),
        5 => Some(log::Level::Trace),
        _ => None,
    }
}

/// Writes one message as a line and flushes.
pub fn write<T: Serialize>(out: &mut impl Write, message: &T) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Reads one message; `Ok(None)` at the end of the stream.
pub fn read<T: for<'de> Deserialize<'de>>(input: &mut impl BufRead) -> std::io::Result<Option<T>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubget_plugin_api::{ErrorKind, FileDone, RepoType};

    #[test]
    fn messages_survive_the_pipe_with_their_plugin_types() {
        let outcomes = vec![
            FileOutcome::new(0, Ok(FileDone::new(5, "s"))),
            FileOutcome::new(1, Err(PluginError::new(ErrorKind::NOT_FOUND, "gone"))),
        ];
        let mut buf = Vec::new();
        write(&mut buf, &FromHelper::Fetched { id: 7, outcomes }).unwrap();
        write(
            &mut buf,
            &FromHelper::Progress {
                id: 7,
                event: ProgressEvent::range_written(1, 0, 10),
            },
        )
        .unwrap();
        let mut input = std::io::Cursor::new(buf);
        let Some(FromHelper::Fetched { id, outcomes }) = read(&mut input).unwrap() else {
            panic!("fetched");
        };
        assert_eq!(id, 7);
        assert!(outcomes[0].result.is_ok());
        let err = outcomes[1].result.clone().into_result().unwrap_err();
        assert_eq!(
            (err.kind, err.message.as_str()),
            (ErrorKind::NOT_FOUND, "gone")
        );
        let Some(FromHelper::Progress { event, .. }) = read(&mut input).unwrap() else {
            panic!("progress");
        };
        assert_eq!(event.message.as_str(), r#"{"start":0,"end":10}"#);
        assert!(read::<FromHelper>(&mut input).unwrap().is_none());
        let caps = Capabilities::new(&[RepoType::MODEL], hubget_plugin_api::Features::RESOLVE);
        let json = serde_json::to_string(&FromHelper::Started { result: Ok(caps) }).unwrap();
        assert!(matches!(
            serde_json::from_str::<FromHelper>(&json).unwrap(),
            FromHelper::Started { result: Ok(c) } if c.features == hubget_plugin_api::Features::RESOLVE
        ));
    }
}
