#![no_main]
//! The bytes of a xorb range, fed in pieces to the decoder of a range serving two terms: never
//! a panic, never more written than the terms want.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hubget_xet::cas::fuzz_feed(data);
});
