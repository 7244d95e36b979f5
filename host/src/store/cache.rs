//! The Hugging Face cache layout, as huggingface_hub reads and writes it:
//!
//! ```text
//! <cache>/<models|datasets|spaces>--<org>--<name>/
//!     blobs/<etag>                      etag = sha256 (LFS/Xet) or git blob sha1 (regular)
//!     snapshots/<commit>/<path>         relative symlink -> ../../blobs/<etag> (one more ../ per folder)
//!     refs/<revision>                   the commit sha, no newline, written atomically
//!     .no_exist/<commit>/<path>         empty marker: the file does not exist at that commit
//! <cache>/.locks/<repo folder>/<etag>.lock
//! <cache>/blobs/<xx>/<xet hash>         the shared blob store (see [`super::shared`]): a Xet
//!                                       file's repo blob is a symlink into it
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use hubget_plugin_api::RepoType;

use super::paths::{UnsafePath, join_repo_path, validate_repo_path};
use super::shared::SharedBlobs;
use crate::resume::{PARTIAL_SUFFIX, Partial};

/// Writes `CACHEDIR.TAG` (the standard tag that backup tools skip) in `dir` if it is missing.
pub fn ensure_cachedir_tag(dir: &Path) -> std::io::Result<()> {
    let tag = dir.join("CACHEDIR.TAG");
    if tag.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        tag,
        "Signature: 8a477f597d28d172789f06886806bc55\n\
         # This file is a cache directory tag created by hubget.\n\
         # For information about cache directory tags see https://bford.info/cachedir/\n",
    )
}

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct CacheRepo {
    /// The cache directory (`HF_HUB_CACHE`).
    pub cache_dir: PathBuf,
    /// `models--org--name`.
    pub folder: String,
    /// `<cache>/<folder>`.
    pub root: PathBuf,
    /// The cache's shared blob store, unless it is turned off.
    pub shared: Option<SharedBlobs>,
}

impl CacheRepo {
    /// The folder of `repo_id` in `cache_dir`.
    pub fn new(cache_dir: &Path, repo_type: RepoType, repo_id: &str) -> Self {
        let folder = repo_type.cache_folder(repo_id);
        Self {
            cache_dir: cache_dir.to_path_buf(),
            root: cache_dir.join(&folder),
            folder,
            shared: None,
        }
    }

    /// `blobs/<etag>`.
    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.root.join("blobs").join(etag)
    }

    /// `snapshots/<commit>`.
    pub fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.root.join("snapshots").join(commit)
    }

    /// `snapshots/<commit>/<path>`.
    pub fn snapshot_path(&self, commit: &str, path: &str) -> Result<PathBuf, UnsafePath> {
        join_repo_path(&self.snapshot_dir(commit), path)
    }

    /// `<cache>/.locks/<folder>/<etag>.lock`.
    pub fn lock_path(&self, etag: &str) -> PathBuf {
        self.cache_dir
            .join(".locks")
            .join(&self.folder)
            .join(format!("{etag}.lock"))
    }

    /// `blobs/<etag>.hubget-partial` and its resume state (`.hubget-partial.json`). Not
    /// `.incomplete`: that is huggingface_hub's name, which old clients resume by appending.
    pub fn partial(&self, etag: &str) -> Partial {
        Partial::new(
            self.root
                .join("blobs")
                .join(format!("{etag}.{PARTIAL_SUFFIX}")),
        )
    }

    /// Writes `refs/<revision>` = `commit` atomically, without a newline. Nothing is written
    /// when the revision is the commit itself.
    pub fn write_ref(&self, revision: &str, commit: &str) -> std::io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = join_repo_path(&self.root.join("refs"), revision)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        if super::untrusted::read_text(&path, super::untrusted::SMALL).is_ok_and(|c| c == commit) {
            return Ok(());
        }
        let parent = path.parent().expect("refs/ parent");
        std::fs::create_dir_all(parent)?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        tmp.write_all(commit.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The commit `refs/<revision>` points to.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        validate_repo_path(revision).ok()?;
        let path = join_repo_path(&self.root.join("refs"), revision).ok()?;
        let text = super::untrusted::read_text(&path, super::untrusted::SMALL).ok()?;
        Some(text.trim().to_owned())
    }

    /// Points `snapshots/<commit>/<path>` at `blobs/<etag>` with a relative symlink (a copy of
    /// the blob where the filesystem has no symlinks).
    pub fn link(&self, commit: &str, path: &str, etag: &str) -> std::io::Result<PathBuf> {
        let link = self
            .snapshot_path(commit, path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let depth = path.split('/').count() - 1;
        let mut target = PathBuf::new();
        for _ in 0..depth + 2 {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        std::fs::create_dir_all(link.parent().expect("snapshot parent"))?;
        for _ in 0..2 {
            match std::fs::read_link(&link) {
                Ok(existing) if existing == target => return Ok(link),
                Ok(_) => std::fs::remove_file(&link)?,
                Err(_) if std::fs::symlink_metadata(&link).is_ok() => std::fs::remove_file(&link)?,
                Err(_) => {}
            }
            match symlink(&target, &link) {
                Ok(()) => return Ok(link),
                // Another process made it a moment ago: look again (never write through it).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) if symlinks_unsupported(&e) => {
                    // A filesystem without symlinks: huggingface_hub's "degraded" mode copies the
                    // blob, into a new file renamed over the link path (never by opening the
                    // link path for writing, which would follow a link planted there).
                    log::warn!(
                        "cannot create symlink {} ({e}); copying the blob instead",
                        link.display()
                    );
                    let dir = link.parent().expect("snapshot parent");
                    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
                    std::io::copy(&mut std::fs::File::open(self.blob_path(etag))?, &mut tmp)?;
                    tmp.as_file().sync_all()?;
                    tmp.persist(&link).map_err(|e| e.error)?;
                    return Ok(link);
                }
                Err(e) => return Err(e),
            }
        }
        match std::fs::read_link(&link) {
            Ok(existing) if existing == target => Ok(link),
            _ => Err(std::io::Error::other(format!(
                "{} keeps changing under another process",
                link.display()
            ))),
        }
    }

    /// Creates the `.no_exist/<commit>/<path>` marker.
    pub fn mark_missing(&self, commit: &str, path: &str) -> std::io::Result<()> {
        let marker = join_repo_path(&self.root.join(".no_exist").join(commit), path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        std::fs::create_dir_all(marker.parent().expect("marker parent"))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(marker)?;
        Ok(())
    }

    /// Moves a verified partial into `blobs/<etag>` (if another process finished the same blob
    /// first, keeps theirs) and removes the resume state.
    pub fn install_blob(&self, partial: &Partial, etag: &str) -> std::io::Result<PathBuf> {
        let _ = ensure_cachedir_tag(&self.cache_dir);
        let blob = self.blob_path(etag);
        let dir = blob.parent().expect("blobs");
        std::fs::create_dir_all(dir)?;
        crate::store::durable::land(&partial.data, &blob)?;
        partial.discard_state();
        Ok(blob)
    }

    /// Every file linked in `snapshots/<commit>`, with its size (relative `/` paths, sorted).
    pub fn snapshot_files(&self, commit: &str) -> std::io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for file in super::walk::files(&self.snapshot_dir(commit), true) {
            let (rel, entry) = file?;
            out.push((rel, entry.metadata()?.len()));
        }
        out.sort();
        Ok(out)
    }
}

/// Whether a symlink error means the filesystem (or the user's rights) has no symlinks.
fn symlinks_unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
    ) || e.raw_os_error() == Some(libc_eperm())
}

#[cfg(unix)]
fn libc_eperm() -> i32 {
    libc::EPERM
}

#[cfg(not(unix))]
fn libc_eperm() -> i32 {
    1
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    // Windows without symlink rights: huggingface_hub's "degraded" mode copies the blob.
    let blob = link.parent().expect("parent").join(target);
    std::fs::copy(blob, link).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_are_never_named_like_huggingface_hubs() {
        // huggingface_hub < 1.18 appends to `<etag>.incomplete`: ours must not be picked up.
        let dir = tempfile::tempdir().unwrap();
        let repo = CacheRepo::new(dir.path(), RepoType::MODEL, "org/name");
        let p = repo.partial("e1");
        assert_eq!(p.data, repo.root.join("blobs/e1.hubget-partial"));
        assert_eq!(p.state, repo.root.join("blobs/e1.hubget-partial.json"));
        let local = crate::store::local_dir::LocalDir::new(dir.path()).partial("w.bin", "e1");
        let local = local.unwrap();
        for path in [&p.data, &p.state, &local.data, &local.state] {
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(!name.contains("incomplete"), "{name}");
        }
    }

    #[test]
    fn a_link_made_by_another_process_never_truncates_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let repo = CacheRepo::new(dir.path(), RepoType::MODEL, "org/name");
        let commit = "c".repeat(40);
        std::fs::create_dir_all(repo.root.join("blobs")).unwrap();
        std::fs::write(repo.blob_path("e1"), b"the weights").unwrap();
        // Many racing linkers of the same path, as two processes linking an already cached file.
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        repo.link(&commit, "w.bin", "e1").unwrap();
                    }
                });
            }
        });
        assert_eq!(std::fs::read(repo.blob_path("e1")).unwrap(), b"the weights");
        let link = repo.snapshot_path(&commit, "w.bin").unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../blobs/e1")
        );
    }

    #[test]
    fn layout_matches_huggingface_hub() {
        let dir = tempfile::tempdir().unwrap();
        let repo = CacheRepo::new(dir.path(), RepoType::DATASET, "org/name");
        assert_eq!(repo.folder, "datasets--org--name");
        assert_eq!(RepoType::MODEL.cache_folder("gpt2"), "models--gpt2");
        let commit = "a".repeat(40);
        std::fs::create_dir_all(repo.root.join("blobs")).unwrap();
        std::fs::write(repo.blob_path("e1"), b"x").unwrap();
        let link = repo.link(&commit, "sub/deep/f.bin", "e1").unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../../../../blobs/e1")
        );
        assert_eq!(std::fs::read(&link).unwrap(), b"x");
        let top = repo.link(&commit, "f.bin", "e1").unwrap();
        assert_eq!(
            std::fs::read_link(&top).unwrap(),
            Path::new("../../blobs/e1")
        );
        repo.write_ref("main", &commit).unwrap();
        assert_eq!(
            std::fs::read_to_string(repo.root.join("refs/main")).unwrap(),
            commit
        );
        repo.write_ref("refs/pr/1", &commit).unwrap();
        assert_eq!(repo.read_ref("refs/pr/1").unwrap(), commit);
        repo.write_ref(&commit, &commit).unwrap();
        assert!(!repo.root.join("refs").join(&commit).exists());
        repo.mark_missing(&commit, "nope/x.txt").unwrap();
        assert!(
            repo.root
                .join(".no_exist")
                .join(&commit)
                .join("nope/x.txt")
                .is_file()
        );
        assert_eq!(
            repo.lock_path("e1"),
            dir.path().join(".locks/datasets--org--name/e1.lock")
        );
        assert_eq!(
            repo.snapshot_files(&commit).unwrap(),
            vec![("f.bin".to_owned(), 1), ("sub/deep/f.bin".to_owned(), 1)]
        );
        assert!(repo.snapshot_path(&commit, "../x").is_err());
    }
}
