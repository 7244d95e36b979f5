#![no_main]
//! What a bucket holds for the s3 backend: a ref and a commit's manifest (plugin-api's
//! decoders of the export layout).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hubget_plugin_api::protocol::export::fuzz_bucket(data));
