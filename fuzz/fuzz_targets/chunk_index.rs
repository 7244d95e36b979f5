#![no_main]
//! A xet chunk-index entry (a file other users of the cache may write): parsed and checked.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hubget_xet::reuse::parse_entry(data);
});
