//! Replays every committed fuzz input (`fuzz/corpus/<target>/`) through the entry point its
//! cargo-fuzz target uses, so `cargo test` (and CI) keeps every input that once crashed a parser
//! of untrusted input, without the nightly toolchain.

use std::path::Path;

/// A fuzz target's entry point.
type Entry = fn(&[u8]);

/// Calls `entry` with every file of `fuzz/corpus/<target>`; returns how many.
fn replay(target: &str, entry: Entry) -> usize {
    let dir = hubget_tests::workspace_root()
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let name = path
            .file_name()
            .map(Path::new)
            .unwrap()
            .display()
            .to_string();
        std::panic::catch_unwind(|| entry(&data))
            .unwrap_or_else(|_| panic!("fuzz/corpus/{target}/{name} crashes the parser"));
        n += 1;
    }
    n
}

#[test]
fn every_committed_fuzz_input_is_parsed_without_a_crash() {
    let targets: [(&str, Entry); 10] = [
        ("reconstruction", |d| {
            let _ = hubget_xet::cas::Reconstruction::parse(d);
            let _ = hubget_xet::cas::Reconstruction::parse_v2(d);
        }),
        ("chunk_stream", hubget_xet::cas::fuzz_feed),
        ("rate_limit_headers", hubget_hub_http::fuzzing::headers),
        ("repo_paths", hubget::store::paths::fuzz_paths),
        ("project_files", hubget::project::fuzz_project_files),
        ("metadata_json", hubget_hub_http::fuzzing::metadata_json),
        ("content_range", hubget_hub_http::fuzzing::content_range),
        ("chunk_index", |d| {
            let _ = hubget_xet::reuse::parse_entry(d);
        }),
        ("bucket", hubget_plugin_api::protocol::export::fuzz_bucket),
        ("addresses", hubget::cli::fuzz_address),
    ];
    for (target, entry) in targets {
        assert!(replay(target, entry) > 0, "fuzz/corpus/{target} is empty");
    }
}
