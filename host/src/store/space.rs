//! Free space: how much the filesystem of a target directory can still take (the download
//! preflight compares it with the bytes still to fetch), and recognising a full disk in I/O
//! errors and in the messages backends report (`ErrorKind::IO` with the OS text).

use std::io;
use std::path::{Path, PathBuf};

/// The bytes an unprivileged writer can still put on the filesystem holding `dir`, measured at
/// its nearest existing ancestor (the directory may not exist yet). Returns that ancestor too.
pub fn available_space(dir: &Path) -> io::Result<(PathBuf, u64)> {
    let mut at = dir;
    loop {
        if at.as_os_str().is_empty() {
            at = Path::new(".");
        }
        if at.is_dir() {
            return free_bytes(at).map(|n| (at.to_path_buf(), n));
        }
        match at.parent() {
            Some(p) => at = p,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no existing ancestor of {}", dir.display()),
                ));
            }
        }
    }
}

#[cfg(unix)]
fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs initialises it on success, and we read it only then.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so `st` is initialised.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let (avail, frsize) = (u64::from(st.f_bavail), st.f_frsize as u64);
    Ok(avail.saturating_mul(frsize))
}

#[cfg(not(unix))]
fn free_bytes(_dir: &Path) -> io::Result<u64> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "free space is only measured on Unix",
    ))
}

/// Whether an I/O error means the disk (or the user's quota) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || is_disk_full_message(&e.to_string())
}

/// Whether a message (a backend's `IO` error, a host error) reports a full disk: the OS texts
/// of ENOSPC/EDQUOT on Unix and ERROR_DISK_FULL on Windows, as Rust's `io::Error` prints them.
pub fn is_disk_full_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no space left on device",
        "disk quota exceeded",
        "not enough space on the disk",
        "(os error 28)",
    ]
    .iter()
    .any(|needle| m.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_messages_are_recognised_and_others_are_not() {
        let enospc = io::Error::from_raw_os_error(28);
        assert!(is_disk_full(&enospc), "{enospc}");
        assert!(is_disk_full_message(&format!(
            "cannot write the partial file /c/blobs/ab.hubget-partial: {enospc}"
        )));
        assert!(is_disk_full_message("Disk quota exceeded (os error 122)"));
        assert!(!is_disk_full_message(
            "cannot open /c/x: Permission denied (os error 13)"
        ));
        assert!(!is_disk_full_message(
            "GET http://h/x: 507 Insufficient Storage"
        ));
        assert!(!is_disk_full(&io::Error::from(io::ErrorKind::NotFound)));
    }

    #[cfg(unix)]
    #[test]
    fn free_space_is_measured_at_the_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("not/yet/there");
        let (at, free) = available_space(&deep).unwrap();
        assert_eq!(at, dir.path());
        assert!(free > 0);
        assert!(available_space(dir.path()).is_ok());
    }
}
