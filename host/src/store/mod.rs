//! Where files land: the Hugging Face cache ([`cache`]) or a local directory ([`local_dir`]),
//! durably ([`durable`]), partial files and locks, the validation of untrusted repository paths ([`paths`]) and the
//! free space of the target filesystem ([`space`]); [`walk`] lists the files below a folder;
//! [`remove`] is the only way the cache commands delete; [`untrusted`] reads what other users
//! of a shared cache could have written; [`xet_hash`] checks the names of the shared blob store.

pub mod cache;
pub mod durable;
pub mod local_dir;
pub mod lock;
pub mod paths;
pub mod remove;
pub mod scan;
pub mod shared;
pub mod space;
pub mod untrusted;
pub mod walk;
pub mod xet_hash;

use std::path::{Path, PathBuf};

use hubget_plugin_api::{ManifestFile, RepoType};
use serde::Serialize;

use crate::resume::Partial;
use crate::verify::{Expected, verify_file};
use cache::CacheRepo;
use local_dir::LocalDir;
use paths::UnsafePath;
use shared::{Reuse, SharedBlobs};

/// A file taken from the shared blob store.
#[derive(Debug, Clone)]
pub struct Reused {
    /// The store entry it came from.
    pub entry: PathBuf,
    /// Where the file is now (the snapshot link or the local file).
    pub local: PathBuf,
}

/// The state of one selected file in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Already in the target; nothing to fetch.
    Complete,
    /// The content is in the cache (same blob) but not linked for this commit yet.
    Linkable,
    /// Not in the target, but the cache's shared blob store holds an entry of the right size
    /// (it is hashed before it is used).
    InSharedStore,
    /// A partial file holds this many bytes a run will not fetch again (its checkpoint and
    /// the ranges known written past it).
    Partial(u64),
    /// Nothing on disk.
    Missing,
}

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

    /// This target reading from (and, for the cache, publishing to) `shared`.
    #[must_use]
    pub fn with_shared_blobs(mut self, shared: Option<SharedBlobs>) -> Self {
        match &mut self {
            Self::Cache(c) => c.shared = shared,
            Self::LocalDir(l) => l.shared = shared,
        }
        self
    }

    /// The shared blob store taking the Xet hashes of this target's manifest as given (see
    /// [`SharedBlobs::trusting_names`]).
    #[must_use]
    pub fn trusting_shared_names(self) -> Self {
        let shared = self.shared().cloned().map(SharedBlobs::trusting_names);
        self.with_shared_blobs(shared)
    }

    fn shared(&self) -> Option<&SharedBlobs> {
        match self {
            Self::Cache(c) => c.shared.as_ref(),
            Self::LocalDir(l) => l.shared.as_ref(),
        }
    }

    /// Whether the shared blob store holds an entry of `file`'s size (content not checked).
    fn in_shared_store(&self, file: &ManifestFile) -> bool {
        match (self.shared(), file.xet_hash.as_ref().into_option()) {
            (Some(s), Some(h)) => s.usable_entry(h.as_str(), file.size).is_some(),
            _ => false,
        }
    }

    /// Takes `file` from the shared blob store, if an entry there has its content (hashed
    /// first): the cache links its repo blob to the entry; a local dir gets a copy (a reflink
    /// where the filesystem can). Blocking. `Ok(None)` when there is no usable entry.
    pub fn reuse_shared(
        &self,
        file: &ManifestFile,
        commit: &str,
    ) -> std::io::Result<Option<Result<Reused, Reuse>>> {
        let (Some(shared), Some(xet_hash)) = (self.shared(), file.xet_hash.as_ref().into_option())
        else {
            return Ok(None);
        };
        let expected = Expected::for_file(file);
        let etag = etag_of(file).map_err(invalid)?;
        match self {
            Self::Cache(c) => {
                let blob = c.blob_path(&etag);
                std::fs::create_dir_all(blob.parent().expect("blobs"))?;
                match shared.link_into(&blob, xet_hash.as_str(), &expected) {
                    Reuse::Linked(entry) => {
                        let local = c.link(commit, &file.path, &etag)?;
                        Ok(Some(Ok(Reused { entry, local })))
                    }
                    Reuse::Missing => Ok(None),
                    bad @ Reuse::Bad { .. } => Ok(Some(Err(bad))),
                }
            }
            Self::LocalDir(l) => {
                let Some(entry) = shared.usable_entry(xet_hash.as_str(), file.size) else {
                    return Ok(None);
                };
                let partial = l.partial(&file.path, &etag).map_err(invalid)?;
                std::fs::create_dir_all(partial.data.parent().expect("parent"))?;
                // Into the partial opened without following a link planted at its name (a
                // co-user's link must never be written through); io::copy between files uses
                // copy_file_range: a reflink on filesystems that share extents.
                let mut from = std::fs::File::open(&entry)?;
                let mut to = crate::resume::open_nofollow(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true),
                    &partial.data,
                )?;
                std::io::copy(&mut from, &mut to)?;
                drop(to);
                if let Err(e) = verify_file(&partial.data, &expected) {
                    partial.discard();
                    return Ok(Some(Err(Reuse::Bad {
                        entry,
                        why: e.to_string(),
                    })));
                }
                let local = l.install(&partial, &file.path, commit, &etag)?;
                Ok(Some(Ok(Reused { entry, local })))
            }
        }
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
                match c.partial(&etag).good_bytes(&etag, file.size) {
                    0 if self.in_shared_store(file) => FileStatus::InSharedStore,
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
                    .map(|p| p.good_bytes(&etag, file.size))
                {
                    Ok(0) if self.in_shared_store(file) => FileStatus::InSharedStore,
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

    /// The directory the partial files of this target are written in (what an isolated
    /// plugin's sandbox lets it write).
    pub fn partial_dir(&self) -> PathBuf {
        match self {
            Self::Cache(c) => c.root.join("blobs"),
            Self::LocalDir(l) => l.download_dir(),
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
                let blob = c.install_blob(partial, &etag)?;
                if let (Some(shared), Some(xet_hash)) =
                    (&c.shared, file.xet_hash.as_ref().into_option())
                {
                    shared.publish(&blob, xet_hash.as_str(), &Expected::for_file(file));
                }
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
