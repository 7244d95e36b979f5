//! Progress bars on stderr (indicatif): one overall bar (bytes, speed, ETA) and one line per
//! active file with its name and the backend serving it. A backend retry inside a download
//! shows on the file's line (`retrying (2/5): 503`) until its bytes move again; the bar and its
//! bytes stay.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Event;
use hubget_plugin_api::protocol::RetryNote;

use crate::output::retry_label::retry_label;

/// A backend retry stays on the file's line at least this long.
const RETRY_SHOWN: Duration = Duration::from_secs(1);

/// The bars being drawn, if any, so that log lines can be printed above them.
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// A stderr writer for the logger: while bars are drawn, lines are printed above them instead
/// of through them (`env_logger::Target::Pipe(Box::new(LogWriter))`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let active = ACTIVE.lock().ok().and_then(|a| a.clone());
        match active {
            Some(multi) => multi.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// One file's line.
struct FileBar {
    bar: ProgressBar,
    /// Bytes shown.
    last: u64,
    /// Bytes on disk when the attempt started (resumed prefix).
    base: u64,
    /// When a backend retry was put on the line, until bytes move again.
    retry_shown: Option<Instant>,
}

/// The bars.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: Mutex<HashMap<String, FileBar>>,
    /// How long a backend retry stays on a line at least.
    retry_shown: Duration,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

fn file_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  {prefix:.dim} {wide_msg} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
    )
    .expect("template")
}

impl Bars {
    /// Bars drawn on stderr (about 10 times per second).
    pub fn new() -> Self {
        let bars = Self::with_target(ProgressDrawTarget::stderr_with_hz(10));
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(bars.multi.clone());
        }
        bars
    }

    fn with_target(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        Self {
            multi,
            total,
            files: Mutex::new(HashMap::new()),
            retry_shown: RETRY_SHOWN,
        }
    }

    /// Prints `text` above the bars.
    pub fn println(&self, text: &str) {
        let _ = self.multi.println(text);
    }

    /// Removes every bar from the terminal.
    pub fn clear(&self) {
        for f in self.files.lock().expect("bars").drain().map(|(_, v)| v) {
            f.bar.finish_and_clear();
        }
        self.total.finish_and_clear();
        let _ = self.multi.clear();
        if let Ok(mut a) = ACTIVE.lock() {
            *a = None;
        }
    }

    /// Updates the bars for one event.
    pub fn on_event(&self, event: &Event) {
        let mut files = self.files.lock().expect("bars");
        match event {
            Event::Plan {
                total_bytes,
                remaining_bytes,
                files: list,
                ..
            } => {
                self.total.set_length(*total_bytes);
                self.total.set_position(total_bytes - remaining_bytes);
                self.total.reset_eta();
                self.total.set_message(format!("{} files", list.len()));
            }
            Event::FileStart {
                path,
                backend,
                size,
                offset,
            } => {
                let bar = files.remove(path).map(|f| f.bar).unwrap_or_else(|| {
                    let b = self.multi.add(ProgressBar::new(*size));
                    b.set_style(file_style());
                    b
                });
                bar.set_prefix(backend.clone());
                bar.set_message(path.clone());
                bar.set_position(*offset);
                files.insert(
                    path.clone(),
                    FileBar {
                        bar,
                        last: *offset,
                        base: *offset,
                        retry_shown: None,
                    },
                );
            }
            Event::Progress { path, bytes, .. } => {
                if let Some(f) = files.get_mut(path) {
                    if *bytes > f.last {
                        self.total.inc(bytes - f.last);
                        if f.retry_shown
                            .is_some_and(|at| at.elapsed() >= self.retry_shown)
                        {
                            f.retry_shown = None;
                            f.bar.set_message(path.clone());
                        }
                    }
                    f.last = *bytes;
                    f.bar.set_position(*bytes);
                }
            }
            // The download goes on: keep the bar and its bytes, say what happens.
            Event::BackendRetry { path, message, .. } => {
                if let Some(f) = files.get_mut(path) {
                    let label = retry_label(&RetryNote::parse(message));
                    f.bar.set_message(format!("{path}  {label}"));
                    f.retry_shown = Some(Instant::now());
                }
            }
            Event::RateLimited {
                path,
                bucket,
                reset_in_ms,
                ..
            } => {
                if let Some(f) = files.get_mut(path) {
                    let secs = reset_in_ms.div_ceil(1000);
                    f.bar
                        .set_message(format!("{path}  rate limited ({bucket}): waiting {secs} s"));
                    f.retry_shown = Some(Instant::now());
                }
            }
            Event::Retry { path, .. } | Event::Fallback { path, .. } => {
                if let Some(f) = files.remove(path) {
                    f.bar.finish_and_clear();
                    self.multi.remove(&f.bar);
                    let undo = f.last.saturating_sub(f.base);
                    self.total
                        .set_position(self.total.position().saturating_sub(undo));
                }
            }
            Event::FileDone { path, bytes, .. } => {
                if let Some(f) = files.remove(path) {
                    self.total.inc(bytes.saturating_sub(f.last));
                    f.bar.finish_and_clear();
                    self.multi.remove(&f.bar);
                }
            }
            Event::Warning { message } => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
            Event::Error {
                path: Some(path), ..
            } => {
                if let Some(f) = files.remove(path) {
                    f.bar.finish_and_clear();
                    self.multi.remove(&f.bar);
                }
            }
            Event::Done { .. } => {
                drop(files);
                self.clear();
            }
            Event::Error { path: None, .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(bars: &Bars) {
        bars.on_event(&Event::FileStart {
            path: "w.bin".into(),
            backend: "lfs".into(),
            size: 1000,
            offset: 100,
        });
        bars.on_event(&Event::Progress {
            path: "w.bin".into(),
            backend: "lfs".into(),
            bytes: 400,
            total: 1000,
        });
    }

    fn message(bars: &Bars) -> Option<String> {
        bars.files
            .lock()
            .unwrap()
            .get("w.bin")
            .map(|f| f.bar.message().to_string())
    }

    fn backend_retry() -> Event {
        Event::BackendRetry {
            path: "w.bin".into(),
            backend: "lfs".into(),
            attempt: Some(2),
            max_attempts: Some(5),
            delay_ms: Some(200),
            message:
                "GET http://cdn/lfs/ab: 503 Service Unavailable; retrying in 200 ms (attempt 2/5)"
                    .into(),
        }
    }

    #[test]
    fn a_backend_retry_keeps_the_bar_and_its_bytes_and_shows_on_the_line() {
        let mut bars = Bars::with_target(ProgressDrawTarget::hidden());
        bars.retry_shown = Duration::ZERO;
        start(&bars);
        let total = bars.total.position();
        bars.on_event(&backend_retry());
        assert_eq!(message(&bars).unwrap(), "w.bin  retrying (2/5): 503");
        assert_eq!(bars.total.position(), total, "no bytes taken back");
        // No new bytes yet: the retry stays on the line.
        bars.on_event(&Event::Progress {
            path: "w.bin".into(),
            backend: "lfs".into(),
            bytes: 400,
            total: 1000,
        });
        assert_eq!(message(&bars).unwrap(), "w.bin  retrying (2/5): 503");
        // Bytes move again: back to the file name.
        bars.on_event(&Event::Progress {
            path: "w.bin".into(),
            backend: "lfs".into(),
            bytes: 500,
            total: 1000,
        });
        assert_eq!(message(&bars).unwrap(), "w.bin");
        assert_eq!(bars.total.position(), total + 100);
    }

    #[test]
    fn a_host_retry_still_ends_the_attempt() {
        let bars = Bars::with_target(ProgressDrawTarget::hidden());
        start(&bars);
        let total = bars.total.position();
        bars.on_event(&Event::Retry {
            path: "w.bin".into(),
            backend: "lfs".into(),
            attempt: 1,
            delay_ms: 500,
            error: super::super::ErrorInfo {
                kind: "network".into(),
                message: "reset".into(),
            },
        });
        assert_eq!(message(&bars), None, "the bar is gone");
        assert_eq!(
            bars.total.position(),
            total - 300,
            "its bytes are taken back"
        );
    }
}
