#![no_main]
//! A `Content-Range` header value: parsed, never a panic or an overflow.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubget_hub_http::fuzzing::content_range(data));
