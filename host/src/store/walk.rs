//! Walking a directory tree (with `walkdir`) the way the cache's views of it need: the files
//! below a folder, each with its `/`-separated path relative to that folder.

use std::io;
use std::path::Path;

use walkdir::{DirEntry, WalkDir};

/// Every entry below `root` that is not a directory, with its relative `/` path.
///
/// With `follow_links`, a link stands for what it points at (a link to a directory is walked,
/// [`DirEntry::metadata`] is the target's), and a link that points nowhere or into a loop is left
/// out: it is not a file. Without, links are listed as themselves. Any other error (`root`
/// missing, a directory that cannot be read) is yielded; callers that only look skip them.
pub fn files(
    root: &Path,
    follow_links: bool,
) -> impl Iterator<Item = io::Result<(String, DirEntry)>> {
    WalkDir::new(root)
        .follow_links(follow_links)
        .min_depth(1)
        .into_iter()
        .filter_map(move |entry| match entry {
            Ok(e) if e.file_type().is_dir() => None,
            Ok(e) => Some(Ok((relative(root, e.path()), e))),
            Err(e) if e.loop_ancestor().is_some() => None,
            Err(e)
                if e.depth() > 0
                    && e.io_error().map(io::Error::kind) == Some(io::ErrorKind::NotFound) =>
            {
                None
            }
            Err(e) => Some(Err(e.into())),
        })
}

/// `path` below `root`, its components joined with `/`.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(root: &Path, follow_links: bool) -> Vec<String> {
        let mut out: Vec<String> = files(root, follow_links).map(|r| r.unwrap().0).collect();
        out.sort();
        out
    }

    #[test]
    fn files_have_slash_paths_and_directories_are_walked_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("top.txt"), b"1").unwrap();
        std::fs::write(dir.path().join("a/b/deep.bin"), b"22").unwrap();
        assert_eq!(walked(dir.path(), true), ["a/b/deep.bin", "top.txt"]);
        let sizes: Vec<u64> = files(dir.path(), true)
            .map(|r| r.unwrap().1.metadata().unwrap().len())
            .collect();
        assert_eq!(sizes.iter().sum::<u64>(), 3);
    }

    #[test]
    fn a_missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let mut it = files(&missing, true);
        assert_eq!(
            it.next().unwrap().unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[cfg(unix)]
    #[test]
    fn dangling_links_and_loops_are_not_files_when_links_are_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        std::fs::create_dir_all(root.join("snap/sub")).unwrap();
        std::fs::write(root.join("blobs/e1"), b"x").unwrap();
        symlink("../blobs/e1", root.join("snap/ok")).unwrap();
        symlink("../blobs/gone", root.join("snap/dangling")).unwrap();
        symlink("..", root.join("snap/sub/loop")).unwrap();
        assert_eq!(walked(&root.join("snap"), true), ["ok"]);
        // Not followed, links are entries of their own (the loop is not walked into).
        assert_eq!(
            walked(&root.join("snap"), false),
            ["dangling", "ok", "sub/loop"]
        );
    }
}
