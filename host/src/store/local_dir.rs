//! `--local-dir DIR`: real files at their repository paths, plus huggingface_hub's metadata
//! (`DIR/.cache/huggingface/download/<path>.metadata`: commit, etag, unix timestamp, one per
//! line), a `.gitignore` of `*` in `DIR/.cache/huggingface`, locks and partial files next to the
//! metadata.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::paths::{UnsafePath, join_repo_path};
use crate::resume::Partial;

/// A local directory target.
#[derive(Debug, Clone)]
pub struct LocalDir {
    /// The directory.
    pub root: PathBuf,
    /// The shared blob store of the cache, to copy Xet files from, unless it is turned off.
    pub shared: Option<crate::store::shared::SharedBlobs>,
}

/// The metadata huggingface_hub keeps for a local-dir file.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalMetadata {
    /// The commit the file came from.
    pub commit: String,
    /// The etag (sha256 or git oid).
    pub etag: String,
    /// When it was written (unix seconds).
    pub timestamp: f64,
}

impl LocalDir {
    /// A target at `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            shared: None,
        }
    }

    /// `DIR/.cache/huggingface/download`: metadata, locks and partial files.
    pub fn download_dir(&self) -> PathBuf {
        self.root
            .join(".cache")
            .join("huggingface")
            .join("download")
    }

    /// `DIR/<path>`.
    pub fn file_path(&self, path: &str) -> Result<PathBuf, UnsafePath> {
        join_repo_path(&self.root, path)
    }

    /// `DIR/.cache/huggingface/download/<path>.metadata`.
    pub fn metadata_path(&self, path: &str) -> Result<PathBuf, UnsafePath> {
        let p = join_repo_path(&self.download_dir(), path)?;
        Ok(with_suffix(&p, ".metadata"))
    }

    /// `DIR/.cache/huggingface/download/<path>.lock`.
    pub fn lock_path(&self, path: &str) -> Result<PathBuf, UnsafePath> {
        let p = join_repo_path(&self.download_dir(), path)?;
        Ok(with_suffix(&p, ".lock"))
    }

    /// `DIR/.cache/huggingface/download/<path>.<etag>.hubget-partial` and its state (never
    /// huggingface_hub's `.incomplete` name, see [`crate::resume::PARTIAL_SUFFIX`]).
    pub fn partial(&self, path: &str, etag: &str) -> Result<Partial, UnsafePath> {
        let p = join_repo_path(&self.download_dir(), path)?;
        Ok(Partial::new(with_suffix(
            &p,
            &format!(".{etag}.{}", crate::resume::PARTIAL_SUFFIX),
        )))
    }

    /// Reads a file's metadata.
    pub fn read_metadata(&self, path: &str) -> Option<LocalMetadata> {
        let text =
            super::untrusted::read_text(&self.metadata_path(path).ok()?, super::untrusted::SMALL)
                .ok()?;
        let mut lines = text.lines();
        let commit = lines.next()?.trim().to_owned();
        let etag = lines.next()?.trim().to_owned();
        let timestamp = lines.next()?.trim().parse().ok()?;
        Some(LocalMetadata {
            commit,
            etag,
            timestamp,
        })
    }

    /// Writes a file's metadata (after the file is in place, as huggingface_hub does).
    pub fn write_metadata(&self, path: &str, commit: &str, etag: &str) -> std::io::Result<()> {
        self.ensure_gitignore()?;
        let meta = self
            .metadata_path(path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        std::fs::create_dir_all(meta.parent().expect("parent"))?;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let mut tmp = tempfile::NamedTempFile::new_in(meta.parent().expect("parent"))?;
        write!(tmp, "{commit}\n{etag}\n{ts}\n")?;
        tmp.persist(&meta).map_err(|e| e.error)?;
        Ok(())
    }

    fn ensure_gitignore(&self) -> std::io::Result<()> {
        let dir = self.root.join(".cache").join("huggingface");
        std::fs::create_dir_all(&dir)?;
        let gi = dir.join(".gitignore");
        if !gi.exists() {
            std::fs::write(gi, "*")?;
        }
        super::cache::ensure_cachedir_tag(&dir)
    }

    /// Whether `path` is complete: the file has `size` bytes and its metadata names `etag`.
    /// As huggingface_hub, a file modified after its metadata was written is not trusted.
    pub fn is_complete(&self, path: &str, etag: &str, size: u64) -> bool {
        let Ok(file) = self.file_path(path) else {
            return false;
        };
        let Ok(m) = std::fs::metadata(&file) else {
            return false;
        };
        if !m.is_file() || m.len() != size {
            return false;
        }
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.read_metadata(path)
            .is_some_and(|md| md.etag == etag && mtime - 1.0 <= md.timestamp)
    }

    /// Every file with metadata whose file exists with its size: `(path, metadata, size)`,
    /// sorted by path.
    pub fn metadata_files(&self) -> Vec<(String, LocalMetadata, u64)> {
        let mut out: Vec<_> = super::walk::files(&self.download_dir(), false)
            .flatten()
            .filter_map(|(rel, _)| {
                let path = rel.strip_suffix(".metadata")?;
                let meta = self.read_metadata(path)?;
                let size = std::fs::metadata(self.file_path(path).ok()?).ok()?.len();
                Some((path.to_owned(), meta, size))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Moves a verified partial to `DIR/<path>` and records the metadata.
    pub fn install(
        &self,
        partial: &Partial,
        path: &str,
        commit: &str,
        etag: &str,
    ) -> std::io::Result<PathBuf> {
        let dest = self
            .file_path(path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        std::fs::create_dir_all(dest.parent().expect("parent"))?;
        if dest.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} is a directory", dest.display()),
            ));
        }
        crate::store::durable::land(&partial.data, &dest)?;
        partial.discard_state();
        self.write_metadata(path, commit, etag)?;
        Ok(dest)
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_three_lines_and_files_are_real() {
        let dir = tempfile::tempdir().unwrap();
        let ld = LocalDir::new(dir.path());
        let p = ld.partial("sub/w.bin", "e1").unwrap();
        assert!(
            p.data
                .ends_with(".cache/huggingface/download/sub/w.bin.e1.hubget-partial")
        );
        std::fs::create_dir_all(p.data.parent().unwrap()).unwrap();
        std::fs::write(&p.data, b"abc").unwrap();
        let dest = ld.install(&p, "sub/w.bin", &"c".repeat(40), "e1").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"abc");
        assert!(
            !std::fs::symlink_metadata(&dest)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let text = std::fs::read_to_string(
            dir.path()
                .join(".cache/huggingface/download/sub/w.bin.metadata"),
        )
        .unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "c".repeat(40));
        assert_eq!(lines[1], "e1");
        assert!(lines[2].parse::<f64>().unwrap() > 1.7e9);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".cache/huggingface/.gitignore")).unwrap(),
            "*"
        );
        assert!(ld.is_complete("sub/w.bin", "e1", 3));
        assert!(!ld.is_complete("sub/w.bin", "e2", 3));
        assert!(dir.path().join(".cache/huggingface/CACHEDIR.TAG").is_file());
        // Edited after the metadata was written: not trusted any more.
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
        let f = std::fs::OpenOptions::new().write(true).open(&dest).unwrap();
        f.set_modified(later).unwrap();
        assert!(!ld.is_complete("sub/w.bin", "e1", 3));
        assert!(ld.file_path("../x").is_err());
    }
}
