//! The one way the cache commands delete. A cache may be shared with other users and written by
//! other tools, so anything in it may be a planted link: [`CacheRemover`] removes only entries of
//! the folders a cache is made of ([`Entry`]), named by plain file names and reached through
//! directory handles opened from the cache root without following links (`openat` with
//! `O_NOFOLLOW`, through cap-std). A link is removed as a link, never followed; a folder that
//! turns out to be a link is refused and reported ([`Refusal`]), so no deletion ever lands
//! outside the cache, whatever a snapshot link or a `.refs` manifest says.

use std::io;
use std::path::{Path, PathBuf};

use cap_fs_ext::DirExt;
use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Something the cache commands may delete, named relative to the cache root.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// A whole repository folder (`models--owner--name`), with its `.locks/<folder>`.
    Repo {
        /// The repository folder's name.
        folder: &'a str,
    },
    /// A revision's folder, `<repo>/snapshots/<commit>`.
    Snapshot {
        /// The repository folder's name.
        folder: &'a str,
        /// The snapshot folder's name.
        commit: &'a str,
    },
    /// One file (or link) of a snapshot, `<repo>/snapshots/<commit>/<path>`.
    SnapshotFile {
        /// The repository folder's name.
        folder: &'a str,
        /// The snapshot folder's name.
        commit: &'a str,
        /// The repository path (`/`-separated).
        path: &'a str,
    },
    /// `<repo>/blobs/<name>`: a blob, a link into the shared store, or an incomplete download.
    Blob {
        /// The repository folder's name.
        folder: &'a str,
        /// The file name in `blobs/`.
        name: &'a str,
    },
    /// `<repo>/refs/<name>` (nested names such as `pr/1`).
    Ref {
        /// The repository folder's name.
        folder: &'a str,
        /// The ref's name.
        name: &'a str,
    },
    /// A shared blob store entry and its `.refs` manifest, `<cache>/blobs/<xx>/<hash>` (the
    /// caller holds the entry's lock and has checked that nothing links to it).
    SharedEntry {
        /// The entry's name (its Xet hash); its first two characters name its folder.
        hash: &'a str,
    },
}

/// An entry the remover would not delete, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The entry, as a path under the cache.
    pub path: PathBuf,
    /// Why it was left alone.
    pub why: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kept {}: {}", self.path.display(), self.why)
    }
}

/// Deletes entries of one cache directory, and remembers what it refused.
#[derive(Debug)]
pub struct CacheRemover {
    root: Dir,
    root_path: PathBuf,
    refused: Vec<Refusal>,
}

/// Why one removal did not happen.
enum Miss {
    /// Refused; the reason.
    Refused(String),
    /// An I/O error.
    Io(io::Error),
}

impl From<io::Error> for Miss {
    fn from(e: io::Error) -> Self {
        Miss::Io(e)
    }
}

impl CacheRemover {
    /// Opens the cache root (the configured directory; a link there is the user's own choice).
    pub fn open(root: &Path) -> io::Result<Self> {
        Ok(Self {
            root: Dir::open_ambient_dir(root, ambient_authority())?,
            root_path: root.to_path_buf(),
            refused: Vec::new(),
        })
    }

    /// What was refused so far.
    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    /// Removes `entry`. `Ok(true)` when it went (or was already gone), `Ok(false)` when it was
    /// refused (see [`Self::refused`]); an error only for I/O failures.
    pub fn remove(&mut self, entry: Entry) -> io::Result<bool> {
        let (dirs, leaf, tree) = layout(&entry);
        let shown = dirs
            .iter()
            .chain(std::iter::once(&leaf))
            .fold(self.root_path.clone(), |p, part| p.join(part));
        let outcome = self.remove_at(&dirs, &leaf, tree).and_then(|()| {
            if let (Entry::Repo { folder }, true) = (&entry, tree) {
                // Its lock folder goes with it (absent for most repos).
                self.remove_at(&[".locks".to_owned()], folder, true)
                    .or_else(|m| match m {
                        Miss::Io(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                        other => Err(other),
                    })?;
            }
            if let Entry::SharedEntry { hash } = entry {
                self.remove_at(&dirs, &format!("{hash}.refs"), false)
                    .or_else(|m| match m {
                        Miss::Io(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                        other => Err(other),
                    })?;
            }
            Ok(())
        });
        match outcome {
            Ok(()) => Ok(true),
            Err(Miss::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(Miss::Io(e)) => Err(io::Error::new(
                e.kind(),
                format!("cannot remove {}: {e}", shown.display()),
            )),
            Err(Miss::Refused(why)) => {
                log::warn!("kept {}: {why}", shown.display());
                self.refused.push(Refusal { path: shown, why });
                Ok(false)
            }
        }
    }

    /// Opens `dirs` one by one without following links, then removes `leaf` in the last one:
    /// a file or a link (as a link), or with `tree` a real folder and everything in it.
    fn remove_at(&self, dirs: &[String], leaf: &str, tree: bool) -> Result<(), Miss> {
        let mut dir = self.root.try_clone()?;
        for (i, part) in dirs.iter().enumerate() {
            plain(part)?;
            let meta = dir.symlink_metadata(part)?;
            if meta.is_symlink() {
                return Err(Miss::Refused(format!(
                    "{} is a link, not a folder of the cache; it is not followed",
                    dirs[..=i].join("/")
                )));
            }
            dir = dir.open_dir_nofollow(part)?;
        }
        plain(leaf)?;
        let meta = dir.symlink_metadata(leaf)?;
        if meta.is_symlink() {
            // A link goes as a link: its target is never touched.
            dir.remove_file_or_symlink(leaf)?;
        } else if meta.is_dir() {
            if !tree {
                return Err(Miss::Refused("a folder where a file belongs".to_owned()));
            }
            dir.remove_dir_all(leaf)?;
        } else {
            if tree {
                return Err(Miss::Refused("a file where a folder belongs".to_owned()));
            }
            dir.remove_file(leaf)?;
        }
        Ok(())
    }
}

/// The folders (from the cache root) and the leaf name of `entry`, and whether it is a tree.
fn layout(entry: &Entry) -> (Vec<String>, String, bool) {
    let owned = |parts: &[&str]| parts.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match *entry {
        Entry::Repo { folder } => (Vec::new(), folder.to_owned(), true),
        Entry::Snapshot { folder, commit } => {
            (owned(&[folder, "snapshots"]), commit.to_owned(), true)
        }
        Entry::SnapshotFile {
            folder,
            commit,
            path,
        } => split_nested(owned(&[folder, "snapshots", commit]), path),
        Entry::Blob { folder, name } => (owned(&[folder, "blobs"]), name.to_owned(), false),
        Entry::Ref { folder, name } => split_nested(owned(&[folder, "refs"]), name),
        Entry::SharedEntry { hash } => {
            let prefix = hash.get(..2).unwrap_or("");
            (owned(&["blobs", prefix]), hash.to_owned(), false)
        }
    }
}

/// `a/b/c` below `dirs`: the folders `a`, `b` are appended, `c` is the leaf (a file).
fn split_nested(mut dirs: Vec<String>, path: &str) -> (Vec<String>, String, bool) {
    let mut parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    let leaf = parts.pop().unwrap_or_default();
    dirs.extend(parts);
    (dirs, leaf, false)
}

/// A plain name: one path component, not `.` or `..`.
fn plain(name: &str) -> Result<(), Miss> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(Miss::Refused(format!("`{name}` is not a plain file name")));
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A cache with one repo, and a victim file outside it.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let repo = cache.join("models--acme--a");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/c1/sub")).unwrap();
        std::fs::create_dir_all(repo.join("refs/pr")).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        (dir, cache, victim)
    }

    #[test]
    fn a_link_is_removed_as_a_link_and_its_target_stays() {
        let (_d, cache, victim) = setup();
        let repo = cache.join("models--acme--a");
        symlink(&victim, repo.join("blobs/e1")).unwrap();
        symlink(&victim, repo.join("snapshots/c1/sub/f")).unwrap();
        let mut r = CacheRemover::open(&cache).unwrap();
        let folder = "models--acme--a";
        assert!(r.remove(Entry::Blob { folder, name: "e1" }).unwrap());
        assert!(
            r.remove(Entry::SnapshotFile {
                folder,
                commit: "c1",
                path: "sub/f"
            })
            .unwrap()
        );
        assert!(!repo.join("blobs/e1").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(r.refused().is_empty());
    }

    #[test]
    fn a_folder_that_is_a_link_is_refused_and_reported() {
        let (d, cache, victim) = setup();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("e1"), b"x").unwrap();
        let repo = cache.join("models--acme--a");
        std::fs::remove_dir(repo.join("blobs")).unwrap();
        symlink(&outside, repo.join("blobs")).unwrap();
        symlink(&outside, repo.join("snapshots/c2")).unwrap();
        symlink(&outside, cache.join("models--acme--planted")).unwrap();
        let mut r = CacheRemover::open(&cache).unwrap();
        let folder = "models--acme--a";
        assert!(!r.remove(Entry::Blob { folder, name: "e1" }).unwrap());
        assert!(outside.join("e1").exists());
        assert_eq!(r.refused().len(), 1);
        assert!(
            r.refused()[0].why.contains("is a link"),
            "{:?}",
            r.refused()
        );
        // A snapshot or repo folder that is a link goes as a link; what it points at stays.
        assert!(
            r.remove(Entry::Snapshot {
                folder,
                commit: "c2"
            })
            .unwrap()
        );
        assert!(
            r.remove(Entry::Repo {
                folder: "models--acme--planted"
            })
            .unwrap()
        );
        assert!(outside.join("e1").exists());
        assert!(victim.exists());
    }

    #[test]
    fn names_that_climb_are_refused() {
        let (_d, cache, victim) = setup();
        let mut r = CacheRemover::open(&cache).unwrap();
        let folder = "models--acme--a";
        assert!(
            !r.remove(Entry::Blob {
                folder,
                name: "../../../victim"
            })
            .unwrap()
        );
        assert!(
            !r.remove(Entry::Ref {
                folder,
                name: "../../../victim"
            })
            .unwrap()
        );
        assert!(!r.remove(Entry::Repo { folder: ".." }).unwrap());
        assert!(victim.exists());
        assert_eq!(r.refused().len(), 3);
    }

    #[test]
    fn trees_and_nested_refs_go() {
        let (_d, cache, _victim) = setup();
        let repo = cache.join("models--acme--a");
        std::fs::write(repo.join("refs/pr/1"), "c1").unwrap();
        std::fs::create_dir_all(cache.join(".locks/models--acme--a")).unwrap();
        let mut r = CacheRemover::open(&cache).unwrap();
        let folder = "models--acme--a";
        assert!(
            r.remove(Entry::Ref {
                folder,
                name: "pr/1"
            })
            .unwrap()
        );
        assert!(!repo.join("refs/pr/1").exists());
        assert!(
            r.remove(Entry::Snapshot {
                folder,
                commit: "c1"
            })
            .unwrap()
        );
        assert!(!repo.join("snapshots/c1").exists());
        assert!(r.remove(Entry::Repo { folder }).unwrap());
        assert!(!repo.exists());
        assert!(!cache.join(".locks/models--acme--a").exists());
        // Already gone is not an error.
        assert!(r.remove(Entry::Repo { folder }).unwrap());
    }
}
