#![no_main]
//! `hubget.lock` and `hubget.toml` text (a lock comes from a repository others commit to).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hubget::project::fuzz_project_files(data);
});
