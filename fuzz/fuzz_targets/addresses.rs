#![no_main]
//! Repository addresses as typed on the command line (`hf://`, types, revisions, paths).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubget::cli::fuzz_address(data));
