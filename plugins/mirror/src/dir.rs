//! Directory mirrors: a Hugging Face cache directory (a team cache on NFS, another user's cache),
//! read-only. Resolve reads `refs/` and `snapshots/`; fetch copies from `blobs/`.
//!
//! Layout (the Hugging Face cache's): `<root>/<plural>--<owner>--<name>/{blobs/<etag>,
//! snapshots/<commit>/<path> -> ../../blobs/<etag>, refs/<rev>}`, where the etag is the sha256 of
//! the content for LFS and Xet files (64 hex) and the git blob sha1 for regular files (40 hex).
//!
//! Nothing here touches the network.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use hubget_plugin_api::std_types::{ROption, RString};
use hubget_plugin_api::{
    CancelToken, EventKind, FetchItem, Manifest, ManifestFile, Progress, ProgressEvent, RepoType,
};

use crate::error::MirrorError;

/// Bytes copied between two progress events and cancel checks (small enough that a slow shared
/// filesystem still sees the cancel token within about a second).
const COPY_CHUNK: u64 = 2 * 1024 * 1024;

/// One cache directory used as a mirror.
#[derive(Debug, Clone)]
pub struct DirMirror {
    root: PathBuf,
}

/// How a file was copied out of a directory mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// A whole-file reflink (`FICLONE`): no data copied, blocks shared.
    Reflink,
    /// `std::io::copy` between files (`copy_file_range` on Linux, in-kernel; a reflink on
    /// filesystems that do that for it).
    Copy,
}

impl CopyMethod {
    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reflink => "reflink",
            Self::Copy => "copy",
        }
    }
}

/// What one blob name says about the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Etag {
    /// 64 hex: the sha256 of the content (LFS and Xet files).
    Sha256(String),
    /// 40 hex: the git blob sha1 of the content (regular files).
    GitOid(String),
}

impl Etag {
    /// Classifies a blob file name; `None` for names that are no hash.
    pub fn parse(name: &str) -> Option<Self> {
        let hex = name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        match name.len() {
            64 if hex => Some(Self::Sha256(name.to_owned())),
            40 if hex => Some(Self::GitOid(name.to_owned())),
            _ => None,
        }
    }

    fn matches(&self, file: &ManifestFile) -> bool {
        match self {
            Self::Sha256(h) => file
                .sha256
                .as_ref()
                .into_option()
                .is_some_and(|s| s.as_str() == h),
            Self::GitOid(h) => file.git_oid.as_str() == h,
        }
    }
}

/// Whether `s` is a 40-hex commit sha (lowercase).
pub fn is_commit(s: &str) -> bool {
    matches!(Etag::parse(s), Some(Etag::GitOid(_)))
}

/// `<plural>--<owner>--<name>`, after checking that the id cannot escape the root.
pub fn repo_folder(repo_type: RepoType, repo_id: &str) -> Result<String, MirrorError> {
    let bad = |why| MirrorError::BadName {
        what: "repo id",
        value: repo_id.to_owned(),
        why,
    };
    if repo_type.plural().is_none() {
        return Err(bad("unknown repo type"));
    }
    let parts: Vec<&str> = repo_id.split('/').collect();
    if parts.len() > 2 {
        return Err(bad("more than one `/`"));
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains(['\\', '\0']))
    {
        return Err(bad("empty, `.` or `..` part, or a backslash"));
    }
    Ok(repo_type.cache_folder(repo_id))
}

/// Joins a `/`-separated relative path under `base`, refusing anything that could leave it.
fn join_relative(base: &Path, rel: &str, what: &'static str) -> Result<PathBuf, MirrorError> {
    let bad = |why| MirrorError::BadName {
        what,
        value: rel.to_owned(),
        why,
    };
    if rel.is_empty() || rel.contains(['\\', '\0']) {
        return Err(bad("empty, or a backslash or NUL in it"));
    }
    let mut out = base.to_path_buf();
    for part in rel.split('/') {
        match Path::new(part).components().next() {
            Some(Component::Normal(_)) if Path::new(part).components().count() == 1 => {
                out.push(part)
            }
            _ => return Err(bad("absolute, or an empty, `.` or `..` segment")),
        }
    }
    Ok(out)
}

impl DirMirror {
    /// A mirror over the cache directory `root` (the folder that holds `models--org--name`).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn repo_dir(&self, repo_type: RepoType, repo_id: &str) -> Result<PathBuf, MirrorError> {
        Ok(self.root.join(repo_folder(repo_type, repo_id)?))
    }

    /// The commit `revision` stands for in this cache: a 40-hex sha with a snapshot, or the
    /// content of `refs/<revision>` when that snapshot exists.
    pub fn commit_for(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
    ) -> Result<String, MirrorError> {
        let repo = self.repo_dir(repo_type, repo_id)?;
        let not_found = || {
            MirrorError::NotFound(format!(
                "directory mirror {} holds no snapshot of {repo_type} {repo_id} at `{revision}`",
                self.root.display()
            ))
        };
        let commit = if is_commit(revision) {
            revision.to_owned()
        } else {
            let path = join_relative(&repo.join("refs"), revision, "revision")?;
            match fs::read_to_string(&path) {
                Ok(text) => text.trim().to_owned(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(not_found()),
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => return Err(not_found()),
                Err(e) => return Err(MirrorError::io("reading", path, e)),
            }
        };
        if !is_commit(&commit) || !repo.join("snapshots").join(&commit).is_dir() {
            return Err(not_found());
        }
        Ok(commit)
    }

    /// The manifest of the snapshot `revision` resolves to: every file of the snapshot whose
    /// blob name is a hash. LFS/Xet files get their sha256 and an empty `git_oid` (the git oid
    /// of their pointer is not in the cache); regular files get their git oid and no sha256;
    /// no file gets a Xet hash. Files whose blob name is no hash (a copy instead of a symlink)
    /// are left out: the host could not verify them.
    pub fn resolve(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
    ) -> Result<Manifest, MirrorError> {
        let commit = self.commit_for(repo_type, repo_id, revision)?;
        let repo = self.repo_dir(repo_type, repo_id)?;
        let snapshot = repo.join("snapshots").join(&commit);
        let blobs = repo.join("blobs");
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        walk(&snapshot, "", &mut |rel, path| {
            match snapshot_blob(path, &blobs)? {
                Some((etag, size)) => files.push(ManifestFile {
                    path: RString::from(rel),
                    size,
                    git_oid: match &etag {
                        Etag::GitOid(h) => RString::from(h.as_str()),
                        Etag::Sha256(_) => RString::new(),
                    },
                    sha256: match etag {
                        Etag::Sha256(h) => ROption::RSome(RString::from(h)),
                        Etag::GitOid(_) => ROption::RNone,
                    },
                    xet_hash: ROption::RNone,
                }),
                None => skipped.push(rel.to_owned()),
            }
            Ok(())
        })?;
        if !skipped.is_empty() {
            log::warn!(
                "directory mirror {}: left out {} file(s) of {repo_id}@{commit} whose content hash \
                 is unknown (not a symlink into blobs/): {}",
                self.root.display(),
                skipped.len(),
                skipped.join(", ")
            );
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let extra = serde_json::json!({ "mirror_dir": self.root.display().to_string() });
        Ok(Manifest::new(commit, files).with_extra(&extra))
    }

    /// The file in this cache that holds `file`'s content, if any: `blobs/<sha256>` or
    /// `blobs/<git oid>` of the right size, else the snapshot entry at `commit` when its blob
    /// name does not contradict the manifest's hashes.
    pub fn locate(
        &self,
        repo_type: RepoType,
        repo_id: &str,
        commit: &str,
        file: &ManifestFile,
    ) -> Result<Option<PathBuf>, MirrorError> {
        let repo = self.repo_dir(repo_type, repo_id)?;
        let blobs = repo.join("blobs");
        let names = [
            file.sha256.as_ref().map(|s| s.as_str()).into_option(),
            Some(file.git_oid.as_str()),
        ];
        for name in names.into_iter().flatten() {
            if Etag::parse(name).is_some() && size_of(&blobs.join(name)) == Some(file.size) {
                return Ok(Some(blobs.join(name)));
            }
        }
        if !is_commit(commit) {
            return Ok(None);
        }
        let entry = join_relative(
            &repo.join("snapshots").join(commit),
            &file.path,
            "file path",
        )?;
        let has_hash = file.sha256.is_some() || !file.git_oid.is_empty();
        let consistent = match fs::read_link(&entry) {
            Ok(target) => match target.file_name().and_then(|n| n.to_str()).map(Etag::parse) {
                Some(Some(etag)) => etag.matches(file) || !has_hash,
                _ => !has_hash,
            },
            // A plain file (a cache written without symlinks): the host verifies it.
            Err(_) => true,
        };
        if consistent && size_of(&entry) == Some(file.size) {
            return Ok(Some(entry));
        }
        Ok(None)
    }
}

fn size_of(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

/// The blob a snapshot entry points to, when it is a symlink into `blobs/` named by a hash.
fn snapshot_blob(entry: &Path, blobs: &Path) -> Result<Option<(Etag, u64)>, MirrorError> {
    let target = match fs::read_link(entry) {
        Ok(t) => t,
        Err(_) => return Ok(None),
    };
    let Some(etag) = target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(Etag::parse)
    else {
        return Ok(None);
    };
    let name = match &etag {
        Etag::Sha256(h) | Etag::GitOid(h) => h,
    };
    Ok(size_of(&blobs.join(name)).map(|size| (etag, size)))
}

/// Calls `f(relative path, path)` for every non-directory entry under `dir`, depth first.
fn walk(
    dir: &Path,
    prefix: &str,
    f: &mut dyn FnMut(&str, &Path) -> Result<(), MirrorError>,
) -> Result<(), MirrorError> {
    let entries = fs::read_dir(dir).map_err(|e| MirrorError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| MirrorError::io("listing", dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let ty = entry
            .file_type()
            .map_err(|e| MirrorError::io("reading", &path, e))?;
        if ty.is_dir() {
            walk(&path, &rel, f)?;
        } else {
            f(&rel, &path)?;
        }
    }
    Ok(())
}

/// Copies bytes `item.offset..item.file.size` of `src` into the partial file at the same
/// positions, in chunks, reporting progress and checkpoints and checking `cancel` in between.
/// The partial file is never truncated.
pub fn copy_into(
    src: &Path,
    item: &FetchItem,
    index: u32,
    progress: &Progress,
    cancel: &CancelToken,
) -> Result<CopyMethod, MirrorError> {
    let size = item.file.size;
    let dst_path = Path::new(item.partial_path.as_str());
    let mut from = File::open(src).map_err(|e| MirrorError::io("reading", src, e))?;
    let to = OpenOptions::new()
        .write(true)
        .open(dst_path)
        .map_err(|e| MirrorError::io("opening", dst_path, e))?;
    if item.offset == 0 && size > 0 && reflink(&from, &to) {
        progress.on_event(ProgressEvent::bytes(index, size, 0));
        progress.on_event(ProgressEvent::checkpoint(index, size));
        return Ok(CopyMethod::Reflink);
    }
    let mut at = item.offset.min(size);
    from.seek(SeekFrom::Start(at))
        .map_err(|e| MirrorError::io("reading", src, e))?;
    let mut to_ref = &to;
    to_ref
        .seek(SeekFrom::Start(at))
        .map_err(|e| MirrorError::io("copying to", dst_path, e))?;
    while at < size {
        if cancel.is_cancelled() {
            return Err(MirrorError::Cancelled);
        }
        let want = (size - at).min(COPY_CHUNK);
        let n = io::copy(&mut (&from).take(want), &mut to_ref)
            .map_err(|e| MirrorError::io("copying to", dst_path, e))?;
        if n == 0 {
            return Err(MirrorError::ShortRead {
                path: src.to_path_buf(),
                at,
                expected: size,
            });
        }
        at += n;
        progress.on_event(ProgressEvent::bytes(index, n, 0));
        progress.on_event(ProgressEvent::checkpoint(index, at));
    }
    Ok(CopyMethod::Copy)
}

/// Clones `from` into `to` as a whole (`FICLONE`), where the filesystem can (btrfs, XFS, ...).
#[cfg(target_os = "linux")]
fn reflink(from: &File, to: &File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // for the duration of the call. On failure nothing is written.
    let rc = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn reflink(_from: &File, _to: &File) -> bool {
    false
}

/// Posts an `INFO` event saying where a file comes from.
pub fn announce(progress: &Progress, index: u32, message: String) {
    progress.on_event(ProgressEvent::message(index, EventKind::INFO, message));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_are_classified_by_length() {
        assert_eq!(
            Etag::parse(&"a".repeat(64)),
            Some(Etag::Sha256("a".repeat(64)))
        );
        assert_eq!(
            Etag::parse(&"0".repeat(40)),
            Some(Etag::GitOid("0".repeat(40)))
        );
        assert_eq!(Etag::parse(&"A".repeat(40)), None);
        assert_eq!(Etag::parse("abc.incomplete"), None);
    }

    #[test]
    fn repo_folders_and_relative_paths_cannot_escape() {
        assert_eq!(
            repo_folder(RepoType::DATASET, "acme/tiny").unwrap(),
            "datasets--acme--tiny"
        );
        assert_eq!(
            repo_folder(RepoType::MODEL, "gpt2").unwrap(),
            "models--gpt2"
        );
        for bad in ["../x", "a/..", "a/b/c", "/a", "a\\b", ""] {
            assert!(repo_folder(RepoType::MODEL, bad).is_err(), "{bad}");
        }
        let base = Path::new("/r");
        assert_eq!(
            join_relative(base, "refs/pr/1", "revision").unwrap(),
            Path::new("/r/refs/pr/1")
        );
        for bad in ["../main", "a//b", "/etc/passwd", "a/./b", ""] {
            assert!(join_relative(base, bad, "revision").is_err(), "{bad}");
        }
    }
}
