//! Reading small files that another user of a shared cache (or another tool) could have
//! written: refs, `.refs` manifests, local-dir metadata, lock holders. Only a regular file is
//! read, never through a link at its name, never blocking on a FIFO or a device, and never more
//! than a cap: a planted `/dev/zero` link, a FIFO or a grown file costs nothing.

use std::fs::OpenOptions;
use std::io::{self, Read};
use std::path::Path;

/// The cap for refs, markers and one-line metadata.
pub const SMALL: u64 = 64 * 1024;
/// The cap for `.refs` manifests (one line per repository that links an entry).
pub const MANIFEST: u64 = 4 * 1024 * 1024;

/// The text of the regular file at `path`, at most `cap` bytes (a larger file is an error).
pub fn read_text(path: &Path, cap: u64) -> io::Result<String> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No link followed; O_NONBLOCK so that opening a FIFO does not wait for a writer.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > cap {
        return Err(io::Error::other(format!(
            "{} is larger than {cap} bytes",
            path.display()
        )));
    }
    let mut text = String::new();
    file.take(cap + 1).read_to_string(&mut text)?;
    if text.len() as u64 > cap {
        return Err(io::Error::other(format!(
            "{} grew past {cap} bytes",
            path.display()
        )));
    }
    Ok(text)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn links_fifos_devices_and_big_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("main");
        std::fs::write(&plain, "abc\n").unwrap();
        assert_eq!(read_text(&plain, SMALL).unwrap(), "abc\n");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(read_text(&link, SMALL).is_err());
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            read_text(&fifo, SMALL).is_err(),
            "a FIFO is refused, not waited on"
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; 100]).unwrap();
        assert!(read_text(&big, 99).is_err());
    }
}
