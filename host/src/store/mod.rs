//! Where files land: the Hugging Face cache ([`cache`]) or a local directory ([`local_dir`]),
//! partial files and locks, the validation of untrusted repository paths ([`paths`]) and the
//! free space of the target filesystem ([`space`]).

pub mod cache;
pub mod local_dir;
pub mod lock;
pub mod paths;
pub mod space;

use std::path::{Path, PathBuf};

use hubget_plugin_api::{ManifestFile, RepoType};

use crate::plan::FileStatus;
use crate::resume::Partial;
use cache::CacheRepo;
use local_dir::LocalDir;
use paths::UnsafePath;

/// The blob name of a file: sha256 for LFS/Xet files, the git oid for regular files.
/// Refused unless it is plain hex, since it becomes a file name.
pub fn etag_of(file: &ManifestFile) -> Result<String, UnsafePath> {
    let etag = match file.sha256.as_ref().into_option() {
        Some(s) => s.as_str().to_ascii_lowercase(),
        None => file.git_oid.as_str().to_ascii_lowercase(),
    };
    if etag.is_empty() || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(UnsafePath {
            path: file.path.to_string(),
            reason: "its sha256/git oid is not a hex digest",
        });
    }
    Ok(etag)
}

/// Where a download goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// The Hugging Face cache.
    Cache(CacheRepo),
    /// `--local-dir`.
    LocalDir(LocalDir),
}

impl Target {
    /// The cache folder of a repository.
    pub fn cache(cache_dir: &Path, repo_type: RepoType, repo_id: &str) -> Self {
        Self::Cache(CacheRepo::new(cache_dir, repo_type, repo_id))
    }

    /// A local directory.
    pub fn local_dir(dir: &Path) -> Self {
        Self::LocalDir(LocalDir::new(dir))
    }

    /// What is on disk for `file` at `commit`.
    pub fn status(&self, file: &ManifestFile, commit: &str) -> FileStatus {
        let Ok(etag) = etag_of(file) else {
            return FileStatus::Missing;
        };
        match self {
            Self::Cache(c) => {
                let blob_ok =
                    std::fs::metadata(c.blob_path(&etag)).is_ok_and(|m| m.len() == file.size);
                if blob_ok {
                    let linked = c
                        .snapshot_path(commit, &file.path)
                        .ok()
                        .and_then(|p| std::fs::metadata(p).ok())
                        .is_some_and(|m| m.len() == file.size);
                    return if linked {
                        FileStatus::Complete
                    } else {
                        FileStatus::Linkable
                    };
                }
                match c.partial(&etag).resumable(&etag, file.size) {
                    0 => FileStatus::Missing,
                    n => FileStatus::Partial(n),
                }
            }
            Self::LocalDir(l) => {
                if l.is_complete(&file.path, &etag, file.size) {
                    return FileStatus::Complete;
                }
                match l
                    .partial(&file.path, &etag)
                    .map(|p| p.resumable(&etag, file.size))
                {
                    Ok(0) | Err(_) => FileStatus::Missing,
                    Ok(n) => FileStatus::Partial(n),
                }
            }
        }
    }

    /// The partial file for `file`.
    pub fn partial(&self, file: &ManifestFile) -> Result<Partial, UnsafePath> {
        let etag = etag_of(file)?;
        match self {
            Self::Cache(c) => Ok(c.partial(&etag)),
            Self::LocalDir(l) => l.partial(&file.path, &etag),
        }
    }

    /// The lock that guards writing `file`.
    pub fn lock_path(&self, file: &ManifestFile) -> Result<PathBuf, UnsafePath> {
        let etag = etag_of(file)?;
        match self {
            Self::Cache(c) => Ok(c.lock_path(&etag)),
            Self::LocalDir(l) => l.lock_path(&file.path),
        }
    }

    /// Where `file` ends up (the snapshot link or the local file).
    pub fn final_path(&self, file: &ManifestFile, commit: &str) -> Result<PathBuf, UnsafePath> {
        match self {
            Self::Cache(c) => c.snapshot_path(commit, &file.path),
            Self::LocalDir(l) => l.file_path(&file.path),
        }
    }

    /// The directory whose filesystem receives the bytes (partials, blobs): the cache directory
    /// or the local dir. Named in disk-full errors and measured by the free-space preflight.
    pub fn space_dir(&self) -> &Path {
        match self {
            Self::Cache(c) => &c.cache_dir,
            Self::LocalDir(l) => &l.root,
        }
    }

    /// The folder to print at the end (snapshot folder or local dir).
    pub fn root_path(&self, commit: &str) -> PathBuf {
        match self {
            Self::Cache(c) => c.snapshot_dir(commit),
            Self::LocalDir(l) => l.root.clone(),
        }
    }

    /// Moves a verified partial into place; returns the final path.
    pub fn install(
        &self,
        partial: &Partial,
        file: &ManifestFile,
        commit: &str,
    ) -> std::io::Result<PathBuf> {
        let etag = etag_of(file).map_err(invalid)?;
        match self {
            Self::Cache(c) => {
                c.install_blob(partial, &etag)?;
                c.link(commit, &file.path, &etag)
            }
            Self::LocalDir(l) => l.install(partial, &file.path, commit, &etag),
        }
    }

    /// Completes a file whose content is already present (cache: creates the snapshot link).
    pub fn link_existing(&self, file: &ManifestFile, commit: &str) -> std::io::Result<PathBuf> {
        let etag = etag_of(file).map_err(invalid)?;
        match self {
            Self::Cache(c) => c.link(commit, &file.path, &etag),
            Self::LocalDir(l) => {
                l.write_metadata(&file.path, commit, &etag)?;
                l.file_path(&file.path).map_err(invalid)
            }
        }
    }

    /// Whether `file` is now complete (re-checked after taking its lock).
    pub fn is_complete(&self, file: &ManifestFile, commit: &str) -> bool {
        matches!(
            self.status(file, commit),
            FileStatus::Complete | FileStatus::Linkable
        )
    }

    /// Records the revision -> commit mapping (cache only).
    pub fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        match self {
            Self::Cache(c) => c.write_ref(revision, commit),
            Self::LocalDir(_) => Ok(()),
        }
    }

    /// Records that `path` does not exist at `commit` (cache only).
    pub fn mark_missing(&self, commit: &str, path: &str) -> std::io::Result<()> {
        match self {
            Self::Cache(c) => c.mark_missing(commit, path),
            Self::LocalDir(_) => Ok(()),
        }
    }
}

fn invalid(e: UnsafePath) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
}
