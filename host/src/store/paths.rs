//! Validation of repository paths from the server, which are untrusted: a path must stay inside
//! the target directory whatever it contains.

use std::path::{Path, PathBuf};

/// Why a repository path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing repository entry {path:?}: {reason}")]
pub struct UnsafePath {
    /// The entry as the server sent it.
    pub path: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The longest repository path accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// The longest path segment accepted, in bytes (`NAME_MAX` of common filesystems).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Checks that `path` is a relative, `/`-separated path with only normal segments: no absolute
/// path, no `..`, no `.` or empty segment, no backslash, no control character (C0, DEL, C1), no
/// drive prefix, no `.git` segment in any letter case (git itself refuses one in a tree: a
/// hostile mirror could plant `.git/config` or a hook in a local dir that is a git checkout), no
/// segment over 255 bytes and no path over 4096 bytes. No legitimate Hub repository has any.
pub fn validate_repo_path(path: &str) -> Result<(), UnsafePath> {
    let refuse = |reason| {
        Err(UnsafePath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return refuse("empty path");
    }
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if path.chars().any(|c| c.is_control()) {
        return refuse("contains a control character");
    }
    if path.len() > MAX_PATH_BYTES {
        return refuse("longer than 4096 bytes");
    }
    if path.contains('\\') {
        return refuse("contains a backslash");
    }
    if path.starts_with('/') {
        return refuse("absolute path");
    }
    for (i, segment) in path.split('/').enumerate() {
        match segment {
            "" => return refuse("empty path segment"),
            "." => return refuse("`.` segment"),
            ".." => return refuse("`..` segment (would leave the target directory)"),
            s if i == 0 && s.len() >= 2 && s.as_bytes()[1] == b':' => {
                return refuse("drive prefix");
            }
            s if s.eq_ignore_ascii_case(".git") => return refuse("`.git` segment"),
            s if s.len() > MAX_SEGMENT_BYTES => return refuse("a segment longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks a path that lands in a `--local-dir`: besides [`validate_repo_path`], it must not land
/// on the client's own metadata (`.cache/huggingface/` at the root, in any letter case) or be
/// named like hubget's partial and state files.
pub fn validate_local_dir_path(path: &str) -> Result<(), UnsafePath> {
    validate_repo_path(path)?;
    let lower = path.to_ascii_lowercase();
    let refuse = |reason| {
        Err(UnsafePath {
            path: path.to_owned(),
            reason,
        })
    };
    if lower == ".cache/huggingface" || lower.starts_with(".cache/huggingface/") {
        return refuse("lands on the local dir's own metadata (.cache/huggingface/)");
    }
    let partial = crate::resume::PARTIAL_SUFFIX;
    if lower.ends_with(&format!(".{partial}")) || lower.ends_with(&format!(".{partial}.json")) {
        return refuse("named like hubget's partial files");
    }
    Ok(())
}

/// The paths among `paths` that another one equals after Unicode normalization (NFC) and case
/// folding: on a case-insensitive or normalizing filesystem (macOS, Windows) they would land on
/// one file, so they are all refused together.
pub fn colliding_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    use unicode_normalization::UnicodeNormalization;
    let mut seen: std::collections::HashMap<String, Vec<&'a str>> = Default::default();
    for p in paths {
        let key: String = p.nfc().collect::<String>().to_lowercase();
        seen.entry(key).or_default().push(p);
    }
    let mut out: Vec<&'a str> = seen
        .into_values()
        .filter(|v| v.len() > 1)
        .flatten()
        .collect();
    out.sort_unstable();
    out
}

/// `base` joined with a validated repository path (segment by segment).
pub fn join_repo_path(base: &Path, path: &str) -> Result<PathBuf, UnsafePath> {
    validate_repo_path(path)?;
    let mut out = base.to_path_buf();
    for segment in path.split('/') {
        out.push(segment);
    }
    Ok(out)
}

/// Fuzzing and corpus-replay entry point: `data` as a repository path from a server. A path
/// the validator accepts must join to a place under its base.
#[doc(hidden)]
pub fn fuzz_paths(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if validate_repo_path(text).is_ok() {
        let base = Path::new("/base/dir");
        let joined = join_repo_path(base, text).expect("an accepted path joins");
        assert!(joined.starts_with(base), "{text:?} left the base");
    }
    let _ = validate_local_dir_path(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        let long_segment = "a".repeat(256);
        let long_path = vec!["abcdefgh"; 600].join("/");
        for (p, why) in [
            (".git/config", "`.git` segment"),
            ("sub/.GiT/hooks/pre-commit", "`.git` segment"),
            ("a\u{1b}[31mred", "contains a control character"),
            ("tab\there", "contains a control character"),
            ("del\u{7f}", "contains a control character"),
            ("c1\u{85}x", "contains a control character"),
            (long_segment.as_str(), "a segment longer than 255 bytes"),
            (long_path.as_str(), "longer than 4096 bytes"),
        ] {
            assert_eq!(validate_repo_path(p).unwrap_err().reason, why, "{p:?}");
        }
        assert!(validate_repo_path(".gitattributes").is_ok());
        assert!(validate_repo_path("a/.github/x.yml").is_ok());
        assert!(validate_repo_path(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn local_dir_metadata_and_partial_names_are_refused() {
        for p in [
            ".cache/huggingface/download/x.metadata",
            ".Cache/HuggingFace/.gitignore",
            "w.bin.abc.hubget-partial",
            "w.bin.abc.hubget-partial.json",
        ] {
            assert!(validate_local_dir_path(p).is_err(), "{p}");
        }
        assert!(validate_local_dir_path(".cache/other/x").is_ok());
        assert!(validate_local_dir_path("model.safetensors").is_ok());
    }

    #[test]
    fn case_and_normalization_twins_collide() {
        let nfc = "caf\u{e9}.txt";
        let nfd = "cafe\u{301}.txt";
        let got = colliding_paths(["README.md", "readme.md", nfc, nfd, "ok.txt"]);
        assert_eq!(
            got,
            vec!["README.md", nfc, nfd, "readme.md"]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert!(colliding_paths(["a", "b"]).is_empty());
    }

    #[test]
    fn normal_paths_pass() {
        for p in [
            "config.json",
            "a/b/c.bin",
            "weird name.txt",
            ".gitattributes",
            "a/.hidden/x",
            "..a/b..",
        ] {
            assert!(validate_repo_path(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn hostile_paths_are_refused_with_the_entry_named() {
        for p in [
            "",
            "/etc/passwd",
            "../../evil",
            "a/../../b",
            "a/./b",
            "a//b",
            "a/",
            "./a",
            "..",
            "a\\..\\b",
            "C:/x",
            "a\0b",
        ] {
            let err = validate_repo_path(p).unwrap_err();
            assert_eq!(err.path, p);
            assert!(
                err.to_string().contains("refusing repository entry"),
                "{err}"
            );
        }
    }

    #[test]
    fn join_stays_under_base() {
        let base = Path::new("/tmp/t");
        assert_eq!(
            join_repo_path(base, "a/b").unwrap(),
            Path::new("/tmp/t/a/b")
        );
        assert!(join_repo_path(base, "/abs").is_err());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use std::path::Component;

        /// Segments a hostile server would try, mixed with ordinary ones.
        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(".git".to_owned()),
                Just(".GiT".to_owned()),
                Just("..".to_owned()),
                Just(".".to_owned()),
                Just(String::new()),
                Just("C:".to_owned()),
                Just("a\\..".to_owned()),
                Just("x\u{7f}".to_owned()),
                Just("y\u{85}".to_owned()),
                "[a-z0-9._-]{1,12}",
                any::<String>(),
                "[a-z]{250,260}",
            ]
        }

        fn repo_path() -> impl Strategy<Value = String> {
            (any::<bool>(), prop::collection::vec(segment(), 1..6))
                .prop_map(|(abs, segs)| format!("{}{}", if abs { "/" } else { "" }, segs.join("/")))
        }

        proptest! {
            /// Whatever the server sends, an accepted path stays inside the target, has only
            /// normal segments, none of them `.git` or over 255 bytes, and no control character.
            #[test]
            fn an_accepted_path_stays_inside_the_target(path in repo_path()) {
                let base = Path::new("/target");
                if let Ok(joined) = join_repo_path(base, &path) {
                    prop_assert!(joined.starts_with(base));
                    for c in joined.strip_prefix(base).unwrap().components() {
                        let Component::Normal(s) = c else {
                            return Err(TestCaseError::fail(format!("{c:?} in {path:?}")));
                        };
                        let s = s.to_str().unwrap();
                        prop_assert!(!s.eq_ignore_ascii_case(".git"));
                        prop_assert!(s.len() <= MAX_SEGMENT_BYTES);
                        prop_assert!(!s.contains('\\'));
                    }
                    prop_assert!(!path.chars().any(char::is_control));
                    prop_assert!(path.len() <= MAX_PATH_BYTES);
                }
            }

            /// Ordinary names are never refused.
            #[test]
            fn ordinary_paths_are_accepted(segs in prop::collection::vec("[A-Za-z0-9_-][A-Za-z0-9._-]{0,30}", 1..5)) {
                let path = segs.join("/");
                prop_assume!(!segs.iter().any(|s| s.eq_ignore_ascii_case(".git") || s.len() >= 2 && s.as_bytes()[1] == b':'));
                prop_assert!(validate_repo_path(&path).is_ok(), "{path}");
            }
        }
    }
}
