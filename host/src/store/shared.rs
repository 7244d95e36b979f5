//! The cache-wide shared blob store of huggingface_hub 2.4, so that an Xet file identical in
//! several repositories is kept once, whichever tool (hubget or Python) downloaded it:
//!
//! ```text
//! <cache>/blobs/.huggingface-shared-blobs   marker: the layout version, "1\n"
//! <cache>/blobs/<xx>/<xet hash>             the content, read-only (xx = first two hex digits)
//! <cache>/blobs/<xx>/<xet hash>.refs        one line per repo link using it: "<repo folder>/blobs/<etag>"
//! <cache>/blobs/<xx>/<xet hash>.lock        flock'd while an entry is published, linked or collected
//! <cache>/<repo folder>/blobs/<etag>        relative symlink -> ../../blobs/<xx>/<xet hash>
//! ```
//!
//! Design decisions, all taken to stay interchangeable with huggingface_hub (whose
//! `utils/_shared_blobs.py` is the reference) while keeping hubget's guarantees:
//! - Same names, marker, modes, manifest format and lock (flock on the `.lock` file, created with
//!   `O_NOFOLLOW` and mode 0664: group-writable, never world-writable), so either tool adds, uses and collects entries while the other
//!   runs. A reference is appended (and fsynced) to `.refs` *before* the repo link appears, so a
//!   concurrent `hf cache rm` never deletes an entry that is about to be used.
//! - An unmarked `<cache>/blobs` directory with foreign content is never adopted.
//! - hubget verifies every file it publishes (whichever backend moved the bytes), checks that
//!   its content's Xet hash is the name it publishes under (a bucket or mirror manifest may lie
//!   about it; [`super::xet_hash`]), and hashes an entry before it links a repo to it: an entry
//!   written by another tool or run is trusted for nothing but its name. An entry whose content
//!   differs from content proven to hash to its name is replaced (a squatter never keeps the
//!   real content out). A bad entry is never linked and never deleted by a reader (it may belong to
//!   another tool's run in progress); the caller downloads as before and says which entry was
//!   bad.
//! - Every failure here is a miss, not an error: the repo keeps (or gets) a regular blob.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::remove::{CacheRemover, Entry};
use crate::verify::{Expected, verify_file};

/// The marker file's name inside `<cache>/blobs`.
pub const MARKER: &str = ".huggingface-shared-blobs";
/// The layout version the marker holds.
pub const LAYOUT_VERSION: &str = "1";
/// The environment variable that turns the store off (as in huggingface_hub).
pub const DISABLE_ENV: &str = "HF_HUB_DISABLE_SHARED_BLOBS";

/// The mode of `.refs` manifests and `.lock` files: group-writable for shared group caches,
/// as huggingface_hub creates its lock files (0664), never world-writable.
const SHARED_FILE_MODE: u32 = 0o664;

/// Longest wait for an entry's lock (it is held only for renames and small writes).
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The shared blob store of one cache directory.
#[derive(Debug, Clone)]
pub struct SharedBlobs {
    cache_dir: PathBuf,
    /// Whether names are proven (the blob's Xet hash computed) before a new entry is made;
    /// off when the manifest's Xet hashes come from the Hub itself.
    check_names: bool,
}

/// What an attempt to take a file from the store found.
#[derive(Debug)]
pub enum Reuse {
    /// The repo blob now links to this verified entry.
    Linked(PathBuf),
    /// No usable entry (none, wrong size, unreadable, or no symlinks here).
    Missing,
    /// An entry of the right size whose content does not match; left alone.
    Bad {
        /// The entry.
        entry: PathBuf,
        /// What did not match.
        why: String,
    },
}

/// Whether `s` is a Xet file hash (64 lowercase hex digits), the only names the store holds.
pub fn is_xet_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl SharedBlobs {
    /// The store of `cache_dir` (nothing is created until something is published).
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            cache_dir: cache_dir.to_path_buf(),
            check_names: true,
        }
    }

    /// This store taking the names it is given for new entries without hashing the content
    /// again: for files whose Xet hashes the Hub itself listed (a resolve through the Hub),
    /// where a second read of every file would buy nothing. Replacing an entry whose content
    /// differs still needs the proof.
    #[must_use]
    pub fn trusting_names(mut self) -> Self {
        self.check_names = false;
        self
    }

    /// `<cache>/blobs`.
    pub fn dir(&self) -> PathBuf {
        self.cache_dir.join("blobs")
    }

    /// `<cache>/blobs/<xx>/<xet hash>`, or `None` when `xet_hash` is not a Xet hash.
    pub fn entry_path(&self, xet_hash: &str) -> Option<PathBuf> {
        is_xet_hash(xet_hash).then(|| self.dir().join(&xet_hash[..2]).join(xet_hash))
    }

    /// Whether `<cache>/blobs` is a marked store of the layout version we speak.
    pub fn is_marked(&self) -> bool {
        let dir = self.dir();
        is_dir(&dir)
            && is_regular(&dir.join(MARKER))
            && super::untrusted::read_text(&dir.join(MARKER), super::untrusted::SMALL)
                .is_ok_and(|s| s == format!("{LAYOUT_VERSION}\n"))
    }

    /// The entry for `xet_hash` if the store is marked and the entry is a readable regular file
    /// of `size` bytes (its content is not checked here).
    pub fn usable_entry(&self, xet_hash: &str, size: u64) -> Option<PathBuf> {
        let entry = self.entry_path(xet_hash)?;
        if !self.is_marked() {
            return None;
        }
        let meta = std::fs::symlink_metadata(&entry).ok()?;
        if !meta.file_type().is_file() {
            return None;
        }
        if meta.len() != size {
            log::warn!(
                "shared blob {} has {} bytes, not {size}: not using it",
                entry.display(),
                meta.len()
            );
            return None;
        }
        File::open(&entry).ok()?;
        Some(entry)
    }

    /// Makes the repo blob `blob` (`<cache>/<repo>/blobs/<etag>`, absent) a link to the entry of
    /// `expected`'s content, after hashing the entry. Blocking (it hashes).
    pub fn link_into(&self, blob: &Path, xet_hash: &str, expected: &Expected) -> Reuse {
        let Some(entry) = self.usable_entry(xet_hash, expected.size) else {
            return Reuse::Missing;
        };
        let Some(reference) = self.reference(blob) else {
            return Reuse::Missing;
        };
        let result = (|| -> std::io::Result<Reuse> {
            let _lock = EntryLock::take(&entry)?;
            if self.usable_entry(xet_hash, expected.size).is_none() {
                return Ok(Reuse::Missing);
            }
            if let Err(e) = verify_file(&entry, expected) {
                return Ok(Reuse::Bad {
                    entry: entry.clone(),
                    why: e.to_string(),
                });
            }
            let tmp = temporary_link(blob, &entry)?;
            let done = append_reference(&refs_path(&entry), &reference)
                .and_then(|()| std::fs::rename(&tmp, blob));
            let _ = std::fs::remove_file(&tmp);
            done?;
            Ok(Reuse::Linked(entry.clone()))
        })();
        result.unwrap_or_else(|e| {
            log::debug!(
                "cannot link {} from the shared blob store: {e}",
                blob.display()
            );
            Reuse::Missing
        })
    }

    /// Moves the verified repo blob `blob` (a regular file with `expected`'s content) into the
    /// store and replaces it with a link to the entry; when a good entry exists already, links
    /// to it and drops `blob`. The name is checked first: `blob` goes into the store only when
    /// its content's Xet hash is `xet_hash` (a manifest may lie), and then it also replaces an
    /// entry of that name whose content differs (a squatter: the name proves which is right).
    /// Blocking (it hashes). Best effort: `false` leaves `blob` a regular file.
    pub fn publish(&self, blob: &Path, xet_hash: &str, expected: &Expected) -> bool {
        let (Some(entry), Some(reference)) = (self.entry_path(xet_hash), self.reference(blob))
        else {
            return false;
        };
        if !self.ensure_marked() {
            return false;
        }
        // Linking to a good entry needs no proof of the name; a new entry does (unless the
        // names are trusted), and so does replacing an entry whose content differs.
        let found = self.usable_entry(xet_hash, expected.size).is_some();
        let good_entry = found && verify_file(&entry, expected).is_ok();
        let named_right = !good_entry && (self.check_names || found) && {
            // A panic in the chunker must cost the sharing, not the download.
            let hashed = std::panic::catch_unwind(|| super::xet_hash::of_file(blob))
                .unwrap_or_else(|_| Err(std::io::Error::other("the Xet hasher panicked")));
            match hashed {
                Ok(actual) if actual == xet_hash => true,
                Ok(actual) => {
                    log::warn!(
                        "not sharing {}: its content's Xet hash is {actual}, not {xet_hash} as \
                         the manifest says",
                        blob.display()
                    );
                    return false;
                }
                Err(e) => {
                    log::debug!("cannot hash {}: {e}", blob.display());
                    return false;
                }
            }
        };
        let prefix = entry.parent().expect("prefix dir");
        if let Err(e) = self.ensure_dir(prefix) {
            log::debug!("cannot use {}: {e}", prefix.display());
            return false;
        }
        let mut moved = false;
        let result = (|| -> std::io::Result<()> {
            let _lock = EntryLock::take(&entry)?;
            let tmp = temporary_link(blob, &entry)?;
            let outcome = (|| {
                let existing = self.usable_entry(xet_hash, expected.size).is_some();
                let mut replace = false;
                if existing && let Err(e) = verify_file(&entry, expected) {
                    if !named_right {
                        // Changed since it was checked: keep the repo's own verified copy.
                        return Err(std::io::Error::other(format!(
                            "the existing entry {} does not match ({e})",
                            entry.display()
                        )));
                    }
                    // Our content hashes to the name and differs from the entry's: the entry
                    // is the wrong one. Repos linked to it verified it against a manifest
                    // that lied about this name.
                    log::warn!(
                        "replacing {}: its content is not the one its name (the Xet hash) \
                         stands for ({e})",
                        entry.display()
                    );
                    replace = true;
                } else if !existing && !named_right && self.check_names {
                    return Err(std::io::Error::other(format!(
                        "the entry {} changed while it was checked",
                        entry.display()
                    )));
                }
                append_reference(&refs_path(&entry), &reference)?;
                if !existing || replace {
                    self.prepare_permissions(blob, prefix)?;
                    std::fs::rename(blob, &entry)?;
                    moved = true;
                }
                if let Err(e) = std::fs::rename(&tmp, blob) {
                    if moved {
                        // Restore the repo's copy before anyone can collect the entry.
                        std::fs::copy(&entry, blob)?;
                        moved = false;
                    }
                    return Err(e);
                }
                Ok(())
            })();
            let _ = std::fs::remove_file(&tmp);
            outcome
        })();
        match result {
            Ok(()) => {
                log::debug!("{} published to the shared blob store", blob.display());
                true
            }
            Err(e) => {
                log::info!(
                    "keeping {} in its repository (shared blob store: {e})",
                    blob.display()
                );
                false
            }
        }
    }

    /// Every payload of a marked store (`<cache>/blobs/<xx>/<xet hash>`, regular files).
    pub fn entries(&self) -> Vec<PathBuf> {
        if !self.is_marked() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let Ok(prefixes) = std::fs::read_dir(self.dir()) else {
            return out;
        };
        for prefix in prefixes.flatten() {
            let name = prefix.file_name().to_string_lossy().into_owned();
            if name.len() != 2 || !is_dir(&prefix.path()) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(prefix.path()) else {
                continue;
            };
            for entry in entries.flatten() {
                let hash = entry.file_name().to_string_lossy().into_owned();
                if is_xet_hash(&hash) && hash.starts_with(&name) && is_regular(&entry.path()) {
                    out.push(entry.path());
                }
            }
        }
        out.sort();
        out
    }

    /// The repo blobs that still link to `entry` among those its `.refs` manifest lists;
    /// `None` when the manifest is missing or unreadable (never grounds for deletion).
    pub fn live_references(&self, entry: &Path) -> Option<Vec<PathBuf>> {
        let text =
            super::untrusted::read_text(&refs_path(entry), super::untrusted::MANIFEST).ok()?;
        let mut live = Vec::new();
        for line in text.lines() {
            let rel = Path::new(line);
            if line.is_empty()
                || rel.is_absolute()
                || rel
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
            {
                continue;
            }
            let blob = self.cache_dir.join(rel);
            if self.reference(&blob).is_none() {
                continue;
            }
            let target = match std::fs::read_link(&blob) {
                Ok(t) => blob.parent().map(|p| p.join(&t)).unwrap_or(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => continue,
                Err(_) => return None,
            };
            let same = std::fs::canonicalize(&target)
                .ok()
                .zip(std::fs::canonicalize(entry).ok())
                .is_some_and(|(a, b)| a == b);
            if same && !live.contains(&blob) {
                live.push(blob);
            }
        }
        Some(live)
    }

    /// Removes `entry` (and its manifest) when no repo blob links to it any more, under the
    /// entry's lock; returns the bytes freed (0 when it is still referenced or its manifest is
    /// unreadable). huggingface_hub's `hf cache prune` collects entries the same way.
    pub fn sweep(&self, entry: &Path) -> std::io::Result<u64> {
        if !self.is_marked() || !entry.starts_with(self.dir()) {
            return Ok(0);
        }
        let Some(hash) = entry
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|h| self.entry_path(h).as_deref() == Some(entry))
        else {
            return Ok(0);
        };
        let _lock = EntryLock::take(entry)?;
        match self.live_references(entry) {
            Some(live) if live.is_empty() => {
                let size = std::fs::symlink_metadata(entry)?.len();
                let mut remover = CacheRemover::open(&self.cache_dir)?;
                Ok(if remover.remove(Entry::SharedEntry { hash })? {
                    size
                } else {
                    0
                })
            }
            _ => Ok(0),
        }
    }

    /// `<repo folder>/blobs/<etag>` for a repo blob inside this cache, as the manifest lists it.
    fn reference(&self, blob: &Path) -> Option<String> {
        let rel = blob.strip_prefix(&self.cache_dir).ok()?;
        let parts: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
        let repo_folder = ["models--", "datasets--", "spaces--", "kernels--"];
        (parts.len() == 3
            && repo_folder.iter().any(|p| parts[0].starts_with(p))
            && parts[1] == "blobs"
            && !parts[2].is_empty())
        .then(|| parts.join("/"))
        .filter(|r| !r.contains(['\n', '\r']))
    }

    /// Creates and marks `<cache>/blobs`, refusing an unmarked directory with other content.
    fn ensure_marked(&self) -> bool {
        if self.is_marked() {
            return true;
        }
        let dir = self.dir();
        let result = (|| -> std::io::Result<bool> {
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            if self.is_marked() {
                return Ok(true);
            }
            if !is_dir(&dir) || !only_marker_temporaries(&dir)? {
                log::debug!("not adopting the unmarked directory {}", dir.display());
                return Ok(false);
            }
            self.ensure_dir(&dir)?;
            let tmp = dir.join(format!("{MARKER}.{}.tmp", random_hex()));
            let written = (|| {
                let mut f = create_new_nofollow(&tmp, self.blob_mode())?;
                f.write_all(format!("{LAYOUT_VERSION}\n").as_bytes())?;
                f.sync_all()?;
                std::fs::rename(&tmp, dir.join(MARKER))
            })();
            let _ = std::fs::remove_file(&tmp);
            written?;
            Ok(self.is_marked())
        })();
        result.unwrap_or_else(|e| {
            log::debug!("cannot set up the shared blob store {}: {e}", dir.display());
            false
        })
    }

    /// Creates `dir` if needed and gives it the cache root's access bits (as huggingface_hub).
    fn ensure_dir(&self, dir: &Path) -> std::io::Result<()> {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !is_dir(dir) {
            return Err(std::io::Error::other(format!(
                "{} is not a directory",
                dir.display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let want = self.dir_mode();
            // Through a handle opened without following a link: a link a co-user swapped in
            // after the check above is refused, never chmod'ed through.
            let handle = open_no_link(dir, libc::O_DIRECTORY)?;
            let mode = handle.metadata()?.permissions().mode() & 0o7777;
            if mode != want {
                handle.set_permissions(std::fs::Permissions::from_mode(want))?;
            }
        }
        Ok(())
    }

    /// The mode of the cache root, or `None` when it cannot be read.
    #[cfg(unix)]
    fn cache_mode(&self) -> Option<u32> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&self.cache_dir)
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    /// Entries are read-only, readable by whoever can traverse the cache root.
    fn blob_mode(&self) -> u32 {
        #[cfg(unix)]
        {
            let Some(mode) = self.cache_mode() else {
                return 0o400;
            };
            0o400
                | if mode & 0o010 != 0 { 0o040 } else { 0 }
                | if mode & 0o001 != 0 { 0o004 } else { 0 }
        }
        #[cfg(not(unix))]
        0o666
    }

    /// Store directories mirror the cache root's access and inheritance bits.
    #[cfg(unix)]
    fn dir_mode(&self) -> u32 {
        self.cache_mode()
            .map_or(0o700, |m| m & (0o777 | 0o2000 | 0o1000))
    }

    /// Makes `blob` read-only (the store's mode) and gives it the prefix directory's group.
    fn prepare_permissions(&self, blob: &Path, prefix: &Path) -> std::io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let mode = self.blob_mode();
            let handle = open_no_link(blob, 0)?;
            handle.set_permissions(std::fs::Permissions::from_mode(mode))?;
            let gid = std::fs::metadata(prefix)?.gid();
            if handle.metadata()?.gid() != gid
                && let Err(e) = std::os::unix::fs::fchown(&handle, None, Some(gid))
                && mode & 0o040 != 0
                && mode & 0o004 == 0
            {
                // Group-only access with the wrong group: other users could not read it.
                return Err(e);
            }
        }
        #[cfg(not(unix))]
        let _ = (blob, prefix);
        Ok(())
    }
}

/// `<entry>.refs`.
fn refs_path(entry: &Path) -> PathBuf {
    with_suffix(entry, ".refs")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn is_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

fn is_regular(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_file())
}

/// Whether `dir` holds nothing but abandoned marker temporaries (which are removed).
fn only_marker_temporaries(dir: &Path) -> std::io::Result<bool> {
    let mut temps = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_temp = name
            .strip_prefix(&format!("{MARKER}."))
            .and_then(|r| r.strip_suffix(".tmp"))
            .is_some_and(|h| h.len() == 8 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !is_temp || !is_regular(&entry.path()) {
            return Ok(false);
        }
        temps.push(entry.path());
    }
    for t in temps {
        let _ = std::fs::remove_file(t);
    }
    Ok(true)
}

/// Eight random hex digits for temporary names nobody can predict.
fn random_hex() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

/// A relative symlink next to `blob` (`.<etag>.<random>.shared`) pointing at `entry`.
fn temporary_link(blob: &Path, entry: &Path) -> std::io::Result<PathBuf> {
    let name = blob.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = blob.with_file_name(format!(
        ".{}.{}.shared",
        name.unwrap_or_default(),
        random_hex()
    ));
    // <cache>/<repo>/blobs/<etag> -> ../../blobs/<xx>/<hash>
    let mut target = PathBuf::from("../..");
    let mut tail = entry.iter().rev().take(3).collect::<Vec<_>>();
    tail.reverse();
    for part in tail {
        target.push(part);
    }
    symlink(&target, &tmp)?;
    Ok(tmp)
}

// Tests set this (on their own thread) to stand for a filesystem without symlinks (FAT, some
// network mounts).
#[cfg(test)]
thread_local! {
    static NO_SYMLINKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    if NO_SYMLINKS.with(std::cell::Cell::get) {
        return Err(std::io::Error::from(std::io::ErrorKind::Unsupported));
    }
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no symlinks on this platform"))
}

/// Opens (creating with `mode`) without following a symlink at `path`.
fn open_nofollow(path: &Path, append: bool, mode: u32) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).append(append);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW).mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let f = o.open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Other users of a shared (group) cache take the same lock and append the same
        // manifest: group-writable as huggingface_hub makes them, never world-writable.
        if f.metadata()?.permissions().mode() & 0o7777 != mode {
            let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
        }
    }
    Ok(f)
}

/// Opens `path` read-only without following a link at it (`extra`: more `O_*` flags), for
/// changing its mode through the handle.
#[cfg(unix)]
fn open_no_link(path: &Path, extra: i32) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | extra)
        .open(path)
}

fn create_new_nofollow(path: &Path, mode: u32) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW).mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    o.open(path)
}

/// Appends one reference line to a `.refs` manifest and flushes it to disk.
fn append_reference(manifest: &Path, reference: &str) -> std::io::Result<()> {
    let mut f = open_nofollow(manifest, true, SHARED_FILE_MODE)?;
    f.write_all(format!("{reference}\n").as_bytes())?;
    f.sync_all()
}

/// The flock on `<entry>.lock`, as huggingface_hub takes it.
struct EntryLock(File);

impl EntryLock {
    fn take(entry: &Path) -> std::io::Result<Self> {
        let path = with_suffix(entry, ".lock");
        let f = open_nofollow(&path, false, SHARED_FILE_MODE)?;
        let start = Instant::now();
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(Self(f)),
                Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(std::io::Error::other(format!(
                        "{} stayed locked for {}s",
                        path.display(),
                        LOCK_WAIT.as_secs()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{Algo, sha256_hex};

    /// The Xet hash of `data`: the name the store files it under.
    fn name(data: &[u8]) -> String {
        crate::store::xet_hash::of_reader(data).unwrap()
    }

    fn expected(data: &[u8]) -> Expected {
        Expected {
            size: data.len() as u64,
            algo: Algo::Sha256,
            digest: sha256_hex(data),
        }
    }

    fn repo_blob(cache: &Path, repo: &str, data: &[u8]) -> PathBuf {
        let blobs = cache.join(repo).join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let blob = blobs.join(sha256_hex(data));
        std::fs::write(&blob, data).unwrap();
        blob
    }

    #[test]
    fn publish_moves_the_blob_into_a_marked_store_and_links_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedBlobs::new(dir.path());
        let data = b"weights".as_slice();
        let blob = repo_blob(dir.path(), "models--a--one", data);
        let hash = name(data);
        assert!(store.publish(&blob, &hash, &expected(data)));
        let entry = store.entry_path(&hash).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("blobs").join(MARKER)).unwrap(),
            "1\n"
        );
        assert_eq!(std::fs::read(&entry).unwrap(), data);
        assert_eq!(
            std::fs::read_link(&blob).unwrap(),
            Path::new("../../blobs").join(&hash[..2]).join(&hash)
        );
        assert_eq!(std::fs::read(&blob).unwrap(), data);
        let refs = std::fs::read_to_string(refs_path(&entry)).unwrap();
        assert_eq!(refs, format!("models--a--one/blobs/{}\n", sha256_hex(data)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o222, 0, "entries are read-only: {mode:o}");
            // Its manifest and lock: writable by the group that shares the cache, not by all.
            for side in [refs_path(&entry), with_suffix(&entry, ".lock")] {
                let mode = std::fs::metadata(&side).unwrap().permissions().mode() & 0o777;
                assert_eq!(
                    mode & 0o002,
                    0,
                    "{} is world-writable: {mode:o}",
                    side.display()
                );
            }
        }
    }

    #[test]
    fn a_second_repo_links_to_the_verified_entry_and_a_bad_entry_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedBlobs::new(dir.path());
        let data = b"same content".as_slice();
        let first = repo_blob(dir.path(), "models--a--one", data);
        let hash = name(data);
        let hash = hash.as_str();
        assert!(store.publish(&first, hash, &expected(data)));
        let second = dir
            .path()
            .join("models--b--two/blobs")
            .join(sha256_hex(data));
        std::fs::create_dir_all(second.parent().unwrap()).unwrap();
        let entry = store.entry_path(hash).unwrap();
        assert!(
            matches!(store.link_into(&second, hash, &expected(data)), Reuse::Linked(e) if e == entry)
        );
        assert_eq!(std::fs::read(&second).unwrap(), data);
        let refs = std::fs::read_to_string(refs_path(&entry)).unwrap();
        assert_eq!(refs.lines().count(), 2, "{refs}");

        // Same size, other content: never linked, never deleted.
        let other = b"SAME CONTENT".as_slice();
        let third = dir
            .path()
            .join("models--c--three/blobs")
            .join(sha256_hex(other));
        std::fs::create_dir_all(third.parent().unwrap()).unwrap();
        assert!(matches!(
            store.link_into(&third, hash, &expected(other)),
            Reuse::Bad { .. }
        ));
        assert!(std::fs::symlink_metadata(&third).is_err());
        assert_eq!(std::fs::read(&entry).unwrap(), data);
        // Wrong size or no entry: a plain miss.
        assert!(matches!(
            store.link_into(&third, hash, &expected(b"x")),
            Reuse::Missing
        ));
        let none = "cd".repeat(32);
        assert!(matches!(
            store.link_into(&third, &none, &expected(other)),
            Reuse::Missing
        ));
    }

    #[test]
    fn a_blob_is_never_shared_under_a_name_its_content_does_not_hash_to() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedBlobs::new(dir.path());
        let data = b"what the bucket served".as_slice();
        let blob = repo_blob(dir.path(), "models--a--one", data);
        // A manifest gave it the Xet hash of a popular file.
        let popular = name(b"a popular file");
        assert!(!store.publish(&blob, &popular, &expected(data)));
        assert!(std::fs::symlink_metadata(&blob).unwrap().is_file());
        assert_eq!(std::fs::read(&blob).unwrap(), data);
        assert!(!store.entry_path(&popular).unwrap().exists());
    }

    #[test]
    fn a_squatting_entry_is_replaced_by_content_that_hashes_to_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedBlobs::new(dir.path());
        let real = b"the real weights".as_slice();
        let hash = name(real);
        // Planted: other content (same size) under the real file's name.
        let fake = b"THE REAL WEIGHTS".as_slice();
        assert!(store.ensure_marked());
        let entry = store.entry_path(&hash).unwrap();
        std::fs::create_dir_all(entry.parent().unwrap()).unwrap();
        std::fs::write(&entry, fake).unwrap();
        let blob = repo_blob(dir.path(), "models--a--one", real);
        assert!(store.publish(&blob, &hash, &expected(real)));
        assert_eq!(std::fs::read(&entry).unwrap(), real, "the squatter is gone");
        assert!(std::fs::symlink_metadata(&blob).unwrap().is_symlink());
        assert_eq!(std::fs::read(&blob).unwrap(), real);
        // A second repo now links to the real content.
        let second = dir
            .path()
            .join("models--b--two/blobs")
            .join(sha256_hex(real));
        std::fs::create_dir_all(second.parent().unwrap()).unwrap();
        assert!(matches!(
            store.link_into(&second, &hash, &expected(real)),
            Reuse::Linked(_)
        ));
    }

    #[test]
    fn a_store_trusting_names_publishes_without_hashing_but_replaces_only_with_proof() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedBlobs::new(dir.path()).trusting_names();
        // Taken as named (the Hub listed the name): no second read of the file.
        let data = b"weights the Hub listed".as_slice();
        let blob = repo_blob(dir.path(), "models--a--one", data);
        let listed = name(b"whatever the Hub says");
        assert!(store.publish(&blob, &listed, &expected(data)));
        assert_eq!(
            std::fs::read(store.entry_path(&listed).unwrap()).unwrap(),
            data
        );
        // An entry whose content differs is replaced only by content proven to hash to the
        // name: this blob does not, so the entry stays and the repo keeps its own copy.
        let other = b"WEIGHTS THE HUB LISTED".as_slice();
        let second = repo_blob(dir.path(), "models--b--two", other);
        assert!(!store.publish(&second, &listed, &expected(other)));
        assert_eq!(
            std::fs::read(store.entry_path(&listed).unwrap()).unwrap(),
            data
        );
        assert!(std::fs::symlink_metadata(&second).unwrap().is_file());
    }

    #[test]
    fn without_symlinks_blobs_stay_per_repo() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedBlobs::new(dir.path());
        let data = b"weights".as_slice();
        let blob = repo_blob(dir.path(), "models--a--one", data);
        let hash = name(data);
        NO_SYMLINKS.with(|f| f.set(true));
        let published = store.publish(&blob, &hash, &expected(data));
        NO_SYMLINKS.with(|f| f.set(false));
        assert!(!published);
        assert!(
            std::fs::symlink_metadata(&blob).unwrap().is_file(),
            "the repo keeps its blob"
        );
        assert_eq!(std::fs::read(&blob).unwrap(), data);
        assert!(
            store.entry_path(&hash).is_some_and(|e| !e.exists()),
            "nothing moved into the store"
        );
    }

    #[test]
    fn an_unmarked_blobs_directory_with_other_content_is_not_adopted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/someone-elses"), b"x").unwrap();
        let store = SharedBlobs::new(dir.path());
        let data = b"weights".as_slice();
        let blob = repo_blob(dir.path(), "models--a--one", data);
        assert!(!store.publish(&blob, &name(data), &expected(data)));
        assert!(std::fs::symlink_metadata(&blob).unwrap().is_file());
        assert!(!dir.path().join("blobs").join(MARKER).exists());
    }

    #[test]
    fn only_repo_blobs_of_this_cache_are_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = SharedBlobs::new(dir.path());
        let c = dir.path();
        assert_eq!(
            store.reference(&c.join("models--a--b/blobs/e1")).as_deref(),
            Some("models--a--b/blobs/e1")
        );
        assert_eq!(store.reference(&c.join("other/blobs/e1")), None);
        assert_eq!(store.reference(&c.join("models--a--b/snapshots/e1")), None);
        assert_eq!(
            store.reference(Path::new("/elsewhere/models--a--b/blobs/e1")),
            None
        );
        assert!(!is_xet_hash(&"AB".repeat(32)));
        assert!(store.entry_path("../x").is_none());
    }
}
