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

/// Checks that `path` is a relative, `/`-separated path with only normal segments: no absolute
/// path, no `..`, no `.` or empty segment, no backslash, no NUL, no drive prefix.
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
            _ => {}
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
