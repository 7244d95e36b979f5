#![no_main]
//! A CAS reconstruction answer (V1 and V2 JSON): parsed and checked, never a panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hubget_xet::cas::Reconstruction::parse(data);
    let _ = hubget_xet::cas::Reconstruction::parse_v2(data);
});
