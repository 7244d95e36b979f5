#![no_main]
//! Repository paths a server lists, and `hf://` addresses a user types.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hubget::store::paths::fuzz_paths(data);
});
