//! The helper's side: serves one plugin's backend over the pipe. Each call runs on a thread of
//! its own (as in process); answers, progress and log records go out through one writer
//! thread, which merges runs of byte-count events so that a fast download does not pay a line
//! per read.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, RStr};
use hubget_plugin_api::{
    BackendBox, CancelToken, Capabilities, ErrorKind, EventKind, PluginError, ProgressEvent,
    ProgressSink, ProgressSink_TO,
};

use super::protocol::{self, FromHelper, ToHelper};

/// Where the helper's messages go: the writer thread.
#[derive(Clone)]
pub struct Outbox(Sender<Queued>);

/// What the writer thread is handed.
enum Queued {
    /// A message to send.
    Message(Box<FromHelper>),
    /// Everything queued before it is sent: say so.
    Flush(Sender<()>),
}

impl Outbox {
    /// Starts the writer thread on `out`. It ends when every sender is gone.
    pub fn start(out: impl Write + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("hubget-helper-writer".to_owned())
            .spawn(move || write_all(out, &rx))
            .expect("the writer thread");
        Self(tx)
    }

    /// Queues one message.
    pub fn send(&self, message: FromHelper) {
        let _ = self.0.send(Queued::Message(Box::new(message)));
    }

    /// Returns once every message queued before has been written.
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.0.send(Queued::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

fn write_all(mut out: impl Write, rx: &Receiver<Queued>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut flushed = Vec::new();
        let messages = batch
            .into_iter()
            .filter_map(|q| match q {
                Queued::Message(m) => Some(*m),
                Queued::Flush(done) => {
                    flushed.push(done);
                    None
                }
            })
            .collect();
        for message in merge_bytes(messages) {
            if protocol::write(&mut out, &message).is_err() {
                // The host is gone: nothing left to serve.
                std::process::exit(0);
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

/// Merges each run of `BYTES` events of one call and item into one event (order kept).
fn merge_bytes(batch: Vec<FromHelper>) -> Vec<FromHelper> {
    let mut out: Vec<FromHelper> = Vec::with_capacity(batch.len());
    for message in batch {
        if let (
            Some(FromHelper::Progress {
                id: last_id,
                event: last,
            }),
            FromHelper::Progress { id, event },
        ) = (out.last_mut(), &message)
            && *last_id == *id
            && last.kind == EventKind::BYTES
            && event.kind == EventKind::BYTES
            && last.index == event.index
        {
            last.bytes += event.bytes;
            last.network_bytes += event.network_bytes;
            continue;
        }
        out.push(message);
    }
    out
}

/// A progress sink that queues events of call `id`.
struct Forward {
    id: u64,
    outbox: Mutex<Outbox>,
}

impl ProgressSink for Forward {
    fn on_event(&self, event: ProgressEvent) {
        let _ = catch_unwind(AssertUnwindSafe(|| {
            self.outbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send(FromHelper::Progress { id: self.id, event });
        }));
    }
}

/// Serves requests from `input` until it ends; `start` creates the backend from
/// `NewBackend`'s settings JSON and config table.
pub fn serve(
    mut input: impl BufRead,
    outbox: &Outbox,
    start: impl FnOnce(&str, &str) -> Result<BackendBox, PluginError>,
) {
    let mut start = Some(start);
    let mut backend: Option<Arc<BackendBox>> = None;
    let cancels: Arc<Mutex<HashMap<u64, CancelToken>>> = Arc::default();
    while let Ok(Some(message)) = protocol::read::<ToHelper>(&mut input) {
        match message {
            ToHelper::NewBackend {
                settings_json,
                config_toml,
            } => {
                let result = match start.take() {
                    Some(f) => guarded(|| f(&settings_json, &config_toml)).map(|b| {
                        let caps: Capabilities = b.capabilities();
                        backend = Some(Arc::new(b));
                        caps
                    }),
                    None => Err(PluginError::new(
                        ErrorKind::PROTOCOL,
                        "the backend was started already",
                    )),
                };
                outbox.send(FromHelper::Started { result });
            }
            ToHelper::Cancel { id } => {
                if let Some(token) = cancels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&id)
                {
                    token.cancel();
                }
            }
            ToHelper::Open { .. } => {}
            call => {
                let Some(backend) = backend.clone() else {
                    outbox.send(not_started(call));
                    continue;
                };
                let id = call_id(&call);
                let cancel = CancelToken::new();
                cancels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, cancel.clone());
                let (outbox, cancels) = (outbox.clone(), Arc::clone(&cancels));
                let spawned = std::thread::Builder::new()
                    .name(format!("hubget-helper-call-{id}"))
                    .spawn(move || {
                        let answer = run(&backend, call, cancel, &outbox);
                        cancels
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&id);
                        outbox.send(answer);
                    });
                if let Err(e) = spawned {
                    log::error!("cannot start a thread for call {id}: {e}");
                }
            }
        }
    }
}

fn call_id(call: &ToHelper) -> u64 {
    match call {
        ToHelper::Resolve { id, .. }
        | ToHelper::Fetch { id, .. }
        | ToHelper::Call { id, .. }
        | ToHelper::Cancel { id } => *id,
        ToHelper::Open { .. } | ToHelper::NewBackend { .. } => 0,
    }
}

/// Runs one call against the plugin; its answer.
fn run(backend: &BackendBox, call: ToHelper, cancel: CancelToken, outbox: &Outbox) -> FromHelper {
    match call {
        ToHelper::Resolve { id, request } => FromHelper::Resolved {
            id,
            result: guarded(|| backend.resolve(request, cancel).into_result()),
        },
        ToHelper::Fetch { id, batch } => {
            let len = batch.items.len();
            let progress = ProgressSink_TO::from_ptr(
                RArc::new(Forward {
                    id,
                    outbox: Mutex::new(outbox.clone()),
                }),
                TD_Opaque,
            );
            let outcomes = guarded(|| Ok(backend.fetch(batch, progress, cancel).into_vec()))
                .unwrap_or_else(|e| hubget_plugin_api::sdk::outcomes_for(len, Vec::new(), &e));
            FromHelper::Fetched { id, outcomes }
        }
        ToHelper::Call { id, method, json } => FromHelper::Called {
            id,
            result: guarded(|| {
                backend
                    .call(RStr::from_str(&method), RStr::from_str(&json))
                    .into_result()
                    .map(String::from)
            }),
        },
        other => not_started(other),
    }
}

/// The answer to a call made before `NewBackend`.
fn not_started(call: ToHelper) -> FromHelper {
    let error = PluginError::new(ErrorKind::PROTOCOL, "the backend was not started");
    match call {
        ToHelper::Fetch { id, batch } => FromHelper::Fetched {
            id,
            outcomes: hubget_plugin_api::sdk::outcomes_for(batch.items.len(), Vec::new(), &error),
        },
        ToHelper::Call { id, .. } => FromHelper::Called {
            id,
            result: Err(error),
        },
        other => FromHelper::Resolved {
            id: call_id(&other),
            result: Err(error),
        },
    }
}

/// Runs `f`, turning a panic that escaped the plugin's own guard into a `PANIC` error.
fn guarded<T>(f: impl FnOnce() -> Result<T, PluginError>) -> Result<T, PluginError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(PluginError::new(
            ErrorKind::PANIC,
            "the plugin panicked (in the helper)",
        ))
    })
}

/// A `log` logger for the helper: every record goes to the host as a [`FromHelper::Log`].
pub struct ForwardLogs(pub Mutex<Outbox>);

impl log::Log for ForwardLogs {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(FromHelper::Log {
                level: record.level() as usize as u8,
                target: record.target().to_owned(),
                message: record.args().to_string(),
            });
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_byte_events_merge_and_everything_else_keeps_its_place() {
        let p = |id, event| FromHelper::Progress { id, event };
        let merged = merge_bytes(vec![
            p(1, ProgressEvent::bytes(0, 10, 12)),
            p(1, ProgressEvent::bytes(0, 5, 5)),
            p(1, ProgressEvent::checkpoint(0, 15)),
            p(1, ProgressEvent::bytes(0, 1, 1)),
            p(2, ProgressEvent::bytes(0, 1, 1)),
            p(1, ProgressEvent::bytes(1, 1, 1)),
        ]);
        let got: Vec<(u64, u32, u32, u64)> = merged
            .iter()
            .map(|m| match m {
                FromHelper::Progress { id, event } => (*id, event.index, event.kind.0, event.bytes),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, 0, 1, 15),
                (1, 0, 4, 15),
                (1, 0, 1, 1),
                (2, 0, 1, 1),
                (1, 1, 1, 1)
            ]
        );
    }
}
