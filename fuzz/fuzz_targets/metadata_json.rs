#![no_main]
//! A tree / paths-info page and a Git LFS batch answer: parsed and checked, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubget_hub_http::fuzzing::metadata_json(data));
