#![no_main]
//! Header values a server sends: `RateLimit`, `RateLimit-Policy`, `Retry-After`, `Link`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hubget_hub_http::fuzzing::headers(data);
});
