//! Declared models: what a project needs (the manifest, `hubget.toml`) and exactly which bytes
//! that resolved to (the lock, `hubget.lock`), so that every machine that syncs holds the same
//! verified files. The formats and their rules are here; `hubget add`, `remove`, `lock` and
//! `sync` (in `commands::project`) drive them through the normal plan and engine.
//!
//! Design decisions, from the package managers teams already use (uv, cargo, npm, DVC):
//! - An entry is named by its `hf://` address without the scheme (`acme/tiny`,
//!   `datasets/acme/rows`), so the type is part of the name and one table key says everything.
//! - The lock pins each entry to a commit and lists every selected file with its size and
//!   hashes; it also records what the entry asked for (revision, include, exclude), so a changed
//!   entry is seen as stale and relocked alone.
//! - Both files are TOML in a stable order (entries by name, files by path), one field per line,
//!   so diffs in review show exactly what moved.

pub mod lock;
pub mod manifest;

/// Fuzzing and corpus-replay entry point: `data` as the text of a `hubget.lock` (committed by
/// others) and of an entry name or `hf://` address.
#[doc(hidden)]
pub fn fuzz_project_files(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(lock) = toml::from_str::<lock::Lock>(text) {
        for repo in &lock.repos {
            let _ = repo.repo();
            let _ = repo.manifest();
        }
    }
    let _ = manifest::parse_name(text);
}
