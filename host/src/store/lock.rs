//! Interprocess file locks on huggingface_hub's lock paths (`<cache>/.locks/<repo>/<etag>.lock`),
//! using `flock`, which is what Python's `filelock.UnixFileLock` uses, so hubget and Python
//! exclude each other. The holder writes `pid@host` into the lock file so a waiter can say who
//! holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

/// Why a lock was not acquired.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process held it for the whole wait.
    #[error("timed out after {}s waiting for lock {} (held by {holder})", waited.as_secs(), path.display())]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// Who holds it, as written in the file, or `another process`.
        holder: String,
    },
    /// The lock file could not be opened.
    #[error("cannot open lock file {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Tries once to take the lock at `path` (creating it and its folder).
pub fn try_lock(path: &Path) -> Result<Option<FileLock>, LockError> {
    let io = |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    // No O_TRUNC: the holder's note must survive our failed attempt.
    let mut file = crate::resume::open_nofollow(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        path,
    )
    .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {
            let note = format!("{}@{}", std::process::id(), hostname());
            let _ = file.set_len(0);
            let _ = file.seek(SeekFrom::Start(0));
            let _ = file.write_all(note.as_bytes());
            Ok(Some(FileLock {
                file,
                path: path.to_path_buf(),
            }))
        }
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Who holds the lock at `path`, from the note in the file.
pub fn holder(path: &Path) -> String {
    let mut s = String::new();
    match File::open(path).and_then(|mut f| f.read_to_string(&mut s)) {
        Ok(_) if !s.trim().is_empty() => {
            let note = s.trim();
            match note.split_once('@') {
                Some((pid, host)) => format!("pid {pid} on {host}"),
                None => note.to_owned(),
            }
        }
        _ => "another process".to_owned(),
    }
}

/// Waits for the lock, polling; logs once who holds it. Gives up after `timeout` without
/// progress: while any of `progress` (the holder's partial file and its state) keeps changing,
/// the holder is downloading and the wait goes on.
pub async fn lock(
    path: &Path,
    timeout: Duration,
    progress: &[&Path],
) -> Result<FileLock, LockError> {
    let start = Instant::now();
    let mut since = Instant::now();
    let mut last = fingerprint(progress);
    let mut told = false;
    loop {
        if let Some(l) = try_lock(path)? {
            return Ok(l);
        }
        if !told && start.elapsed() >= Duration::from_secs(2) {
            log::warn!(
                "waiting for lock {} held by {} (while it makes progress, else up to {}s)",
                path.display(),
                holder(path),
                timeout.as_secs()
            );
            told = true;
        }
        let now = fingerprint(progress);
        if now != last {
            last = now;
            since = Instant::now();
        }
        if since.elapsed() >= timeout {
            return Err(LockError::Timeout {
                path: path.to_path_buf(),
                waited: start.elapsed(),
                holder: holder(path),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sizes and modification times of `paths` (what changes while a holder downloads).
fn fingerprint(paths: &[&Path]) -> Vec<Option<(u64, Option<std::time::SystemTime>)>> {
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().ok()))
        })
        .collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn second_locker_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".locks/models--a--b/x.lock");
        let held = try_lock(&p).unwrap().expect("free");
        assert!(try_lock(&p).unwrap().is_none());
        let err = lock(&p, Duration::from_millis(250), &[]).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        assert!(lock(&p, Duration::from_millis(250), &[]).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiter_keeps_waiting_while_the_holder_makes_progress_then_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let partial = dir.path().join("x.hubget-partial");
        let _held = try_lock(&p).unwrap().expect("free");
        // The holder "downloads" for 1.2 s, then stalls.
        let writer = {
            let partial = partial.clone();
            tokio::spawn(async move {
                for i in 0..12u8 {
                    std::fs::write(&partial, vec![i; 1 + i as usize]).unwrap();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let started = Instant::now();
        let err = lock(&p, Duration::from_millis(400), &[&partial])
            .await
            .unwrap_err();
        writer.await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(1200),
            "waited while the holder made progress: {:?}",
            started.elapsed()
        );
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
    }
}
