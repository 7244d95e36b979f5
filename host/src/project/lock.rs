//! `hubget.lock`: what each manifest entry resolved to, to the byte.
//!
//! ```toml
//! version = 1
//!
//! [[repo]]
//! name = "acme/tiny"
//! revision = "main"                  # what the entry asked for, to tell when it changed
//! include = []
//! exclude = []
//! commit = "3f1c…"                   # the commit `revision` resolved to when locked
//!
//! [[repo.file]]
//! path = "model.safetensors"
//! size = 4194304
//! git_oid = "…"                      # the git blob id (the hash of a regular file)
//! sha256 = "…"                       # LFS and Xet files
//! xet_hash = "…"                     # Xet files
//! ```
//!
//! Entries sorted by name, files by path: stable, diff-friendly. `version` says the format; a
//! newer one is refused with a hint rather than misread.

use std::path::Path;

use hubget_plugin_api::Manifest as RepoManifest;
use serde::{Deserialize, Serialize};

use super::manifest::{Entry, parse_name};
use crate::error::HostError;

/// The lock's file name.
pub const FILE_NAME: &str = "hubget.lock";
/// The format this hubget writes and reads.
pub const VERSION: u32 = 1;

/// A whole lock file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lock {
    /// The format version.
    pub version: u32,
    /// One per manifest entry, sorted by name.
    #[serde(default, rename = "repo")]
    pub repos: Vec<LockedRepo>,
}

/// One entry, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedRepo {
    /// The manifest entry's name.
    pub name: String,
    /// The revision the entry asked for.
    pub revision: String,
    /// Its include patterns.
    #[serde(default)]
    pub include: Vec<String>,
    /// Its exclude patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The commit it resolved to.
    pub commit: String,
    /// The selected files, sorted by path.
    #[serde(default, rename = "file")]
    pub files: Vec<LockedFile>,
}

/// One selected file: the same codec as an exported manifest's files (path, size, git blob id,
/// sha256 and Xet hash when there are some).
pub use hubget_plugin_api::protocol::export::File as LockedFile;

impl LockedRepo {
    /// Whether this pin was made for `entry` as it is now (type, name, revision, patterns).
    pub fn matches(&self, entry: &Entry) -> bool {
        self.name == entry.name
            && self.revision == entry.revision
            && self.include == entry.include
            && self.exclude == entry.exclude
    }

    /// The pinned files as the manifest a backend would have resolved.
    pub fn manifest(&self) -> RepoManifest {
        RepoManifest::new(
            self.commit.as_str(),
            self.files.iter().map(LockedFile::manifest_file).collect(),
        )
    }

    /// The entry's type and id, from its name.
    pub fn repo(&self) -> Result<(hubget_plugin_api::RepoType, String), HostError> {
        parse_name(&self.name).map(|(_, t, id)| (t, id))
    }
}

impl Lock {
    /// Reads `path`; `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, HostError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(HostError::io(
                    format!("cannot read the lock {}", path.display()),
                    e,
                ));
            }
        };
        let lock: Self = toml::from_str(&text).map_err(|e| HostError::Project {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if lock.version != VERSION {
            return Err(HostError::Project {
                path: path.to_path_buf(),
                message: format!(
                    "lock format version {} (this hubget reads {VERSION}); relock with `hubget \
                     lock` or use the hubget that wrote it",
                    lock.version
                ),
            });
        }
        Ok(Some(lock))
    }

    /// Writes the lock, sorted, atomically (a reader never sees half a lock).
    pub fn save(&mut self, path: &Path) -> Result<(), HostError> {
        self.version = VERSION;
        self.repos.sort_by(|a, b| a.name.cmp(&b.name));
        for r in &mut self.repos {
            r.files.sort_by(|a, b| a.path.cmp(&b.path));
        }
        let text = format!(
            "# Written by `hubget lock`: the exact commits and files hubget.toml resolved to.\n\
             # Commit it; `hubget sync --locked` installs exactly this.\n{}",
            toml::to_string(self).map_err(|e| HostError::Other(e.to_string()))?
        );
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| HostError::io(format!("cannot write the lock in {}", dir.display()), e))?;
        std::io::Write::write_all(&mut tmp, text.as_bytes())
            .map_err(|e| HostError::io("cannot write the lock", e))?;
        tmp.persist(path)
            .map_err(|e| HostError::io(format!("cannot write {}", path.display()), e.error))?;
        Ok(())
    }

    /// The pin of entry `name`.
    pub fn get(&self, name: &str) -> Option<&LockedRepo> {
        self.repos.iter().find(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_round_trips_sorted_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let file = |p: &str| LockedFile {
            path: p.into(),
            size: 3,
            git_oid: "a".repeat(40),
            sha256: None,
            xet_hash: None,
        };
        let mut lock = Lock {
            version: 0,
            repos: vec![
                LockedRepo {
                    name: "datasets/acme/rows".into(),
                    revision: "main".into(),
                    include: vec![],
                    exclude: vec![],
                    commit: "c".repeat(40),
                    files: vec![file("b.txt"), file("a.txt")],
                },
                LockedRepo {
                    name: "acme/tiny".into(),
                    revision: "v1".into(),
                    include: vec!["*.json".into()],
                    exclude: vec![],
                    commit: "d".repeat(40),
                    files: vec![file("config.json")],
                },
            ],
        };
        lock.save(&path).unwrap();
        let back = Lock::load(&path).unwrap().unwrap();
        assert_eq!(back.repos[0].name, "acme/tiny");
        assert_eq!(back.repos[1].files[0].path, "a.txt");
        assert_eq!(back, lock);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("version = 1"), "{text}");
        std::fs::write(&path, text.replace("version = 1", "version = 2")).unwrap();
        let e = Lock::load(&path).unwrap_err().to_string();
        assert!(e.contains("lock format version 2"), "{e}");
        assert_eq!(Lock::load(&dir.path().join("none")).unwrap(), None);
    }
}
