//! Progress bars on stderr (indicatif): one overall bar (bytes, speed, ETA) and one line per
//! active file with its name and the backend serving it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Event;

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

/// The bars.
pub struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    files: Mutex<HashMap<String, (ProgressBar, u64, u64)>>,
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
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let total = multi.add(ProgressBar::new(0));
        total.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(multi.clone());
        }
        Self {
            multi,
            total,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// Removes every bar from the terminal.
    pub fn clear(&self) {
        for (bar, _, _) in self.files.lock().expect("bars").drain().map(|(_, v)| v) {
            bar.finish_and_clear();
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
                let bar = files.remove(path).map(|(b, _, _)| b).unwrap_or_else(|| {
                    let b = self.multi.add(ProgressBar::new(*size));
                    b.set_style(file_style());
                    b
                });
                bar.set_prefix(backend.clone());
                bar.set_message(path.clone());
                bar.set_position(*offset);
                files.insert(path.clone(), (bar, *offset, *offset));
            }
            Event::Progress { path, bytes, .. } => {
                if let Some((bar, last, _)) = files.get_mut(path) {
                    if *bytes > *last {
                        self.total.inc(bytes - *last);
                    }
                    *last = *bytes;
                    bar.set_position(*bytes);
                }
            }
            Event::Retry { path, .. } | Event::Fallback { path, .. } => {
                if let Some((bar, last, base)) = files.remove(path) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                    let undo = last.saturating_sub(base);
                    self.total
                        .set_position(self.total.position().saturating_sub(undo));
                }
            }
            Event::FileDone { path, bytes, .. } => {
                if let Some((bar, last, _)) = files.remove(path) {
                    self.total.inc(bytes.saturating_sub(last));
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
            }
            Event::Warning { message } => {
                let _ = self.multi.println(format!("warning: {message}"));
            }
            Event::Error {
                path: Some(path), ..
            } => {
                if let Some((bar, _, _)) = files.remove(path) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
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
