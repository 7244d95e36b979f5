//! Durable landing: a verified partial file becomes the final file only after its data is on
//! disk, and the rename that makes it final is flushed after, so a power loss cannot leave a
//! right-sized file with wrong content (the cache's `blobs/<etag>` is trusted by size alone on
//! the next run).
//!
//! The order of the three steps is the whole point, so it is written once, over a small
//! [`LandingFs`] trait whose real implementation is [`Disk`]; the unit tests record the steps.

use std::io;
use std::path::Path;

/// The filesystem steps a landing takes.
pub trait LandingFs {
    /// Flushes a file's data and metadata to disk.
    fn sync_file(&mut self, path: &Path) -> io::Result<()>;
    /// Renames `from` over `to` (atomic on one filesystem).
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Flushes a directory's entries (best effort: not every platform can open a directory).
    fn sync_dir(&mut self, dir: &Path);
}

/// The real filesystem.
pub struct Disk;

impl LandingFs for Disk {
    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&mut self, dir: &Path) {
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        #[cfg(not(unix))]
        let _ = dir;
    }
}

/// Lands `from` at `to` on the real filesystem: see [`land_with`].
pub fn land(from: &Path, to: &Path) -> io::Result<()> {
    land_with(&mut Disk, from, to)
}

/// Flushes `from`, renames it to `to`, then flushes `to`'s directory. When the data cannot be
/// flushed, nothing is renamed: the partial file stays where it was.
pub fn land_with(fs: &mut impl LandingFs, from: &Path, to: &Path) -> io::Result<()> {
    fs.sync_file(from)?;
    fs.rename(from, to)?;
    if let Some(dir) = to.parent() {
        fs.sync_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The real disk, with every step written down.
    struct Recorder {
        steps: Vec<String>,
        fail_sync: bool,
    }

    impl LandingFs for Recorder {
        fn sync_file(&mut self, path: &Path) -> io::Result<()> {
            self.steps.push(format!("sync {}", name(path)));
            if self.fail_sync {
                return Err(io::Error::other("EIO"));
            }
            Disk.sync_file(path)
        }
        fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
            self.steps
                .push(format!("rename {} -> {}", name(from), name(to)));
            Disk.rename(from, to)
        }
        fn sync_dir(&mut self, dir: &Path) {
            self.steps.push(format!("sync dir {}", name(dir)));
            Disk.sync_dir(dir)
        }
    }

    fn name(p: &Path) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir(&blobs).unwrap();
        let partial = blobs.join("abc.partial");
        std::fs::write(&partial, b"weights").unwrap();
        (dir, partial, blobs.join("abc"))
    }

    #[test]
    fn the_data_is_flushed_before_the_rename_and_the_directory_after() {
        let (_dir, partial, blob) = setup();
        let mut fs = Recorder {
            steps: Vec::new(),
            fail_sync: false,
        };
        land_with(&mut fs, &partial, &blob).unwrap();
        assert_eq!(
            fs.steps,
            [
                "sync abc.partial",
                "rename abc.partial -> abc",
                "sync dir blobs"
            ]
        );
        assert_eq!(std::fs::read(&blob).unwrap(), b"weights");
        assert!(!partial.exists());
    }

    #[test]
    fn data_that_cannot_be_flushed_never_lands() {
        let (_dir, partial, blob) = setup();
        let mut fs = Recorder {
            steps: Vec::new(),
            fail_sync: true,
        };
        assert!(land_with(&mut fs, &partial, &blob).is_err());
        assert_eq!(fs.steps, ["sync abc.partial"]);
        assert!(!blob.exists());
        assert_eq!(
            std::fs::read(&partial).unwrap(),
            b"weights",
            "partial work is kept"
        );
    }
}
