//! Verification of downloaded files: the size, plus sha256 for LFS/Xet files or the git blob
//! sha1 (`sha1("blob {size}\0" + bytes)`) for regular files. Hashing is incremental: the engine
//! advances a [`FileHasher`] behind the backend's CHECKPOINT watermark while the file downloads
//! (the bytes are still in the page cache), so completion only hashes the tail.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use hubget_plugin_api::ManifestFile;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Which hash identifies a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// sha256 of the content (LFS and Xet files).
    Sha256,
    /// git blob sha1 (regular files).
    GitSha1,
}

impl Algo {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::GitSha1 => "git-sha1",
        }
    }
}

/// What a file must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Size in bytes.
    pub size: u64,
    /// The identifying hash.
    pub algo: Algo,
    /// Lowercase hex digest.
    pub digest: String,
}

impl Expected {
    /// The checks for a manifest file: sha256 when it has one, else its git oid.
    pub fn for_file(file: &ManifestFile) -> Self {
        match file.sha256.as_ref().into_option() {
            Some(sha) => Self {
                size: file.size,
                algo: Algo::Sha256,
                digest: sha.as_str().to_ascii_lowercase(),
            },
            None => Self {
                size: file.size,
                algo: Algo::GitSha1,
                digest: file.git_oid.as_str().to_ascii_lowercase(),
            },
        }
    }
}

/// A verification failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The file has the wrong length.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size {
        /// Expected size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The content hash differs.
    #[error("{} mismatch: expected {expected}, got {actual}", algo.name())]
    Hash {
        /// Which hash.
        algo: Algo,
        /// Expected hex digest.
        expected: String,
        /// Actual hex digest.
        actual: String,
    },
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
}

/// Digests of a verified file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// sha256 hex of the content.
    pub sha256: String,
    /// git blob sha1 hex, when computed (regular files).
    pub git_sha1: Option<String>,
}

/// An incremental hasher over a growing file: feed it prefixes with [`FileHasher::advance`].
#[derive(Clone)]
pub struct FileHasher {
    expected: Expected,
    sha256: Sha256,
    sha1: Option<Sha1>,
    pos: u64,
}

impl std::fmt::Debug for FileHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHasher")
            .field("expected", &self.expected)
            .field("pos", &self.pos)
            .finish()
    }
}

const BUF: usize = 1 << 20;

impl FileHasher {
    /// A hasher at position 0 for a file expected to match `expected`.
    pub fn new(expected: Expected) -> Self {
        let sha1 = (expected.algo == Algo::GitSha1).then(|| {
            let mut h = Sha1::new();
            h.update(format!("blob {}\0", expected.size).as_bytes());
            h
        });
        Self {
            expected,
            sha256: Sha256::new(),
            sha1,
            pos: 0,
        }
    }

    /// How many bytes have been hashed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// What the file must match.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Starts over (after the partial file was discarded).
    pub fn reset(&mut self) {
        *self = Self::new(self.expected.clone());
    }

    /// Feeds bytes directly (tests, in-memory data).
    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        if let Some(h) = self.sha1.as_mut() {
            h.update(data);
        }
        self.pos += data.len() as u64;
    }

    /// Hashes bytes `position()..upto` of `path` (fewer if the file is shorter).
    pub fn advance(&mut self, path: &Path, upto: u64) -> std::io::Result<()> {
        if upto <= self.pos {
            return Ok(());
        }
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(self.pos))?;
        let mut buf = vec![0u8; BUF.min((upto - self.pos) as usize).max(1)];
        while self.pos < upto {
            let want = buf.len().min((upto - self.pos) as usize);
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            self.update(&buf[..n]);
        }
        Ok(())
    }

    /// Hashes the rest of `path` and checks size and digest.
    pub fn finish(mut self, path: &Path) -> Result<Digests, VerifyError> {
        let io = |e: std::io::Error| VerifyError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let actual = std::fs::metadata(path).map_err(io)?.len();
        if actual != self.expected.size {
            return Err(VerifyError::Size {
                expected: self.expected.size,
                actual,
            });
        }
        self.advance(path, actual).map_err(io)?;
        if self.pos != actual {
            return Err(VerifyError::Size {
                expected: self.expected.size,
                actual: self.pos,
            });
        }
        let sha256 = hex::encode(self.sha256.finalize());
        let git_sha1 = self.sha1.map(|h| hex::encode(h.finalize()));
        let actual_digest = match self.expected.algo {
            Algo::Sha256 => sha256.clone(),
            Algo::GitSha1 => git_sha1.clone().unwrap_or_default(),
        };
        if actual_digest != self.expected.digest {
            return Err(VerifyError::Hash {
                algo: self.expected.algo,
                expected: self.expected.digest.clone(),
                actual: actual_digest,
            });
        }
        Ok(Digests { sha256, git_sha1 })
    }
}

/// Verifies a whole file in one go.
pub fn verify_file(path: &Path, expected: &Expected) -> Result<Digests, VerifyError> {
    FileHasher::new(expected.clone()).finish(path)
}

/// The git blob sha1 of `data`.
pub fn git_blob_sha1(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex::encode(h.finalize())
}

/// The sha256 hex of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_blob_sha1_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_sha1(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            git_blob_sha1(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }

    fn write(dir: &Path, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join("f");
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn incremental_equals_whole_and_detects_each_fault() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let exp = Expected {
            size: data.len() as u64,
            algo: Algo::Sha256,
            digest: sha256_hex(&data),
        };
        let p = write(dir.path(), &data);
        let mut h = FileHasher::new(exp.clone());
        h.advance(&p, 1_000_000).unwrap();
        h.advance(&p, 500).unwrap();
        assert_eq!(h.position(), 1_000_000);
        let d = h.finish(&p).unwrap();
        assert_eq!(d.sha256, exp.digest);

        let mut flipped = data.clone();
        flipped[1234] ^= 1;
        let p = write(dir.path(), &flipped);
        assert!(matches!(
            verify_file(&p, &exp),
            Err(VerifyError::Hash { .. })
        ));
        let p = write(dir.path(), &data[..data.len() - 10]);
        assert!(matches!(
            verify_file(&p, &exp),
            Err(VerifyError::Size { .. })
        ));
        let mut longer = data.clone();
        longer.push(0);
        let p = write(dir.path(), &longer);
        assert!(matches!(
            verify_file(&p, &exp),
            Err(VerifyError::Size { .. })
        ));
    }

    #[test]
    fn regular_files_use_the_git_oid() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), b"hello\n");
        let exp = Expected {
            size: 6,
            algo: Algo::GitSha1,
            digest: "ce013625030ba8dba906f756967f9e9ca394464a".into(),
        };
        let d = verify_file(&p, &exp).unwrap();
        assert_eq!(d.git_sha1.as_deref(), Some(exp.digest.as_str()));
        assert_eq!(d.sha256, sha256_hex(b"hello\n"));
        let p = write(dir.path(), b"hellO\n");
        let err = verify_file(&p, &exp).unwrap_err();
        assert!(err.to_string().contains("git-sha1 mismatch"), "{err}");
    }
}
