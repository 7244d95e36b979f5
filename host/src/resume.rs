//! Resume state: the host owns every partial file and a small JSON state file next to it
//! (expected size, etag, commit, checkpoint = bytes known written from the start, and the
//! ranges past it known written: backends that write ranges out of order report them with
//! `RANGE_WRITTEN` events). The state is keyed by etag, so a file that changed on the server
//! never resumes from stale bytes. A resumed file is always verified whole at the end.
//!
//! Crash safety: data is fsynced before the state that claims it, and the state is replaced
//! atomically (temp file + rename).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hubget_plugin_api::protocol::merge_ranges;
use serde::{Deserialize, Serialize};

/// The extension of hubget's partial files (`<etag>.hubget-partial`); the state file adds
/// `.json`. Deliberately not huggingface_hub's `incomplete`.
pub const PARTIAL_SUFFIX: &str = "hubget-partial";

/// The partial file of one blob and its state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// The partial data (`<etag>.hubget-partial`). Never `*.incomplete`: huggingface_hub before
    /// 1.18 resumes by appending to `<etag>.incomplete` and checks only the size, so it must
    /// never pick up our unverified bytes (parallel ranges leave holes past the checkpoint).
    pub data: PathBuf,
    /// The resume state (`<etag>.hubget-partial.json`).
    pub state: PathBuf,
}

/// What the state file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeState {
    /// Format version.
    pub version: u32,
    /// The etag (sha256 or git oid) of the blob being written.
    pub etag: String,
    /// The expected size.
    pub size: u64,
    /// The commit the file was planned from (informational).
    pub commit: String,
    /// Bytes `0..checkpoint` are on disk.
    pub checkpoint: u64,
    /// Ranges `[start, end)` past the checkpoint that are on disk too (merged, ascending).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub written: Vec<[u64; 2]>,
}

/// `written` past `checkpoint` (clipped to `..size`), merged, as the state stores them.
pub fn ranges_past(written: &[Range<u64>], checkpoint: u64, size: u64) -> Vec<[u64; 2]> {
    merge_ranges(
        written
            .iter()
            .map(|r| r.start.max(checkpoint)..r.end.min(size))
            .collect(),
    )
    .into_iter()
    .map(|r| [r.start, r.end])
    .collect()
}

impl Partial {
    /// The partial for `data` (`.../<etag>.hubget-partial`), state next to it
    /// (`<data>.json`).
    pub fn new(data: PathBuf) -> Self {
        let mut state = data.clone().into_os_string();
        state.push(".json");
        Self {
            data,
            state: PathBuf::from(state),
        }
    }

    /// Reads the state, if it exists and parses.
    pub fn load_state(&self) -> Option<ResumeState> {
        let text = std::fs::read_to_string(&self.state).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// How many good bytes a run could resume from (without changing anything).
    pub fn resumable(&self, etag: &str, size: u64) -> u64 {
        self.resumable_ranges(etag, size).0
    }

    /// Every byte a run would not fetch again: the checkpoint plus the ranges known written
    /// past it (what `--dry-run` and the plan count as done).
    pub fn good_bytes(&self, etag: &str, size: u64) -> u64 {
        let (offset, ranges) = self.resumable_ranges(etag, size);
        ranges
            .iter()
            .fold(offset, |n, r| n.saturating_add(r.end - r.start))
    }

    /// The checkpoint a run could resume from and the ranges past it known written (merged,
    /// ascending, each within the data file's length), with the ranges that touch the
    /// checkpoint folded into it.
    pub fn resumable_ranges(&self, etag: &str, size: u64) -> (u64, Vec<Range<u64>>) {
        let (state, len) = match (self.load_state(), std::fs::metadata(&self.data)) {
            (Some(s), Ok(m)) if s.etag == etag && s.size == size && m.len() >= s.checkpoint => {
                (s, m.len())
            }
            _ => return (0, Vec::new()),
        };
        let mut offset = state.checkpoint.min(size);
        let mut ranges: Vec<Range<u64>> = merge_ranges(
            state
                .written
                .iter()
                .map(|[a, b]| (*a).max(offset)..(*b).min(size))
                .collect(),
        )
        .into_iter()
        .filter(|r| r.end <= len)
        .collect();
        while ranges.first().is_some_and(|r| r.start <= offset) {
            offset = offset.max(ranges.remove(0).end);
        }
        (offset, ranges)
    }

    /// Prepares the partial file for a new attempt: keeps the verified prefix of a matching
    /// state (truncating anything after the checkpoint), else starts an empty file. Returns the
    /// offset to fetch from.
    pub fn prepare(&self, etag: &str, size: u64, commit: &str) -> std::io::Result<u64> {
        self.prepare_ranges(etag, size, commit, false)
            .map(|(o, _)| o)
    }

    /// Like [`prepare`](Self::prepare), but with `keep_ranges` also keeps the ranges past the
    /// checkpoint that the state records as written (truncating after the last of them) and
    /// returns them; without it they are dropped.
    pub fn prepare_ranges(
        &self,
        etag: &str,
        size: u64,
        commit: &str,
        keep_ranges: bool,
    ) -> std::io::Result<(u64, Vec<Range<u64>>)> {
        if let Some(parent) = self.data.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let (offset, mut ranges) = self.resumable_ranges(etag, size);
        if !keep_ranges {
            ranges.clear();
        }
        let len = ranges.last().map_or(offset, |r| r.end);
        let f = open_nofollow(
            OpenOptions::new().create(true).write(true).truncate(false),
            &self.data,
        )?;
        f.set_len(len)?;
        f.sync_all()?;
        self.save(&ResumeState {
            version: 1,
            etag: etag.to_owned(),
            size,
            commit: commit.to_owned(),
            checkpoint: offset,
            written: ranges_past(&ranges, offset, size),
        })?;
        Ok((offset, ranges))
    }

    /// Persists a checkpoint: fsync the data first, then replace the state atomically.
    pub fn checkpoint(&self, state: &ResumeState) -> std::io::Result<()> {
        if let Ok(f) = File::open(&self.data) {
            f.sync_data()?;
        }
        self.save(state)
    }

    fn save(&self, state: &ResumeState) -> std::io::Result<()> {
        // A new file with an unpredictable name (O_EXCL), renamed over the state: a link
        // planted at the state's or a temporary's name is never followed.
        let dir = self.state.parent().unwrap_or(std::path::Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".hubget-state-")
            .tempfile_in(dir)?;
        tmp.write_all(
            serde_json::to_string(state)
                .expect("serialisable")
                .as_bytes(),
        )?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.state).map_err(|e| e.error)?;
        Ok(())
    }

    /// Deletes the partial file and its state (after a failed verification or a success).
    pub fn discard(&self) {
        remove_if_exists(&self.data);
        remove_if_exists(&self.state);
    }

    /// Deletes only the state (after the data was renamed into place).
    pub fn discard_state(&self) {
        remove_if_exists(&self.state);
    }
}

fn remove_if_exists(p: &Path) {
    if let Err(e) = std::fs::remove_file(p)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        log::warn!("cannot remove {}: {e}", p.display());
    }
}

/// Opens `path` with `options`, refusing to follow a symbolic link at it (`O_NOFOLLOW`): a link
/// planted in the cache is reported, and nothing outside the cache is touched.
pub fn open_nofollow(options: &mut OpenOptions, path: &std::path::Path) -> std::io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return std::io::Error::other(format!(
                "{} is a symbolic link: refusing to follow it (something planted it in the cache)",
                path.display()
            ));
        }
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_partial_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, b"precious").unwrap();
        let p = Partial::new(dir.path().join("blobs/e1.hubget-partial"));
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::os::unix::fs::symlink(&outside, &p.data).unwrap();
        let e = p.prepare_ranges("e1", 100, "c", true).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        // A link planted at the state's name is replaced, not written through.
        std::fs::remove_file(&p.data).unwrap();
        std::os::unix::fs::symlink(&outside, &p.state).unwrap();
        p.prepare_ranges("e1", 100, "c", true).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious");
        assert!(
            !std::fs::symlink_metadata(&p.state)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn prepare_resumes_only_a_matching_state_and_truncates_to_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partial::new(dir.path().join("blobs/abc.hubget-partial"));
        assert_eq!(p.prepare("abc", 100, "c1").unwrap(), 0);
        std::fs::write(&p.data, vec![7u8; 60]).unwrap();
        p.checkpoint(&ResumeState {
            version: 1,
            etag: "abc".into(),
            size: 100,
            commit: "c1".into(),
            checkpoint: 40,
            written: Vec::new(),
        })
        .unwrap();
        assert_eq!(p.resumable("abc", 100), 40);
        assert_eq!(p.prepare("abc", 100, "c1").unwrap(), 40);
        assert_eq!(std::fs::metadata(&p.data).unwrap().len(), 40);
        // A different etag (file changed upstream) or size never resumes.
        assert_eq!(p.resumable("other", 100), 0);
        assert_eq!(p.resumable("abc", 99), 0);
        // A data file shorter than the checkpoint claims is not trusted.
        std::fs::write(&p.data, vec![7u8; 10]).unwrap();
        assert_eq!(p.prepare("abc", 100, "c1").unwrap(), 0);
        p.discard();
        assert!(!p.data.exists() && !p.state.exists());
    }

    #[test]
    fn prepare_ranges_keeps_written_ranges_within_the_file_and_folds_those_at_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partial::new(dir.path().join("blobs/abc.hubget-partial"));
        p.prepare("abc", 100, "c1").unwrap();
        std::fs::write(&p.data, vec![7u8; 90]).unwrap();
        p.checkpoint(&ResumeState {
            version: 1,
            etag: "abc".into(),
            size: 100,
            commit: "c1".into(),
            checkpoint: 10,
            // 10..20 touches the checkpoint; 80..95 lies past the file's end (not trusted).
            written: vec![[10, 20], [30, 40], [50, 60], [80, 95]],
        })
        .unwrap();
        assert_eq!(p.resumable("abc", 100), 20);
        assert_eq!(
            p.good_bytes("abc", 100),
            40,
            "the checkpoint and 30..40, 50..60"
        );
        let (offset, ranges) = p.prepare_ranges("abc", 100, "c1", true).unwrap();
        assert_eq!((offset, ranges), (20, vec![30..40, 50..60]));
        // Truncated after the last written range; the state says the same.
        assert_eq!(std::fs::metadata(&p.data).unwrap().len(), 60);
        let state = p.load_state().unwrap();
        assert_eq!(
            (state.checkpoint, state.written),
            (20, vec![[30, 40], [50, 60]])
        );
        // Without `keep_ranges` they are dropped and the file ends at the checkpoint.
        assert_eq!(
            p.prepare_ranges("abc", 100, "c1", false).unwrap(),
            (20, vec![])
        );
        assert_eq!(std::fs::metadata(&p.data).unwrap().len(), 20);
        assert!(p.load_state().unwrap().written.is_empty());
    }
}
