//! Writing one item into the host's partial file, cancellably.
//!
//! The contract asks a backend to return within about a second of cancellation, but a blocking
//! call (connecting to a hung server, waiting for its headers, reading its body, a stalled
//! network filesystem) cannot be interrupted. [`stream_to_partial`] opens and reads the source
//! on a helper thread and hands chunks over a small channel, so the calling thread checks the
//! [`CancelToken`] at least every 100 ms whatever the source does; on cancel it returns
//! `CANCELLED` at once and the helper thread ends when its blocking call returns.
//!
//! It also does the rest of what the host expects of a sequential writer: write from `offset`
//! without truncating, send `BYTES` for every chunk and a `CHECKPOINT` every few MiB and at the
//! end (the host resumes from the last one, and keeps a finished item even when the call is
//! abandoned later), and refuse a source that is longer or shorter than the file's size.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc;
use std::time::Duration;

use crate::interface::Progress;
use crate::types::{CancelToken, ErrorKind, FetchItem, PluginError, ProgressEvent};

/// Bytes read per chunk.
const CHUNK: usize = 256 * 1024;
/// Chunks in flight between the reader thread and the writer.
const IN_FLIGHT: usize = 4;
/// A `CHECKPOINT` after this many bytes.
const CHECKPOINT_EVERY: u64 = 8 * 1024 * 1024;
/// The longest the writer waits without looking at the cancel token.
const POLL: Duration = Duration::from_millis(100);

/// Copies the source that `open` returns (the bytes of `item` from `item.offset` on: open it
/// with a `Range` request or a seek) into the item's partial file, as item `index` of the batch.
/// `open` and every read run on a helper thread. Returns the number of bytes written.
///
/// Errors: `open`'s own error; `CANCELLED` within about 100 ms of the token being set;
/// `NETWORK` (retryable) when a read fails or the source ends early; `PROTOCOL` when it gives
/// more bytes than the file has; `IO` when the partial file cannot be written. Add context (the
/// URL) with [`PluginError::context`].
pub fn stream_to_partial<R, F>(
    open: F,
    item: &FetchItem,
    index: u32,
    progress: &Progress,
    cancel: &CancelToken,
) -> Result<u64, PluginError>
where
    R: Read,
    F: FnOnce() -> Result<R, PluginError> + Send + 'static,
{
    let io = |what: &str, e: std::io::Error| {
        PluginError::new(ErrorKind::IO, format!("{what} {}: {e}", item.partial_path))
    };
    let expected = item.file.size.saturating_sub(item.offset);
    // The host created the partial file: open it for writing, never create or truncate it.
    let mut file = OpenOptions::new()
        .write(true)
        .open(item.partial_path.as_str())
        .map_err(|e| io("cannot open the partial file", e))?;
    file.seek(SeekFrom::Start(item.offset))
        .map_err(|e| io("cannot seek in the partial file", e))?;

    let (tx, rx) = mpsc::sync_channel::<Chunk>(IN_FLIGHT);
    // The pump reads at most one byte past the expected end (to notice a longer source).
    let limit = expected.saturating_add(1);
    std::thread::Builder::new()
        .name("hubget-stream".to_owned())
        .spawn(move || match open() {
            Ok(reader) => pump(reader.take(limit), tx),
            Err(e) => {
                let _ = tx.send(Chunk::Open(e));
            }
        })
        .map_err(|e| PluginError::new(ErrorKind::OTHER, format!("cannot start a thread: {e}")))?;

    let mut written = 0u64;
    let mut since_checkpoint = 0u64;
    loop {
        cancel.check()?;
        let chunk = match rx.recv_timeout(POLL) {
            Ok(Chunk::Data(chunk)) => chunk,
            Ok(Chunk::Open(e)) => return Err(e),
            Ok(Chunk::Read(e)) => {
                let kind = if e.kind() == std::io::ErrorKind::TimedOut {
                    ErrorKind::TIMEOUT
                } else {
                    ErrorKind::NETWORK
                };
                return Err(
                    PluginError::new(kind, format!("reading the source: {e}")).retryable(true)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let n = chunk.len() as u64;
        if written + n > expected {
            return Err(PluginError::new(
                ErrorKind::PROTOCOL,
                format!(
                    "the source is longer than the file ({} bytes): refusing it",
                    item.file.size
                ),
            ));
        }
        file.write_all(&chunk)
            .map_err(|e| io("cannot write the partial file", e))?;
        written += n;
        since_checkpoint += n;
        progress.on_event(ProgressEvent::bytes(index, n, n));
        if since_checkpoint >= CHECKPOINT_EVERY {
            since_checkpoint = 0;
            progress.on_event(ProgressEvent::checkpoint(index, item.offset + written));
        }
    }
    if written < expected {
        return Err(PluginError::new(
            ErrorKind::NETWORK,
            format!(
                "the source ended early: {} of {} bytes",
                item.offset + written,
                item.file.size
            ),
        )
        .retryable(true));
    }
    file.flush()
        .map_err(|e| io("cannot write the partial file", e))?;
    progress.on_event(ProgressEvent::checkpoint(index, item.file.size));
    Ok(written)
}

/// What the helper thread hands over.
enum Chunk {
    /// The next bytes.
    Data(Vec<u8>),
    /// `open` failed.
    Open(PluginError),
    /// A read failed.
    Read(std::io::Error),
}

/// Reads `reader` to its end in chunks into `tx`; stops when the receiver is gone.
fn pump(mut reader: impl Read, tx: mpsc::SyncSender<Chunk>) {
    loop {
        let mut buf = vec![0u8; CHUNK];
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                buf.truncate(n);
                if tx.send(Chunk::Data(buf)).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Chunk::Read(e));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{BatchBuilder, RecordingProgress, cancel_after, file};
    use std::time::Instant;

    /// A reader that blocks forever (a hung server), never looking at any token.
    struct Hung;
    impl Read for Hung {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
    }

    /// Streams what `open` opens into a fresh 10-byte `w.bin` (nothing on disk) with nobody
    /// watching, until `cancel`.
    fn stream_fresh<R: Read>(
        open: impl FnOnce() -> Result<R, PluginError> + Send + 'static,
        cancel: &CancelToken,
    ) -> Result<u64, PluginError> {
        let work = tempfile::tempdir().unwrap();
        let batch = BatchBuilder::new("acme/tiny", "c", work.path())
            .item(file("w.bin", 10), b"")
            .build();
        let progress = RecordingProgress::new().progress();
        stream_to_partial(open, &batch.items[0], 0, &progress, cancel)
    }

    #[test]
    fn writes_from_the_offset_and_checkpoints_the_end() {
        let work = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let batch = BatchBuilder::new("acme/tiny", "c", work.path())
            .item(file("w.bin", data.len() as u64), &data[..1000])
            .build();
        let rec = RecordingProgress::new();
        let item = &batch.items[0];
        let rest = data[1000..].to_vec();
        let n = stream_to_partial(
            move || Ok(std::io::Cursor::new(rest)),
            item,
            0,
            &rec.progress(),
            &CancelToken::new(),
        )
        .unwrap();
        assert_eq!(n, data.len() as u64 - 1000);
        assert_eq!(std::fs::read(item.partial_path.as_str()).unwrap(), data);
        assert_eq!(rec.bytes(0), n);
        assert_eq!(rec.checkpoint(0), Some(data.len() as u64));
    }

    #[test]
    fn a_hung_reader_is_left_behind_on_cancel() {
        let t = Instant::now();
        let e = stream_fresh(|| Ok(Hung), &cancel_after(Duration::from_millis(200))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CANCELLED);
        // The reader never returns; coming back at all is the behaviour (a generous bound a
        // loaded machine keeps, far below the hour the reader would take).
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }

    #[test]
    fn a_source_longer_or_shorter_than_the_file_is_refused() {
        let work = tempfile::tempdir().unwrap();
        let batch = BatchBuilder::new("acme/tiny", "c", work.path())
            .item(file("a", 4), b"")
            .build();
        let run = |body: &'static [u8]| {
            stream_to_partial(
                move || Ok(body),
                &batch.items[0],
                0,
                &RecordingProgress::new().progress(),
                &CancelToken::new(),
            )
        };
        assert_eq!(run(b"12345").unwrap_err().kind, ErrorKind::PROTOCOL);
        let short = run(b"12").unwrap_err();
        assert_eq!(short.kind, ErrorKind::NETWORK);
        assert!(short.retryable, "{short}");
        assert_eq!(run(b"1234").unwrap(), 4);
    }

    #[test]
    fn a_source_that_hangs_before_its_first_byte_is_left_behind_on_cancel() {
        let t = Instant::now();
        let never_answers = || -> Result<&[u8], PluginError> {
            // A server that accepts the connection and never answers.
            std::thread::sleep(Duration::from_secs(3600));
            Ok(b"")
        };
        let e = stream_fresh(never_answers, &cancel_after(Duration::from_millis(200))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::CANCELLED);
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    }

    #[test]
    fn an_open_error_is_returned_as_is() {
        let not_found = || -> Result<&[u8], PluginError> {
            Err(PluginError::new(ErrorKind::NOT_FOUND, "GET /w.bin: 404"))
        };
        let e = stream_fresh(not_found, &CancelToken::new()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NOT_FOUND);
    }
}
