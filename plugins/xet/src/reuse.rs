//! Chunk reuse: a Xet file is reconstructed from the chunks already on disk where it can, and
//! only the rest crosses the network.
//!
//! A Xet file is a sequence of *terms* (the CAS reconstruction API lists them): a xorb hash, a
//! chunk range `[start, end)` in that xorb, and the unpacked length. Two files that share content
//! share terms or parts of terms: a new revision that changed 2 MiB of 32 MiB is the old xorb's
//! chunks before the change, a new xorb, then the old xorb's chunks after it. So:
//!
//! - **The index** (`<cache>/.hubget/xet/index/<xx>/<xet hash>.json`, one file per Xet file,
//!   immutable like the hash it is named after) keeps a file's terms and, once known, the length
//!   of every chunk of every term. It is written after a file is fetched, and rebuilt for the
//!   cached Xet files of the repository being fetched when missing (one metadata request each).
//!   Chunk lengths are computed locally, when first needed, by running Xet's content-defined
//!   chunker over the cached file (the same chunker made the chunks), and kept only when every
//!   term's chunk lengths add up to its unpacked length.
//! - **Sources** are the cached copies of indexed files: the shared blob store entry
//!   (`<cache>/blobs/<xx>/<xet hash>`, where every verified Xet file lands), or the partial file
//!   of a file fetched earlier in this process. No second copy of the data is kept: reuse reads
//!   the blobs that are already there.
//! - **The plan** ([`ChunkMap::plan`]) walks the new file's terms: a term found whole in a
//!   source is copied; otherwise the run of known chunks at its start and at its end is copied,
//!   and what is left is a hole, fetched from the CAS.
//!
//! The host's sha256 check stays the final word on the result; a file asked for again in the
//! same run (it failed verification) is fetched without reuse, and the index entries of the
//! sources it used are dropped.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use hubget_plugin_api::{CancelToken, ErrorKind, PluginError};
use serde::{Deserialize, Serialize};

/// One reconstruction term: chunks `start..end` of `xorb`, `len` bytes unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    /// The xorb hash (hex).
    pub xorb: String,
    /// First chunk index.
    pub start: u32,
    /// One past the last chunk index.
    pub end: u32,
    /// Unpacked bytes.
    pub len: u64,
}

/// What the index knows of one Xet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunks {
    /// The file's size.
    pub size: u64,
    /// Its terms, in file order.
    pub terms: Vec<Term>,
    /// Per term, the length of each chunk (absent until computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_lens: Option<Vec<Vec<u32>>>,
}

impl FileChunks {
    /// Whether `chunk_lens` agrees with the terms.
    fn lens_fit(&self, lens: &[Vec<u32>]) -> bool {
        lens.len() == self.terms.len()
            && self.terms.iter().zip(lens).all(|(t, l)| {
                l.len() == (t.end - t.start) as usize
                    && l.iter().map(|&x| u64::from(x)).sum::<u64>() == t.len
            })
    }
}

/// The on-disk index, next to the cache.
#[derive(Debug, Clone)]
pub struct ChunkIndex {
    cache_dir: PathBuf,
    dir: PathBuf,
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl ChunkIndex {
    /// The index of the cache at `cache_dir`.
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            cache_dir: cache_dir.to_path_buf(),
            dir: cache_dir.join(".hubget").join("xet").join("index"),
        }
    }

    fn path(&self, hash: &str) -> Option<PathBuf> {
        is_hash(hash).then(|| self.dir.join(&hash[..2]).join(format!("{hash}.json")))
    }

    /// The entry of `hash`, if any and well-formed. The index lies under a cache other users
    /// may write: only a regular file is read, never through a link, never a FIFO or a device,
    /// at most [`MAX_ENTRY_BYTES`].
    pub fn load(&self, hash: &str) -> Option<FileChunks> {
        let text = read_regular(&self.path(hash)?, MAX_ENTRY_BYTES).ok()?;
        parse_entry(&text)
    }

    /// Writes the entry of `hash` (atomically; best effort), never through a folder that is a
    /// link (a co-user's link there would send the write elsewhere).
    pub fn save(&self, hash: &str, entry: &FileChunks) {
        let Some(path) = self.path(hash) else { return };
        let result = (|| -> std::io::Result<()> {
            let dir = path.parent().expect("prefix dir");
            std::fs::create_dir_all(dir)?;
            let mut at = self.cache_dir.clone();
            for part in dir
                .strip_prefix(&self.cache_dir)
                .unwrap_or(dir)
                .components()
            {
                at.push(part);
                if std::fs::symlink_metadata(&at)?.file_type().is_symlink() {
                    return Err(std::io::Error::other(format!(
                        "{} is a link; the index is not written through it",
                        at.display()
                    )));
                }
            }
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            serde_json::to_writer(&mut tmp, entry).map_err(std::io::Error::other)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
        if let Err(e) = result {
            log::debug!("cannot save the chunk index of {hash}: {e}");
        }
    }

    /// Forgets the entry of `hash` (it led to a file that failed verification).
    pub fn drop_entry(&self, hash: &str) {
        if let Some(p) = self.path(hash) {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Every entry's hash.
    pub fn hashes(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(prefixes) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for prefix in prefixes.flatten() {
            let Ok(files) = std::fs::read_dir(prefix.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(h) = name.strip_suffix(".json").filter(|h| is_hash(h)) {
                    out.push(h.to_owned());
                }
            }
        }
        out
    }

    /// The shared blob store entry of `hash`, if it is a regular file of `size` bytes.
    pub fn store_entry(&self, hash: &str, size: u64) -> Option<PathBuf> {
        if !is_hash(hash) {
            return None;
        }
        let p = self.cache_dir.join("blobs").join(&hash[..2]).join(hash);
        let meta = std::fs::symlink_metadata(&p).ok()?;
        (meta.file_type().is_file() && meta.len() == size).then_some(p)
    }

    /// The Xet hashes of the repository folder's blobs that link into the shared store.
    pub fn repo_xet_hashes(&self, repo_folder: &str) -> Vec<String> {
        let blobs = self.cache_dir.join(repo_folder).join("blobs");
        let Ok(entries) = std::fs::read_dir(blobs) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| is_hash(n))
            .collect()
    }
}

/// The largest index entry read (a file of 100 GB in 64 KiB chunks needs about 12 MB).
pub const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// The bytes of the regular file at `path`, at most `cap`: no link followed, no FIFO waited on.
fn read_regular(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > cap {
        return Err(std::io::Error::other("not a regular file of a sane size"));
    }
    let mut out = Vec::new();
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(std::io::Error::other("grew past the cap"));
    }
    Ok(out)
}

/// The terms of Xet file `hash` from the CAS (a whole-file reconstruction query), with the
/// answer itself (its fetch ranges serve the download that follows).
pub async fn reconstruction(
    cas: &crate::cas::Cas,
    hash: &str,
    cancel: &CancelToken,
) -> Result<(FileChunks, crate::cas::Reconstruction), PluginError> {
    let answer = cas.reconstruction(hash, None, cancel).await?;
    if answer.offset_into_first_range != 0 {
        return Err(PluginError::new(
            ErrorKind::PROTOCOL,
            format!(
                "reconstruction of {hash}: a whole-file reconstruction starts inside its first term"
            ),
        ));
    }
    let chunks = from_terms(hash, answer.terms.clone())?;
    Ok((chunks, answer))
}

/// A file's chunk map from the terms of its whole-file reconstruction (one query, or its entry
/// in a batch query).
pub fn from_terms(hash: &str, terms: Vec<crate::cas::WireTerm>) -> Result<FileChunks, PluginError> {
    let context = format!("reconstruction of {hash}");
    let terms: Vec<Term> = terms
        .into_iter()
        .map(|t| Term {
            xorb: t.hash.to_ascii_lowercase(),
            start: t.range.start,
            end: t.range.end,
            len: t.unpacked_length,
        })
        .collect();
    if terms.iter().any(|t| t.end <= t.start || !is_hash(&t.xorb)) {
        return Err(PluginError::new(
            ErrorKind::PROTOCOL,
            format!("{context}: a reconstruction term is malformed"),
        ));
    }
    let size = terms.iter().map(|t| t.len).sum();
    Ok(FileChunks {
        size,
        terms,
        chunk_lens: None,
    })
}

/// An index entry from its file's bytes; `None` unless well-formed (terms that run forward and
/// add up to the size; chunk lengths that do not fit are dropped). Also the fuzz entry point
/// of the index format.
pub fn parse_entry(text: &[u8]) -> Option<FileChunks> {
    let mut entry: FileChunks = serde_json::from_slice(text).ok()?;
    if entry.terms.iter().any(|t| t.end <= t.start)
        || entry
            .terms
            .iter()
            .try_fold(0u64, |n, t| n.checked_add(t.len))
            != Some(entry.size)
    {
        return None;
    }
    if let Some(lens) = &entry.chunk_lens
        && !entry.lens_fit(lens)
    {
        entry.chunk_lens = None;
    }
    Some(entry)
}

/// The chunk lengths of `path` per term of `entry`, by Xet's content-defined chunker; `None`
/// when they do not add up to the terms (a different file, or a different chunker).
pub fn chunk_lens(file: &File, entry: &FileChunks) -> Option<Vec<Vec<u32>>> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata().ok()?.len();
    if size != entry.size {
        return None;
    }
    let mut chunker = xet_data::deduplication::Chunker::default();
    let mut lens: Vec<u32> = Vec::new();
    let mut buf = vec![0u8; 8 << 20];
    let mut at = 0u64;
    while at < size {
        let want = buf.len().min((size - at) as usize);
        file.read_exact_at(&mut buf[..want], at).ok()?;
        at += want as u64;
        // The last block is final: the chunker closes the last chunk with it.
        for c in chunker.next_block(&buf[..want], at == size) {
            lens.push(u32::try_from(c.data.len()).ok()?);
        }
    }
    let mut out = Vec::with_capacity(entry.terms.len());
    let mut it = lens.into_iter();
    for t in &entry.terms {
        out.push(
            it.by_ref()
                .take((t.end - t.start) as usize)
                .collect::<Vec<_>>(),
        );
    }
    (it.next().is_none() && entry.lens_fit(&out)).then_some(out)
}

/// One local copy: `len` bytes of `src` at `src_offset` go to `dst_offset` of the new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// Index into [`ChunkMap::sources`].
    pub src: usize,
    /// Where in the source.
    pub src_offset: u64,
    /// Where in the new file.
    pub dst_offset: u64,
    /// How many bytes.
    pub len: u64,
}

/// Where chunks can be found locally.
#[derive(Debug, Default)]
pub struct ChunkMap {
    /// Source files (cached blobs or partial files, opened: a rename while the plan runs does
    /// not matter), with the Xet hash of their content.
    pub sources: Vec<(std::sync::Arc<File>, String)>,
    /// (xorb, start, end) -> (source, offset) of whole terms.
    terms: HashMap<(String, u32, u32), (usize, u64)>,
    /// (xorb, chunk) -> (source, offset, len).
    chunks: HashMap<(String, u32), (usize, u64, u32)>,
}

impl ChunkMap {
    /// Adds `path` (the content of Xet file `hash`, described by `entry`) as a source.
    pub fn add(&mut self, file: std::sync::Arc<File>, hash: &str, entry: &FileChunks) {
        let src = self.sources.len();
        self.sources.push((file, hash.to_owned()));
        let mut at = 0u64;
        for (i, t) in entry.terms.iter().enumerate() {
            self.terms
                .entry((t.xorb.clone(), t.start, t.end))
                .or_insert((src, at));
            if let Some(lens) = entry.chunk_lens.as_ref().map(|l| &l[i]) {
                let mut c = at;
                for (k, &len) in lens.iter().enumerate() {
                    self.chunks
                        .entry((t.xorb.clone(), t.start + k as u32))
                        .or_insert((src, c, len));
                    c += u64::from(len);
                }
            }
            at += t.len;
        }
    }

    /// Whether any term of `terms` shares a xorb with `entry` without matching one of its
    /// terms exactly (so `entry`'s chunk lengths would help).
    pub fn needs_chunks(terms: &[Term], entry: &FileChunks) -> bool {
        let exact: std::collections::HashSet<(&str, u32, u32)> = entry
            .terms
            .iter()
            .map(|t| (t.xorb.as_str(), t.start, t.end))
            .collect();
        let xorbs: std::collections::HashSet<&str> =
            entry.terms.iter().map(|t| t.xorb.as_str()).collect();
        terms.iter().any(|t| {
            xorbs.contains(t.xorb.as_str()) && !exact.contains(&(t.xorb.as_str(), t.start, t.end))
        })
    }

    /// Whether `terms` share any xorb with `entry`.
    pub fn shares_xorbs(terms: &[Term], entry: &FileChunks) -> bool {
        let xorbs: std::collections::HashSet<&str> =
            entry.terms.iter().map(|t| t.xorb.as_str()).collect();
        terms.iter().any(|t| xorbs.contains(t.xorb.as_str()))
    }

    /// The local copies for the parts of the file with `terms` that lie in `want` (ranges of
    /// the file still to be written), merged where contiguous.
    pub fn plan(&self, terms: &[Term], want: &[Range<u64>]) -> Vec<Copy> {
        let mut out: Vec<Copy> = Vec::new();
        let mut push = |src: usize, src_offset: u64, dst_offset: u64, len: u64| {
            for w in want {
                let (a, b) = (dst_offset.max(w.start), (dst_offset + len).min(w.end));
                if a >= b {
                    continue;
                }
                let c = Copy {
                    src,
                    src_offset: src_offset + (a - dst_offset),
                    dst_offset: a,
                    len: b - a,
                };
                match out.last_mut() {
                    Some(l)
                        if l.src == c.src
                            && l.src_offset + l.len == c.src_offset
                            && l.dst_offset + l.len == c.dst_offset =>
                    {
                        l.len += c.len
                    }
                    _ => out.push(c),
                }
            }
        };
        let mut at = 0u64;
        for t in terms {
            if let Some(&(src, off)) = self.terms.get(&(t.xorb.clone(), t.start, t.end)) {
                push(src, off, at, t.len);
                at += t.len;
                continue;
            }
            // The known chunks at the start of the term...
            let mut front = at;
            let mut i = t.start;
            while i < t.end {
                let Some(&(src, off, len)) = self.chunks.get(&(t.xorb.clone(), i)) else {
                    break;
                };
                push(src, off, front, u64::from(len));
                front += u64::from(len);
                i += 1;
            }
            // ...and at its end.
            let mut back = at + t.len;
            let mut j = t.end;
            let mut tail = Vec::new();
            while j > i {
                let Some(&(src, off, len)) = self.chunks.get(&(t.xorb.clone(), j - 1)) else {
                    break;
                };
                back -= u64::from(len);
                tail.push((src, off, back, u64::from(len)));
                j -= 1;
            }
            for (src, off, dst, len) in tail.into_iter().rev() {
                push(src, off, dst, len);
            }
            at += t.len;
        }
        out
    }
}

/// Runs `copies` from their sources into `dst`; returns the bytes copied and the copies that
/// failed (their source vanished or shrank: the caller fetches those bytes instead).
pub fn run_copies(map: &ChunkMap, copies: &[Copy], dst: &Path) -> (u64, Vec<Copy>) {
    let Ok(out) = std::fs::OpenOptions::new().write(true).open(dst) else {
        return (0, copies.to_vec());
    };
    let mut failed = Vec::new();
    let mut done = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for c in copies {
        let ok = copy_range(&map.sources[c.src].0, &out, c, &mut buf).is_ok();
        if ok {
            done += c.len;
        } else {
            failed.push(c.clone());
        }
    }
    (done, failed)
}

fn copy_range(src: &File, dst: &File, c: &Copy, buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut left = c.len;
    let (mut from, mut to) = (c.src_offset, c.dst_offset);
    while left > 0 {
        let n = buf.len().min(left as usize);
        src.read_exact_at(&mut buf[..n], from)?;
        dst.write_all_at(&buf[..n], to)?;
        left -= n as u64;
        from += n as u64;
        to += n as u64;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range plans read best as `&[a..b]`
mod tests {
    use super::*;

    fn term(x: char, start: u32, end: u32, len: u64) -> Term {
        Term {
            xorb: x.to_string().repeat(64),
            start,
            end,
            len,
        }
    }

    #[test]
    fn whole_terms_and_known_chunk_runs_are_copied_the_rest_is_left() {
        // The old file: xorb a, chunks 0..4 of 10 bytes each.
        let old = FileChunks {
            size: 40,
            terms: vec![term('a', 0, 4, 40)],
            chunk_lens: Some(vec![vec![10, 10, 10, 10]]),
        };
        let mut map = ChunkMap::default();
        map.add(
            std::sync::Arc::new(tempfile::tempfile().unwrap()),
            &"0".repeat(64),
            &old,
        );
        // The new file: a[0..1], then new xorb b, then a[2..4], then a[0..4] whole.
        let new = vec![
            term('a', 0, 1, 10),
            term('b', 0, 1, 7),
            term('a', 2, 4, 20),
            term('a', 0, 4, 40),
        ];
        let plan = map.plan(&new, &[0..77]);
        let copied: u64 = plan.iter().map(|c| c.len).sum();
        assert_eq!(copied, 70, "{plan:?}");
        assert_eq!(
            plan[0],
            Copy {
                src: 0,
                src_offset: 0,
                dst_offset: 0,
                len: 10
            }
        );
        assert_eq!(
            plan[1],
            Copy {
                src: 0,
                src_offset: 20,
                dst_offset: 17,
                len: 20
            }
        );
        assert_eq!(
            plan[2],
            Copy {
                src: 0,
                src_offset: 0,
                dst_offset: 37,
                len: 40
            }
        );
        // Only what is still wanted.
        let plan = map.plan(&new, &[5..20]);
        assert_eq!(
            plan,
            vec![
                Copy {
                    src: 0,
                    src_offset: 5,
                    dst_offset: 5,
                    len: 5
                },
                Copy {
                    src: 0,
                    src_offset: 20,
                    dst_offset: 17,
                    len: 3
                }
            ]
        );
    }

    #[test]
    fn without_chunk_lengths_only_exact_terms_match() {
        let old = FileChunks {
            size: 40,
            terms: vec![term('a', 0, 4, 40)],
            chunk_lens: None,
        };
        let mut map = ChunkMap::default();
        map.add(
            std::sync::Arc::new(tempfile::tempfile().unwrap()),
            &"0".repeat(64),
            &old,
        );
        assert!(map.plan(&[term('a', 0, 2, 20)], &[0..20]).is_empty());
        assert!(ChunkMap::needs_chunks(&[term('a', 0, 2, 20)], &old));
        assert!(!ChunkMap::needs_chunks(&[term('a', 0, 4, 40)], &old));
        assert!(!ChunkMap::shares_xorbs(&[term('b', 0, 4, 40)], &old));
    }

    #[test]
    fn chunk_lengths_that_do_not_add_up_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 1000]).unwrap();
        let right = FileChunks {
            size: 1000,
            terms: vec![term('a', 0, 1, 1000)],
            chunk_lens: None,
        };
        let f = File::open(&p).unwrap();
        assert_eq!(chunk_lens(&f, &right), Some(vec![vec![1000]]));
        let wrong = FileChunks {
            size: 1000,
            terms: vec![term('a', 0, 2, 1000)],
            chunk_lens: None,
        };
        assert_eq!(chunk_lens(&f, &wrong), None);
    }

    #[test]
    fn the_index_round_trips_and_rejects_inconsistent_entries() {
        let dir = tempfile::tempdir().unwrap();
        let index = ChunkIndex::new(dir.path());
        let h = "ab".repeat(32);
        let e = FileChunks {
            size: 40,
            terms: vec![term('a', 0, 4, 40)],
            chunk_lens: Some(vec![vec![10, 10, 10, 10]]),
        };
        index.save(&h, &e);
        assert_eq!(index.load(&h), Some(e.clone()));
        assert_eq!(index.hashes(), vec![h.clone()]);
        // Lengths that do not fit the terms are ignored, not trusted.
        let mut bad = e.clone();
        bad.chunk_lens = Some(vec![vec![10, 10]]);
        index.save(&h, &bad);
        assert_eq!(index.load(&h).unwrap().chunk_lens, None);
        index.drop_entry(&h);
        assert_eq!(index.load(&h), None);
        assert_eq!(index.load("../x"), None);
        // A term that ends before it starts is refused, not a panic later.
        let mut backwards = e.clone();
        backwards.terms[0].end = 0;
        index.save(&h, &backwards);
        assert_eq!(index.load(&h), None);
    }

    #[cfg(unix)]
    #[test]
    fn planted_links_fifos_and_linked_folders_are_never_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let index = ChunkIndex::new(dir.path());
        let h = "cd".repeat(32);
        let path = index.path(&h).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // A link to /dev/zero would be read for ever; a FIFO would block: both refused at once.
        symlink("/dev/zero", &path).unwrap();
        assert_eq!(index.load(&h), None);
        std::fs::remove_file(&path).unwrap();
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(index.load(&h), None);
        std::fs::remove_file(&path).unwrap();
        // A prefix folder that is a link: nothing is written through it.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::remove_dir(path.parent().unwrap()).unwrap();
        symlink(&elsewhere, path.parent().unwrap()).unwrap();
        let e = FileChunks {
            size: 40,
            terms: vec![term('a', 0, 4, 40)],
            chunk_lens: None,
        };
        index.save(&h, &e);
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
