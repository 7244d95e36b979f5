//! What a Hugging Face cache holds, for `hubget cache`: repositories, their revisions and refs,
//! the blobs behind them with their size on disk, and incomplete downloads. Works on caches
//! written by huggingface_hub and by hubget alike (the layout is the same).
//!
//! Sizes count each blob once, by inode: a blob the shared blob store holds for several
//! repositories, or that several revisions link, is counted once in the cache's total.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use hubget_plugin_api::RepoType;

use super::walk;
use crate::resume::PARTIAL_SUFFIX;

/// A scanned cache directory.
#[derive(Debug, Default)]
pub struct Scan {
    /// The cache directory.
    pub root: PathBuf,
    /// Repositories, sorted by type then id.
    pub repos: Vec<ScannedRepo>,
    /// Incomplete downloads (`*.incomplete` of huggingface_hub, hubget's partial files and their
    /// resume state), with their size.
    pub incomplete: Vec<(PathBuf, u64)>,
    /// Folders that are not repositories of a known layout, and other oddities.
    pub warnings: Vec<String>,
    /// Bytes on disk of every blob, each counted once.
    pub size_on_disk: u64,
}

/// One repository folder (`models--owner--name`).
#[derive(Debug)]
pub struct ScannedRepo {
    /// The folder name.
    pub folder: String,
    /// Its type.
    pub repo_type: RepoType,
    /// `owner/name`.
    pub repo_id: String,
    /// The folder.
    pub path: PathBuf,
    /// Its revisions (snapshot folders), sorted by commit.
    pub revisions: Vec<ScannedRevision>,
    /// `refs/<name>` → commit.
    pub refs: BTreeMap<String, String>,
    /// Bytes of the blobs in its `blobs/` (each counted once; links into the shared store
    /// count the entry).
    pub size_on_disk: u64,
    /// The latest modification of its blobs and snapshots.
    pub last_modified: SystemTime,
}

/// One revision: a `snapshots/<commit>` folder.
#[derive(Debug)]
pub struct ScannedRevision {
    /// The commit.
    pub commit: String,
    /// The refs that point at it (empty: detached).
    pub refs: Vec<String>,
    /// The snapshot folder.
    pub snapshot: PathBuf,
    /// Its files: repository path, the blob (link target, or the file itself), size.
    pub files: Vec<(String, PathBuf, u64)>,
    /// Bytes of its blobs, each counted once.
    pub size_on_disk: u64,
    /// The latest modification of its files.
    pub last_modified: SystemTime,
}

impl ScannedRepo {
    /// `model/owner/name` as the `hf` CLI names cache entries.
    pub fn cache_id(&self) -> String {
        format!("{}/{}", self.repo_type, self.repo_id)
    }
}

/// Parses a repository folder name: `models--owner--name` → (model, `owner/name`).
pub fn parse_folder(name: &str) -> Option<(RepoType, String)> {
    let (plural, rest) = name.split_once("--")?;
    let repo_type = RepoType::parse(plural).filter(|t| t.plural() == Some(plural))?;
    if rest.is_empty() || rest.split("--").any(str::is_empty) {
        return None;
    }
    Some((repo_type, rest.replace("--", "/")))
}

/// Whether a file name in `blobs/` is an incomplete download.
fn is_incomplete(name: &str) -> bool {
    name.ends_with(".incomplete")
        || name.ends_with(&format!(".{PARTIAL_SUFFIX}"))
        || name.ends_with(&format!(".{PARTIAL_SUFFIX}.json"))
}

/// Scans `root`. A missing directory is an error; unreadable parts become warnings.
pub fn scan(root: &Path) -> std::io::Result<Scan> {
    let mut out = Scan {
        root: root.to_path_buf(),
        ..Scan::default()
    };
    let mut entries: Vec<_> = std::fs::read_dir(root)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() || name.starts_with('.') || name == "blobs" {
            continue;
        }
        let Some((repo_type, repo_id)) = parse_folder(&name) else {
            out.warnings
                .push(format!("{} is not a repository folder", path.display()));
            continue;
        };
        let repo = scan_repo(&path, name, repo_type, repo_id, &mut out);
        out.repos.push(repo);
    }
    // The cache-wide total counts every blob once (shared store entries included).
    out.size_on_disk = sum_unique(out.repos.iter().flat_map(|r| {
        r.revisions
            .iter()
            .flat_map(|v| v.files.iter().map(|(_, blob, _)| blob.clone()))
            .chain(repo_blobs(&r.path))
    }));
    out.repos
        .sort_by(|a, b| (a.repo_type.0, &a.repo_id).cmp(&(b.repo_type.0, &b.repo_id)));
    Ok(out)
}

fn scan_repo(
    path: &Path,
    folder: String,
    repo_type: RepoType,
    repo_id: String,
    out: &mut Scan,
) -> ScannedRepo {
    let refs = refs_of(path);
    let mut revisions = Vec::new();
    if let Ok(snapshots) = std::fs::read_dir(path.join("snapshots")) {
        for snap in snapshots.flatten() {
            let commit = snap.file_name().to_string_lossy().into_owned();
            let files = files_under(&snap.path(), &[]);
            let size_on_disk = sum_unique(files.iter().map(|(_, b, _)| b.clone()));
            let last_modified = latest(files.iter().map(|(_, b, _)| b.as_path()));
            revisions.push(ScannedRevision {
                refs: refs
                    .iter()
                    .filter(|(_, c)| **c == commit)
                    .map(|(r, _)| r.clone())
                    .collect(),
                commit,
                snapshot: snap.path(),
                files,
                size_on_disk,
                last_modified,
            });
        }
    }
    revisions.sort_by(|a, b| a.commit.cmp(&b.commit));
    let blobs = repo_blobs(path);
    if let Ok(dir) = std::fs::read_dir(path.join("blobs")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_incomplete(&name) {
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                out.incomplete.push((e.path(), size));
            }
        }
    }
    let size_on_disk = sum_unique(blobs.iter().cloned());
    let last_modified = latest(blobs.iter().map(PathBuf::as_path)).max(
        revisions
            .iter()
            .map(|r| r.last_modified)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    ScannedRepo {
        folder,
        repo_type,
        repo_id,
        path: path.to_path_buf(),
        revisions,
        refs,
        size_on_disk,
        last_modified,
    }
}

/// The blobs of a repository (`blobs/<etag>`, links followed), without incomplete files.
fn repo_blobs(repo: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(repo.join("blobs")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| !is_incomplete(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

/// A repository folder's refs: `refs/<name>` (nested, as `refs/pr/1`) → commit.
pub fn refs_of(repo: &Path) -> BTreeMap<String, String> {
    walk::files(&repo.join("refs"), true)
        .flatten()
        .filter_map(|(name, e)| {
            let commit = super::untrusted::read_text(e.path(), super::untrusted::SMALL).ok()?;
            Some((name, commit.trim().to_owned()))
        })
        .collect()
}

/// Every file under `dir` (links followed; dangling ones skipped): relative `/` path, the file
/// it resolves to, size; sorted. `skip` names top-level folders to leave out.
pub fn files_under(dir: &Path, skip: &[&str]) -> Vec<(String, PathBuf, u64)> {
    let mut out: Vec<_> = walk::files(dir, true)
        .flatten()
        .filter_map(|(rel, e)| {
            let size = e.metadata().ok()?.len();
            let blob = std::fs::canonicalize(e.path()).unwrap_or_else(|_| e.path().to_owned());
            Some((rel, blob, size))
        })
        .collect();
    out.retain(|(p, _, _)| {
        !skip
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{s}/")))
    });
    out.sort();
    out
}

/// What a snapshot entry stands for, read without following it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotLink {
    /// A link to `<repo>/blobs/<name>` of its own repository (the layout's only link).
    Blob(String),
    /// A regular file in the snapshot (caches written without symlinks).
    File,
    /// A link anywhere else (planted, or foreign): where it points, joined to its folder. Never
    /// to be followed by a deletion.
    Outside(PathBuf),
}

/// Reads the snapshot entry `path` of the repository folder `repo`: a link that resolves, by
/// its text alone, to `<repo>/blobs/<name>` is that blob; any other link is [`SnapshotLink::Outside`].
pub fn snapshot_link(repo: &Path, path: &Path) -> SnapshotLink {
    let Ok(target) = std::fs::read_link(path) else {
        return SnapshotLink::File;
    };
    let joined = path
        .parent()
        .map_or_else(|| target.clone(), |p| p.join(&target));
    let mut resolved = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                resolved.pop();
            }
            std::path::Component::CurDir => {}
            other => resolved.push(other),
        }
    }
    let blobs = repo.join("blobs");
    let in_blobs =
        |dir: &Path| dir == blobs || std::fs::canonicalize(&blobs).is_ok_and(|b| b == dir);
    match (resolved.parent(), resolved.file_name()) {
        (Some(dir), Some(name)) if in_blobs(dir) => {
            SnapshotLink::Blob(name.to_string_lossy().into_owned())
        }
        _ => SnapshotLink::Outside(resolved),
    }
}

#[cfg(unix)]
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(p: &Path) -> Option<(u64, u64)> {
    // Without inodes, the canonical path stands in (links are resolved).
    use std::hash::{Hash, Hasher};
    let c = std::fs::canonicalize(p).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.hash(&mut h);
    Some((0, h.finish()))
}

/// Total size of the distinct files among `paths` (links followed).
fn sum_unique(paths: impl IntoIterator<Item = PathBuf>) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for p in paths {
        if let (Some(id), Ok(m)) = (identity(&p), std::fs::metadata(&p))
            && seen.insert(id)
        {
            total = total.saturating_add(m.len());
        }
    }
    total
}

fn latest<'a>(paths: impl IntoIterator<Item = &'a Path>) -> SystemTime {
    paths
        .into_iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache by hand: two repos sharing one blob through a hard link (as the shared store
    /// makes them share one inode), two revisions of the first, one detached, an incomplete file.
    fn cache() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("models--acme--a");
        for sub in ["blobs", "refs", "snapshots/c1", "snapshots/c2"] {
            std::fs::create_dir_all(a.join(sub)).unwrap();
        }
        std::fs::write(a.join("blobs/big"), vec![1u8; 1000]).unwrap();
        std::fs::write(a.join("blobs/small"), b"12345").unwrap();
        std::fs::write(a.join("blobs/x.incomplete"), b"123").unwrap();
        std::os::unix::fs::symlink("../../blobs/big", a.join("snapshots/c1/w.bin")).unwrap();
        std::os::unix::fs::symlink("../../blobs/big", a.join("snapshots/c2/w.bin")).unwrap();
        std::os::unix::fs::symlink("../../blobs/small", a.join("snapshots/c2/config.json"))
            .unwrap();
        std::fs::write(a.join("refs/main"), "c2").unwrap();
        let b = dir.path().join("datasets--acme--b");
        for sub in ["blobs", "refs/pr", "snapshots/d1"] {
            std::fs::create_dir_all(b.join(sub)).unwrap();
        }
        std::fs::hard_link(a.join("blobs/big"), b.join("blobs/big")).unwrap();
        std::os::unix::fs::symlink("../../blobs/big", b.join("snapshots/d1/w.bin")).unwrap();
        std::fs::write(b.join("refs/pr/1"), "d1").unwrap();
        std::fs::create_dir(dir.path().join("not-a-repo")).unwrap();
        dir
    }

    #[test]
    fn repos_revisions_refs_and_sizes_count_each_blob_once() {
        let dir = cache();
        let s = scan(dir.path()).unwrap();
        let ids: Vec<String> = s.repos.iter().map(ScannedRepo::cache_id).collect();
        assert_eq!(ids, ["model/acme/a", "dataset/acme/b"]);
        let a = &s.repos[0];
        assert_eq!(a.size_on_disk, 1005);
        assert_eq!(a.revisions.len(), 2);
        assert!(a.revisions[0].refs.is_empty(), "c1 is detached");
        assert_eq!(a.revisions[1].refs, ["main"]);
        assert_eq!(a.revisions[1].size_on_disk, 1005);
        assert_eq!(a.revisions[1].files.len(), 2);
        assert_eq!(s.repos[1].refs["pr/1"], "d1");
        assert_eq!(s.size_on_disk, 1005, "the shared blob counts once");
        assert_eq!(s.incomplete.len(), 1);
        assert_eq!(s.warnings.len(), 1);
    }

    #[test]
    fn folder_names_parse_for_every_type() {
        assert_eq!(
            parse_folder("kernels--acme--flash"),
            Some((RepoType::KERNEL, "acme/flash".to_owned()))
        );
        assert_eq!(
            parse_folder("models--gpt2"),
            Some((RepoType::MODEL, "gpt2".to_owned()))
        );
        assert_eq!(parse_folder("model--a--b"), None);
        assert_eq!(parse_folder("models--"), None);
    }
}
