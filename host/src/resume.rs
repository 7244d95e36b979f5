//! Resume state: the host owns every partial file and a small JSON state file next to it
//! (expected size, etag, commit, checkpoint = bytes known written from the start). The state is
//! keyed by etag, so a file that changed on the server never resumes from stale bytes.
//!
//! Crash safety: data is fsynced before the state that claims it, and the state is replaced
//! atomically (temp file + rename).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

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
        match (self.load_state(), std::fs::metadata(&self.data)) {
            (Some(s), Ok(m)) if s.etag == etag && s.size == size && m.len() >= s.checkpoint => {
                s.checkpoint.min(size)
            }
            _ => 0,
        }
    }

    /// Prepares the partial file for a new attempt: keeps the verified prefix of a matching
    /// state (truncating anything after the checkpoint), else starts an empty file. Returns the
    /// offset to fetch from.
    pub fn prepare(&self, etag: &str, size: u64, commit: &str) -> std::io::Result<u64> {
        if let Some(parent) = self.data.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let offset = self.resumable(etag, size);
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.data)?;
        f.set_len(offset)?;
        f.sync_all()?;
        self.save(&ResumeState {
            version: 1,
            etag: etag.to_owned(),
            size,
            commit: commit.to_owned(),
            checkpoint: offset,
        })?;
        Ok(offset)
    }

    /// Persists a checkpoint: fsync the data first, then replace the state atomically.
    pub fn checkpoint(&self, state: &ResumeState) -> std::io::Result<()> {
        if let Ok(f) = File::open(&self.data) {
            f.sync_data()?;
        }
        self.save(state)
    }

    fn save(&self, state: &ResumeState) -> std::io::Result<()> {
        let mut tmp = self.state.clone().into_os_string();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(
                serde_json::to_string(state)
                    .expect("serialisable")
                    .as_bytes(),
            )?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.state)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
