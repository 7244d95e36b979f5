//! NDJSON events on stdout: one object per line, `"schema": 1` on each, `progress` limited to
//! about four events per second per file.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Event, SCHEMA_VERSION};

const PROGRESS_INTERVAL: Duration = Duration::from_millis(240);

/// Writes events as JSON lines.
pub struct JsonWriter {
    out: Mutex<Box<dyn Write + Send>>,
    last_progress: Mutex<HashMap<String, Instant>>,
}

impl JsonWriter {
    /// A writer on stdout.
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()))
    }

    /// A writer on any sink.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        Self {
            out: Mutex::new(out),
            last_progress: Mutex::new(HashMap::new()),
        }
    }

    /// The JSON line for `event` (without the newline), with every registered secret (the Hub
    /// token, plugins' credentials) masked and URL query strings stripped, whatever field a
    /// backend's message ended up in.
    pub fn line(event: &Event) -> String {
        let mut value = serde_json::to_value(event).expect("events serialise");
        if let Some(obj) = value.as_object_mut() {
            obj.insert("schema".to_owned(), SCHEMA_VERSION.into());
        }
        crate::redact::redact_registered(&value.to_string()).into_owned()
    }

    /// Writes `event`, unless it is a `progress` event too soon after the previous one.
    pub fn write(&self, event: &Event) {
        if let Event::Progress {
            path, bytes, total, ..
        } = event
        {
            let mut last = self.last_progress.lock().expect("progress map");
            let now = Instant::now();
            if bytes < total
                && last
                    .get(path)
                    .is_some_and(|t| now.duration_since(*t) < PROGRESS_INTERVAL)
            {
                return;
            }
            last.insert(path.clone(), now);
        }
        let line = Self::line(event);
        let mut out = self.out.lock().expect("stdout");
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn registered_secrets_never_reach_a_json_line() {
        crate::redact::register_secret("plugin-secret-4242");
        let line = JsonWriter::line(&Event::Warning {
            message: "the store said no to key plugin-secret-4242 at https://s3.example/b?X-Amz-Signature=abc"
                .into(),
        });
        assert!(!line.contains("plugin-secret-4242"), "{line}");
        assert!(!line.contains("X-Amz-Signature"), "{line}");
    }

    #[test]
    fn every_line_has_the_schema_and_progress_is_throttled() {
        let buf = Buf::default();
        let w = JsonWriter::new(Box::new(buf.clone()));
        for i in 0..10 {
            w.write(&Event::Progress {
                path: "a".into(),
                backend: "lfs".into(),
                bytes: i,
                total: 100,
            });
        }
        w.write(&Event::Warning {
            message: "m".into(),
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in &lines {
            assert_eq!(l["schema"], 1);
        }
        assert_eq!(lines[0]["event"], "progress");
        assert_eq!(lines[1]["event"], "warning");
    }
}
