//! The Xet hash of a file's content (xet-core's content-defined chunker and Merkle file hash),
//! as the Hub reports it in `xetHash`. The shared blob store names entries by it: hubget checks
//! a name against the content before it publishes under it, so a source that lies about a
//! file's Xet hash (a bucket or mirror manifest) can neither take a popular name nor keep the
//! real content out of the store.

use std::io::Read;
use std::path::Path;

use xet_core_structures::merklehash::{MerkleHash, file_hash};

/// Read size: large enough that the chunker, not the reads, sets the pace.
const BLOCK: usize = 8 << 20;

/// The Xet hash (64 hex digits) of everything `reader` yields.
pub fn of_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut chunker = xet_data::deduplication::Chunker::default();
    let mut chunks: Vec<(MerkleHash, u64)> = Vec::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let last = filled < buf.len();
        // The chunker closes its last chunk only when handed bytes marked final: at the end
        // of a file whose size is a multiple of the block, `finish` does it.
        let found = match (filled, last) {
            (0, _) => chunker.finish().into_iter().collect(),
            (_, last) => chunker.next_block(&buf[..filled], last),
        };
        chunks.extend(found.into_iter().map(|c| (c.hash, c.data.len() as u64)));
        if last {
            break;
        }
    }
    Ok(file_hash(&chunks).hex())
}

/// The Xet hash of the file at `path` (opened without following a link). Blocking.
pub fn of_file(path: &Path) -> std::io::Result<String> {
    of_reader(crate::resume::open_nofollow(
        std::fs::OpenOptions::new().read(true),
        path,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_depends_on_every_byte_and_not_on_how_it_is_read() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = of_reader(data.as_slice()).unwrap();
        assert_eq!(whole.len(), 64);
        // A reader that hands out 1,000 bytes at a time: same chunks, same hash.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert_eq!(of_reader(Trickle(&data)).unwrap(), whole);
        let mut other = data.clone();
        other[2_999_999] ^= 1;
        assert_ne!(of_reader(other.as_slice()).unwrap(), whole);
        assert_eq!(of_reader([].as_slice()).unwrap(), "0".repeat(64));
        // A size that is a multiple of the read block: the last chunk is closed all the same.
        let exact = &data.repeat(3)[..BLOCK];
        let mut odd = exact.to_vec();
        odd.push(0);
        assert_eq!(
            of_reader(exact).unwrap(),
            of_reader(Trickle(exact)).unwrap()
        );
        assert_ne!(
            of_reader(exact).unwrap(),
            of_reader(odd.as_slice()).unwrap()
        );
    }
}
