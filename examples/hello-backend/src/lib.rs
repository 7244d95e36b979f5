//! `hello`: an example third-party backend for hubget.
//!
//! It serves a "repository" from a local directory given in its config table:
//!
//! ```toml
//! [plugins.hello]
//! root = "/srv/models/my-model"   # required
//! commit = "0123...40 hex"        # optional; else derived from the files (see below)
//! ```
//!
//! `resolve` lists the files under `root` (with their size and git blob id, so the host can
//! verify them); `fetch` copies each file into the partial file the host prepared, starting at
//! the offset the host gave, through the SDK's `stream_to_partial` (which reports progress and
//! checkpoints, and returns within ~100 ms of cancellation even if a read blocks on a stalled
//! network filesystem). A directory has no git history, so the commit `resolve` reports is
//! derived from the content: the sha1 of every path, size and blob id. The same files always
//! land in the same snapshot folder, and a changed file in a new one.
//! See `docs/plugin-authors.md` in the hubget repository.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use hubget_plugin_api::sdk::{BackendPlugin, fetch_each, parse_config, stream_to_partial};
use hubget_plugin_api::std_types::ROption;
use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, EventKind, Features, FetchBatch, FetchItem, FileDone,
    FileOutcome, HostSettings, Manifest, ManifestFile, PluginError, Progress, ProgressEvent,
    RepoType, ResolveRequest, is_commit_sha,
};
use serde::Deserialize;
use sha1::{Digest, Sha1};

/// The `[plugins.hello]` table. Unknown keys are errors (the SDK names the table and key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The directory served as the repository.
    root: Option<PathBuf>,
    /// The commit `resolve` reports.
    commit: Option<String>,
}

/// The backend: a directory.
struct Hello {
    root: Option<PathBuf>,
    /// The commit from the table, if set.
    commit: Option<String>,
}

const CHUNK: usize = 64 * 1024;

impl Hello {
    fn root(&self) -> Result<&Path, PluginError> {
        self.root.as_deref().ok_or_else(|| {
            PluginError::new(
                ErrorKind::CONFIG,
                "set `root` in the [plugins.hello] table to the directory to serve",
            )
        })
    }

    /// Maps a repository path to a file under `root`, refusing anything that escapes it.
    fn local_path(&self, repo_path: &str) -> Result<PathBuf, PluginError> {
        let rel = Path::new(repo_path);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(PluginError::new(
                ErrorKind::NOT_FOUND,
                format!("hello: refusing path `{repo_path}`"),
            ));
        }
        Ok(self.root()?.join(rel))
    }

    fn fetch_one(
        &self,
        index: u32,
        item: &FetchItem,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Result<FileDone, PluginError> {
        let source_path = self.local_path(&item.file.path)?;
        progress.on_event(ProgressEvent::message(
            index,
            EventKind::STARTED,
            format!("from {}", source_path.display()),
        ));
        // Opening and reading run on the SDK's helper thread; this thread watches `cancel`.
        let (path, offset) = (source_path.clone(), item.offset);
        let copied = stream_to_partial(
            move || {
                let not_found = |e: std::io::Error| {
                    let kind = if e.kind() == std::io::ErrorKind::NotFound {
                        ErrorKind::NOT_FOUND
                    } else {
                        ErrorKind::IO
                    };
                    PluginError::new(kind, format!("{}: {e}", path.display()))
                };
                let mut source = File::open(&path).map_err(not_found)?;
                source.seek(SeekFrom::Start(offset)).map_err(not_found)?;
                Ok(source)
            },
            item,
            index,
            progress,
            cancel,
        )?;
        Ok(FileDone::new(copied, self.root()?.display().to_string()))
    }
}

/// Lists every regular file under `dir`, recursively, as `/`-separated relative paths.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((rel, path));
        }
    }
    Ok(())
}

/// The git blob id of a file: sha1 of `blob <len>\0<content>`.
fn git_blob_sha1(path: &Path) -> std::io::Result<(u64, String)> {
    let len = std::fs::metadata(path)?.len();
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finalize();
    Ok((len, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

impl BackendPlugin for Hello {
    fn capabilities(&self) -> Capabilities {
        let repo_types = [RepoType::MODEL, RepoType::DATASET, RepoType::SPACE];
        let local = Features::RESUME | Features::NON_XET_FILES | Features::LOCAL;
        Capabilities::new(&repo_types, Features::RESOLVE | local)
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        let root = self.root()?;
        let mut files = Vec::new();
        walk(root, root, &mut files).map_err(|e| {
            PluginError::new(
                ErrorKind::NOT_FOUND,
                format!("hello: cannot list {}: {e}", root.display()),
            )
        })?;
        log::info!(
            "serving {} files of {} from {}",
            files.len(),
            request.repo_id,
            root.display()
        );
        let mut manifest_files = Vec::with_capacity(files.len());
        for (rel, path) in files {
            cancel.check()?;
            let (size, git_oid) = git_blob_sha1(&path).map_err(|e| {
                PluginError::new(ErrorKind::IO, format!("hello: {}: {e}", path.display()))
            })?;
            manifest_files.push(ManifestFile {
                path: rel.into(),
                size,
                git_oid: git_oid.into(),
                sha256: ROption::RNone,
                xet_hash: ROption::RNone,
            });
        }
        // No git here: unless the table names one, the commit is derived from the content.
        let commit = self.commit.clone().unwrap_or_else(|| {
            let mut hasher = Sha1::new();
            for f in &manifest_files {
                hasher.update(format!("{}\0{}\0{}\n", f.path, f.size, f.git_oid).as_bytes());
            }
            hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        });
        Ok(Manifest::new(commit, manifest_files))
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        fetch_each(batch, |i, item| self.fetch_one(i, item, progress, cancel))
    }
}

fn new(_settings: HostSettings, config: &str) -> Result<Hello, PluginError> {
    let config: Config = parse_config("hello", config)?;
    if let Some(commit) = &config.commit
        && !is_commit_sha(commit)
    {
        return Err(PluginError::new(
            ErrorKind::CONFIG,
            "invalid [plugins.hello] table (key `commit`): expected 40 hex digits",
        ));
    }
    Ok(Hello {
        root: config.root,
        commit: config.commit,
    })
}

hubget_plugin_api::export_plugin! {
    name: "hello",
    description: "example third-party backend: serves a repository from a local directory",
    constructor: new,
}
