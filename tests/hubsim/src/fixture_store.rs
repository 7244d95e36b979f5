//! Fixtures built once per spec: the Xet CAS's contents after the fixtures' upload through
//! hf-xet, kept on disk under `target/hubsim-fixtures/<key>/` and copied for every hubsim that
//! serves the same spec, so a test suite that starts a hundred hubsims uploads each fixture
//! set once.
//!
//! Decisions:
//! - **Keyed by the spec** (its JSON form), the xet-client version and [`FORMAT`]: a changed
//!   fixture, generator or CAS gets a new entry; nothing is ever updated in place.
//! - **Built closed, then published**: the CAS that uploads runs on `<key>/building`, is
//!   stopped (so its database is closed cleanly), renamed to `<key>/cas`, and `hashes.json`
//!   is written last: an entry without it is incomplete and built again.
//! - **Every hubsim gets its own copy** (tests may stop the CAS or inject faults; xet-client's
//!   on-disk store is a database one process owns): copying a few tens of MB beats chunking,
//!   compressing and uploading them again.
//! - **Serialised across processes** by a lock file per key, so parallel test binaries build an
//!   entry once and wait for each other.
//! - Used by the library's builder by default (tests), `HUBSIM_FIXTURE_STORE=off` turns it off
//!   and another path moves it; `hubsim serve` (benches) keeps the in-memory CAS unless asked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use xet_client::cas_client::simulation::{LocalTestServer, LocalTestServerBuilder};

use crate::Error;
use crate::fixtures::FixtureSpec;

/// Bumped when what an entry holds changes meaning (upload order, the CAS's layout).
const FORMAT: u32 = 1;

/// The xet-client whose on-disk CAS the entries hold.
const XET_CLIENT: &str = "xet-client 1.8.0";

/// Where entries live by default: `HUBSIM_FIXTURE_STORE` (`off` for none), else
/// `target/hubsim-fixtures`.
pub fn default_root() -> Option<PathBuf> {
    match std::env::var_os("HUBSIM_FIXTURE_STORE") {
        Some(v) if v == "off" || v == "0" || v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => Some(crate::python::target_dir().join("hubsim-fixtures")),
    }
}

/// The entry key of `spec`.
pub fn key(spec: &FixtureSpec) -> String {
    let json = serde_json::to_vec(spec).expect("a fixture spec serialises");
    let mut h = Sha256::new();
    h.update(format!("{FORMAT}\n{XET_CLIENT}\n").as_bytes());
    h.update(&json);
    hex::encode(h.finalize())[..32].to_owned()
}

/// One entry: its CAS directory and the Xet hash of every uploaded sha256.
pub struct Entry {
    /// The CAS's directory (`<key>/cas`), never served directly.
    pub cas: PathBuf,
    /// sha256 -> Xet hash.
    pub hashes: HashMap<String, String>,
}

/// The lock of one entry, held while it is looked up or built.
pub struct Locked {
    dir: PathBuf,
    _lock: std::fs::File,
}

/// Locks the entry of `key` under `root` (waiting for another process building it).
pub fn lock(root: &Path, key: &str) -> Result<Locked, Error> {
    let dir = root.join(key);
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::File::create(root.join(format!("{key}.lock")))?;
    lock.lock()?;
    Ok(Locked { dir, _lock: lock })
}

impl Locked {
    /// The entry, when it was built completely.
    pub fn entry(&self) -> Option<Entry> {
        let text = std::fs::read_to_string(self.dir.join("hashes.json")).ok()?;
        let hashes = serde_json::from_str(&text).ok()?;
        let cas = self.dir.join("cas");
        cas.is_dir().then_some(Entry { cas, hashes })
    }

    /// Where a CAS being built for this entry keeps its files (emptied first).
    pub fn building(&self) -> Result<PathBuf, Error> {
        let b = self.dir.join("building");
        if b.exists() {
            std::fs::remove_dir_all(&b)?;
        }
        std::fs::create_dir_all(&b)?;
        Ok(b)
    }

    /// Publishes the stopped CAS at [`Self::building`] with its hashes.
    pub fn publish(&self, hashes: &HashMap<String, String>) -> Result<Entry, Error> {
        let cas = self.dir.join("cas");
        if cas.exists() {
            std::fs::remove_dir_all(&cas)?;
        }
        std::fs::rename(self.dir.join("building"), &cas)?;
        let tmp = self.dir.join("hashes.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(hashes).expect("hashes serialise"))?;
        std::fs::rename(&tmp, self.dir.join("hashes.json"))?;
        Ok(Entry {
            cas,
            hashes: hashes.clone(),
        })
    }
}

/// A CAS holding the uploaded `jobs` of `spec`, and the Xet hash of every uploaded sha256:
/// from the store under `root` (built there first when missing), or, without a store, in
/// memory. The returned directory holds what the CAS serves; keep it as long as the CAS.
pub(crate) async fn cas_with_fixtures(
    spec: &FixtureSpec,
    jobs: Vec<crate::fixtures::XetJob>,
    root: Option<&Path>,
) -> Result<(LocalTestServer, HashMap<String, String>, tempfile::TempDir), Error> {
    let scratch = tempfile::tempdir()?;
    let Some(root) = root else {
        let server = crate::cas::start_cas().await;
        let hashes = crate::cas::upload(server.http_endpoint(), jobs, scratch.path()).await?;
        return Ok((server, hashes, scratch));
    };
    let (root, k) = (root.to_owned(), key(spec));
    let locked = tokio::task::spawn_blocking(move || lock(&root, &k))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    let entry = match locked.entry() {
        Some(e) => e,
        None => {
            let building = locked.building()?;
            let server = LocalTestServerBuilder::new()
                .with_disk_location(&building)
                .start()
                .await;
            let upload_cache = tempfile::tempdir()?;
            let hashes =
                crate::cas::upload(server.http_endpoint(), jobs, upload_cache.path()).await?;
            // Stopped before it is published: its database is closed, not copied mid-write.
            drop(server);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            locked.publish(&hashes)?
        }
    };
    let (from, to) = (entry.cas.clone(), scratch.path().to_owned());
    tokio::task::spawn_blocking(move || copy_tree(&from, &to))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))??;
    drop(locked);
    let server = LocalTestServerBuilder::new()
        .with_disk_location(scratch.path())
        .start()
        .await;
    Ok((server, entry.hashes, scratch))
}

/// Copies the directory tree `from` into `to` (which exists and is empty).
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let target = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            std::fs::create_dir(&target)?;
            copy_tree(&e.path(), &target)?;
        } else {
            std::fs::copy(e.path(), &target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_spec() {
        let a = FixtureSpec::minimal();
        assert_eq!(key(&a), key(&FixtureSpec::minimal()));
        assert_ne!(key(&a), key(&FixtureSpec::default_set(1)));
    }

    #[test]
    fn an_entry_exists_only_once_published() {
        let root = tempfile::tempdir().unwrap();
        let locked = lock(root.path(), "k").unwrap();
        assert!(locked.entry().is_none());
        let b = locked.building().unwrap();
        std::fs::create_dir(b.join("sub")).unwrap();
        std::fs::write(b.join("sub/x"), b"xorb").unwrap();
        assert!(locked.entry().is_none(), "not before hashes.json");
        let hashes = HashMap::from([("sha".to_owned(), "xet".to_owned())]);
        locked.publish(&hashes).unwrap();
        let e = locked.entry().unwrap();
        assert_eq!(e.hashes, hashes);
        let copy = tempfile::tempdir().unwrap();
        copy_tree(&e.cas, copy.path()).unwrap();
        assert_eq!(std::fs::read(copy.path().join("sub/x")).unwrap(), b"xorb");
    }
}
