//! The plan: which files of which commit go where. Resolves the revision to one commit with the
//! first backend that can, selects files (positional paths, `--include`/`--exclude` globs with
//! Python `fnmatch` semantics), validates every selected path, and marks what is already complete
//! or resumable in the target.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hubget_plugin_api::{
    CancelToken, ErrorKind, Features, Manifest, ManifestFile, PluginError, RepoType,
    ResolveRequest, is_commit_sha,
};

use crate::error::{HostError, causes_hint, group_causes};
use crate::retry::RetryPolicy;
pub use crate::store::FileStatus;
use crate::store::Target;
use crate::store::local_dir::{LocalDir, LocalMetadata};
use crate::store::paths::{UnsafePath, validate_repo_path};
use crate::transport::Transport;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// `owner/name`.
    pub repo_id: String,
    /// Branch, tag, `refs/pr/N` or commit sha.
    pub revision: String,
    /// Positional file paths (a trailing `/` means a folder).
    pub files: Vec<String>,
    /// `--include` globs.
    pub include: Vec<String>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// `--force-download`: fetch even what is complete.
    pub force: bool,
}

impl Default for PlanRequest {
    fn default() -> Self {
        Self {
            repo_type: RepoType::MODEL,
            repo_id: String::new(),
            revision: "main".to_owned(),
            files: Vec::new(),
            include: Vec::new(),
            exclude: Vec::new(),
            force: false,
        }
    }
}

/// One selected file.
#[derive(Debug, Clone)]
pub struct PlannedFile {
    /// The file as resolved.
    pub file: ManifestFile,
    /// What is on disk already.
    pub status: FileStatus,
}

impl PlannedFile {
    /// Bytes still to fetch.
    pub fn remaining(&self) -> u64 {
        match self.status {
            FileStatus::Complete | FileStatus::Linkable | FileStatus::InSharedStore => 0,
            FileStatus::Partial(n) => self.file.size.saturating_sub(n),
            FileStatus::Missing => self.file.size,
        }
    }
}

/// The plan for one download.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// `owner/name`.
    pub repo_id: String,
    /// The revision as asked.
    pub revision: String,
    /// The commit every file comes from.
    pub commit: String,
    /// Backend that resolved the revision (`cache` offline).
    pub resolved_by: String,
    /// Selected files, in manifest order.
    pub files: Vec<PlannedFile>,
    /// Positional paths that the revision does not hold.
    pub missing: Vec<String>,
    /// Warnings for the user (ignored globs).
    pub warnings: Vec<String>,
    /// Selected entries refused by name (hostile or colliding paths): they fail, the rest goes on.
    pub refused: Vec<UnsafePath>,
    /// Every file of the commit, as resolved (selected or not): what `hubget export` records.
    pub manifest_files: Vec<ManifestFile>,
}

impl Plan {
    /// Total size of the selected files.
    pub fn total_bytes(&self) -> u64 {
        // Sizes come from the server: never overflow on a hostile sum.
        self.files
            .iter()
            .fold(0u64, |a, f| a.saturating_add(f.file.size))
    }

    /// Bytes still to fetch.
    pub fn remaining_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |a, f| a.saturating_add(f.remaining()))
    }

    /// Bytes of the files the shared blob store should provide (not downloaded).
    pub fn shared_store_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter(|f| f.status == FileStatus::InSharedStore)
            .fold(0u64, |a, f| a.saturating_add(f.file.size))
    }
}

/// Python's `fnmatch.fnmatchcase`: `*` matches any run of characters including `/`, `?` one
/// character, `[seq]` / `[!seq]` a character class; everything else literally.
pub fn fnmatch(name: &str, pattern: &str) -> bool {
    let n: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    fnmatch_at(&n, &p)
}

fn fnmatch_at(n: &[char], p: &[char]) -> bool {
    // Iterative with single-star backtracking (classic wildcard algorithm).
    let (mut ni, mut pi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    ni += 1;
                    pi += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = class_match(&p[pi..], n[ni]) {
                        if matched {
                            ni += 1;
                            pi += next;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        ni += 1;
                        pi += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    ni += 1;
                    pi += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class at the start of `p` (`p[0] == '['`). Returns whether it matched
/// and the class length, or `None` if the class is unterminated (then `[` is literal, as in Python).
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!'));
    if negate {
        i += 1;
    }
    let start = i;
    let mut matched = false;
    while i < p.len() {
        if p[i] == ']' && i > start {
            return Some((matched != negate, i + 1));
        }
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

/// huggingface_hub's `_add_wildcard_to_directories`: `dir/` means everything under `dir`.
fn expand_dir_pattern(p: &str) -> String {
    if p.ends_with('/') {
        format!("{p}*")
    } else {
        p.to_owned()
    }
}

/// The selection of a manifest: files kept, positional paths not found, warnings.
#[derive(Debug, Default)]
pub struct Selection {
    /// Indices into the manifest's files, in order.
    pub selected: Vec<usize>,
    /// Positional paths the manifest does not hold.
    pub missing: Vec<String>,
    /// Warnings for the user.
    pub warnings: Vec<String>,
}

/// Selects files by positional paths, or else by include/exclude globs.
pub fn select(files: &[ManifestFile], req: &PlanRequest) -> Selection {
    let mut out = Selection::default();
    if !req.files.is_empty() {
        if !req.include.is_empty() || !req.exclude.is_empty() {
            out.warnings
                .push("--include/--exclude are ignored because file paths were given".to_owned());
        }
        let mut hit = vec![false; req.files.len()];
        for (i, f) in files.iter().enumerate() {
            let mut keep = false;
            for (j, want) in req.files.iter().enumerate() {
                let matches = if want.ends_with('/') {
                    f.path.starts_with(want.as_str())
                } else {
                    f.path.as_str() == want
                };
                if matches {
                    hit[j] = true;
                    keep = true;
                }
            }
            if keep {
                out.selected.push(i);
            }
        }
        out.missing = req
            .files
            .iter()
            .zip(hit)
            .filter(|(_, h)| !h)
            .map(|(f, _)| f.clone())
            .collect();
        return out;
    }
    let include: Vec<String> = req.include.iter().map(|p| expand_dir_pattern(p)).collect();
    let exclude: Vec<String> = req.exclude.iter().map(|p| expand_dir_pattern(p)).collect();
    for (i, f) in files.iter().enumerate() {
        if !include.is_empty() && !include.iter().any(|p| fnmatch(&f.path, p)) {
            continue;
        }
        if exclude.iter().any(|p| fnmatch(&f.path, p)) {
            continue;
        }
        out.selected.push(i);
    }
    out
}

/// Resolves `req` with the first backend that can (in order), then builds the plan.
pub async fn resolve_plan(
    backends: &[Arc<dyn Transport>],
    req: &PlanRequest,
    target: &Target,
    cancel: &CancelToken,
    timeout: Duration,
) -> Result<Plan, HostError> {
    let (manifest, by) = resolve(backends, req, cancel, timeout).await?;
    build_plan(manifest, &by, req, target)
}

/// Builds the plan from a resolved manifest: selection, path validation, on-disk status.
pub fn build_plan(
    manifest: Manifest,
    resolved_by: &str,
    req: &PlanRequest,
    target: &Target,
) -> Result<Plan, HostError> {
    if !is_commit_sha(&manifest.commit) {
        return Err(HostError::Other(format!(
            "backend `{resolved_by}` resolved {} to {:?}, which is not a 40-hex commit sha",
            req.revision, manifest.commit
        )));
    }
    let files: Vec<ManifestFile> = manifest.files.into_iter().collect();
    let selection = select(&files, req);
    let mut planned = Vec::with_capacity(selection.selected.len());
    let mut refused = Vec::new();
    let colliding = crate::store::paths::colliding_paths(
        selection.selected.iter().map(|&i| files[i].path.as_str()),
    );
    let local_dir = matches!(target, Target::LocalDir(_));
    for &i in &selection.selected {
        let file = files[i].clone();
        let checked = if local_dir {
            crate::store::paths::validate_local_dir_path(&file.path)
        } else {
            validate_repo_path(&file.path)
        };
        let checked = checked.and_then(|()| {
            if colliding.contains(&file.path.as_str()) {
                Err(UnsafePath {
                    path: file.path.to_string(),
                    reason: "differs from another entry only in letter case or Unicode \
                             normalization (one file on macOS and Windows): both are refused",
                })
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            log::warn!("{e}");
            refused.push(e);
            continue;
        }
        let status = if req.force {
            FileStatus::Missing
        } else {
            target.status(&file, &manifest.commit)
        };
        planned.push(PlannedFile { file, status });
    }
    Ok(Plan {
        repo_type: req.repo_type,
        repo_id: req.repo_id.clone(),
        revision: req.revision.clone(),
        commit: manifest.commit.to_string(),
        resolved_by: resolved_by.to_owned(),
        files: planned,
        missing: selection.missing,
        warnings: selection.warnings,
        refused,
        manifest_files: files,
    })
}

/// Plans from the local target only (offline mode): the revision through `refs/` (or a commit
/// sha with a snapshot), the files from `snapshots/<commit>/` (or, for `--local-dir`, the files
/// with huggingface_hub metadata). No backend is called. A miss names the directory searched.
pub fn offline_plan(req: &PlanRequest, target: &Target) -> Result<Plan, HostError> {
    let what = format!("{} {} at {}", req.repo_type, req.repo_id, req.revision);
    let (commit, on_disk, searched) = match target {
        Target::Cache(c) => {
            let commit = if is_commit_sha(&req.revision) && c.snapshot_dir(&req.revision).is_dir() {
                Some(req.revision.clone())
            } else {
                c.read_ref(&req.revision)
            };
            let miss = || HostError::OfflineMiss {
                what: what.clone(),
                cache_dir: c.cache_dir.clone(),
            };
            let commit = commit.filter(|s| is_commit_sha(s)).ok_or_else(miss)?;
            let files = c.snapshot_files(&commit).map_err(|_| miss())?;
            (commit, files, c.cache_dir.clone())
        }
        Target::LocalDir(l) => {
            let files = l.metadata_files();
            let commit = local_dir_commit(l, &files, &what)?;
            let files = files.into_iter().map(|(p, _, size)| (p, size)).collect();
            (commit, files, l.root.clone())
        }
    };
    let files: Vec<ManifestFile> = on_disk
        .into_iter()
        .map(|(path, size)| ManifestFile {
            path: path.as_str().into(),
            size,
            git_oid: "".into(),
            sha256: abi_stable::std_types::ROption::RNone,
            xet_hash: abi_stable::std_types::ROption::RNone,
        })
        .collect();
    let selection = select(&files, req);
    if let Some(first) = selection.missing.first() {
        return Err(HostError::OfflineMiss {
            what: format!("{first} ({what})"),
            cache_dir: searched,
        });
    }
    if selection.selected.is_empty() {
        return Err(HostError::OfflineMiss {
            what: format!("no file matching the filters ({what})"),
            cache_dir: searched,
        });
    }
    Ok(Plan {
        repo_type: req.repo_type,
        repo_id: req.repo_id.clone(),
        revision: req.revision.clone(),
        commit,
        resolved_by: "cache".to_owned(),
        files: selection
            .selected
            .iter()
            .map(|&i| PlannedFile {
                file: files[i].clone(),
                status: FileStatus::Complete,
            })
            .collect(),
        missing: Vec::new(),
        warnings: selection.warnings,
        refused: Vec::new(),
        manifest_files: files,
    })
}

/// The commit a `--local-dir` download recorded in the metadata of its `files` (see
/// [`LocalDir::metadata_files`]); none is an offline miss of `what`.
pub fn local_dir_commit(
    l: &LocalDir,
    files: &[(String, LocalMetadata, u64)],
    what: &str,
) -> Result<String, HostError> {
    files
        .first()
        .map(|(_, m, _)| m.commit.clone())
        .filter(|s| is_commit_sha(s))
        .ok_or_else(|| HostError::OfflineMiss {
            what: what.to_owned(),
            cache_dir: l.root.clone(),
        })
}

/// Asks each backend with `RESOLVE` and the repo type, in order; the first success wins.
/// Retryable errors are retried a few times on the same backend; other errors pass to the next.
/// A backend that does not answer within `timeout` is cancelled, abandoned after a short grace,
/// and the next one is asked.
pub async fn resolve(
    backends: &[Arc<dyn Transport>],
    req: &PlanRequest,
    cancel: &CancelToken,
    timeout: Duration,
) -> Result<(Manifest, String), HostError> {
    let policy = RetryPolicy::default();
    let mut errors: Vec<(String, PluginError)> = Vec::new();
    let what = format!("{} {}@{}", req.repo_type, req.repo_id, req.revision);
    // Origins that could not be reached: a backend resolving through one is not asked again.
    let mut unreachable: Vec<(String, PluginError)> = Vec::new();
    for backend in backends {
        let caps = backend.capabilities();
        if !caps.features.contains(Features::RESOLVE) || !caps.repo_types.contains(&req.repo_type) {
            continue;
        }
        let origin = hubget_plugin_api::protocol::resolves_via(caps.extra_json.as_str());
        if let Some((_, e)) = unreachable.iter().find(|(o, _)| Some(o) == origin.as_ref()) {
            log::debug!(
                "not asking `{}`: its origin was unreachable",
                backend.name()
            );
            errors.push((backend.name().to_owned(), e.clone()));
            continue;
        }
        let mut attempt = 0u32;
        loop {
            let request = ResolveRequest {
                repo_type: req.repo_type,
                repo_id: req.repo_id.as_str().into(),
                revision: req.revision.as_str().into(),
                options_json: "".into(),
            };
            log::debug!("resolving {what} with `{}`", backend.name());
            let result = match resolve_once(backend.as_ref(), request, cancel, timeout).await {
                Some(r) => r,
                None => {
                    let e = PluginError::new(
                        ErrorKind::TIMEOUT,
                        format!("no answer within {}s", timeout.as_secs()),
                    );
                    log::warn!("`{}` could not resolve {what}: {e}", backend.name());
                    errors.push((backend.name().to_owned(), e));
                    break;
                }
            };
            match result {
                Ok(m) => return Ok((m, backend.name().to_owned())),
                Err(e) if e.kind == ErrorKind::CANCELLED && cancel.is_cancelled() => {
                    return Err(HostError::Interrupted);
                }
                Err(e) if e.kind == ErrorKind::UNSUPPORTED => break,
                Err(e) => {
                    attempt += 1;
                    // A backend retries its own requests; an unreachable origin is not retried
                    // here on top of that.
                    let unreachable_origin =
                        matches!(e.kind, ErrorKind::NETWORK | ErrorKind::TIMEOUT);
                    if unreachable_origin && let Some(o) = &origin {
                        unreachable.push((o.clone(), e.clone()));
                    }
                    if !unreachable_origin && policy.should_retry(&e, attempt) {
                        let delay = policy.delay(&e, attempt);
                        log::warn!(
                            "`{}` could not resolve {what} ({e}); retrying in {:.1}s",
                            backend.name(),
                            delay.as_secs_f64()
                        );
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    log::info!("`{}` could not resolve {what}: {e}", backend.name());
                    errors.push((backend.name().to_owned(), e));
                    break;
                }
            }
        }
    }
    Err(resolve_error(&what, errors))
}

/// One resolve call with a deadline: `None` if it did not answer in time (it was cancelled and,
/// if still stuck after a short grace, abandoned). The global `cancel` cancels it at once.
async fn resolve_once(
    backend: &dyn Transport,
    request: ResolveRequest,
    cancel: &CancelToken,
    timeout: Duration,
) -> Option<Result<Manifest, PluginError>> {
    const GRACE: Duration = Duration::from_secs(3);
    let call = CancelToken::new();
    let fut = backend.resolve(request, call.clone());
    tokio::pin!(fut);
    let start = Instant::now();
    let mut cancelled_at: Option<Instant> = None;
    loop {
        tokio::select! {
            r = &mut fut => return Some(r),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if cancel.is_cancelled() {
            call.cancel();
            return Some(Err(PluginError::cancelled()));
        }
        match cancelled_at {
            None if start.elapsed() >= timeout => {
                call.cancel();
                cancelled_at = Some(Instant::now());
            }
            Some(at) if at.elapsed() >= GRACE => return None,
            _ => {}
        }
    }
}

fn resolve_error(what: &str, errors: Vec<(String, PluginError)>) -> HostError {
    if errors.is_empty() {
        return HostError::NoBackend(format!("no loaded backend can resolve {what}"));
    }
    // Backends that failed the same way are named together; a backend's auth hint is printed
    // once, as the `hint:` line, not inside each cause.
    let causes = group_causes(
        errors
            .iter()
            .map(|(b, e)| (b.as_str(), e.kind, e.message.as_str())),
    );
    let detail = |with_kind: bool| {
        causes
            .iter()
            .map(|c| {
                if with_kind {
                    format!("{} ({})", c.line(), c.kind)
                } else {
                    c.line()
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mixed = causes.iter().any(|c| c.kind != causes[0].kind);
    if errors.iter().any(|(_, e)| e.kind == ErrorKind::AUTH) {
        HostError::auth(
            format!("access to {what} was refused ({})", detail(mixed)),
            causes_hint(&causes),
        )
    } else if errors.iter().all(|(_, e)| e.kind == ErrorKind::NOT_FOUND) {
        HostError::NotFound(format!("{what} was not found ({})", detail(false)))
    } else {
        // The first error (the first cause) decides the exit code; the others stay in its
        // message.
        let (_, mut e) = errors.into_iter().next().expect("non-empty");
        let first = &causes[0];
        let others: Vec<String> = causes[1..]
            .iter()
            .map(|c| format!("{} ({})", c.line(), c.kind))
            .collect();
        if !others.is_empty() {
            e.message = format!("{}; also {}", first.message, others.join("; ")).into();
        }
        HostError::backend(&first.backends.join(", "), "resolve", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::ROption;

    fn mf(path: &str) -> ManifestFile {
        ManifestFile {
            path: path.into(),
            size: 1,
            git_oid: "0".repeat(40).as_str().into(),
            sha256: ROption::RNone,
            xet_hash: ROption::RNone,
        }
    }

    fn paths(files: &[ManifestFile], sel: &Selection) -> Vec<String> {
        sel.selected
            .iter()
            .map(|&i| files[i].path.to_string())
            .collect()
    }

    #[test]
    fn fnmatch_follows_python() {
        assert!(fnmatch("a/b/c.json", "*.json"));
        assert!(fnmatch("config.json", "*.json"));
        assert!(!fnmatch("config.json", "*.bin"));
        assert!(fnmatch("data/x/y.txt", "data/*"));
        assert!(fnmatch("a1.bin", "a?.bin"));
        assert!(!fnmatch("a12.bin", "a?.bin"));
        assert!(fnmatch("m3.bin", "m[0-9].bin"));
        assert!(!fnmatch("mx.bin", "m[0-9].bin"));
        assert!(fnmatch("mx.bin", "m[!0-9].bin"));
        assert!(fnmatch("[x", "[x"));
        assert!(fnmatch("", "*"));
        assert!(fnmatch("abcabd", "*abd"));
        assert!(!fnmatch("abc", "ab"));
    }

    #[test]
    fn include_exclude_and_folders() {
        let files: Vec<_> = [
            "config.json",
            "model.safetensors",
            "sub/a.json",
            "sub/deep/b.bin",
            "README.md",
        ]
        .iter()
        .map(|p| mf(p))
        .collect();
        let req = PlanRequest {
            include: vec!["*.json".into()],
            ..Default::default()
        };
        assert_eq!(
            paths(&files, &select(&files, &req)),
            ["config.json", "sub/a.json"]
        );
        let req = PlanRequest {
            include: vec!["sub/".into()],
            exclude: vec!["*.bin".into()],
            ..Default::default()
        };
        assert_eq!(paths(&files, &select(&files, &req)), ["sub/a.json"]);
        let req = PlanRequest {
            exclude: vec!["*.json".into(), "*.md".into()],
            ..Default::default()
        };
        assert_eq!(
            paths(&files, &select(&files, &req)),
            ["model.safetensors", "sub/deep/b.bin"]
        );
    }

    #[test]
    fn positional_files_win_over_globs_with_a_warning() {
        let files: Vec<_> = ["a.json", "b.bin", "d/x", "d/y"]
            .iter()
            .map(|p| mf(p))
            .collect();
        let req = PlanRequest {
            files: vec!["b.bin".into(), "d/".into(), "nope.txt".into()],
            include: vec!["*.json".into()],
            ..Default::default()
        };
        let sel = select(&files, &req);
        assert_eq!(paths(&files, &sel), ["b.bin", "d/x", "d/y"]);
        assert_eq!(sel.missing, ["nope.txt"]);
        assert_eq!(sel.warnings.len(), 1);
        assert!(sel.warnings[0].contains("ignored"));
    }

    #[test]
    fn offline_plans_from_refs_and_snapshots_and_names_the_cache_on_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::cache(dir.path(), RepoType::MODEL, "acme/tiny");
        let Target::Cache(c) = &target else {
            unreachable!()
        };
        let commit = "c".repeat(40);
        std::fs::create_dir_all(c.root.join("blobs")).unwrap();
        std::fs::write(c.blob_path("e1"), b"abc").unwrap();
        c.link(&commit, "sub/a.json", "e1").unwrap();
        c.link(&commit, "b.bin", "e1").unwrap();
        c.write_ref("main", &commit).unwrap();
        let req = PlanRequest {
            repo_id: "acme/tiny".into(),
            include: vec!["*.json".into()],
            ..PlanRequest::default()
        };
        let plan = offline_plan(&req, &target).unwrap();
        assert_eq!(plan.commit, commit);
        assert_eq!(plan.resolved_by, "cache");
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.files[0].file.path.as_str(), "sub/a.json");
        assert_eq!(plan.files[0].file.size, 3);
        // By commit sha, without a ref.
        let by_sha = PlanRequest {
            revision: commit.clone(),
            ..req.clone()
        };
        assert_eq!(offline_plan(&by_sha, &target).unwrap().commit, commit);
        // Misses: unknown revision, missing file; the error names the cache dir (exit 6).
        for miss in [
            PlanRequest {
                revision: "v9".into(),
                ..req.clone()
            },
            PlanRequest {
                files: vec!["nope.txt".into()],
                ..req.clone()
            },
        ] {
            let err = offline_plan(&miss, &target).unwrap_err();
            assert_eq!(err.exit_code(), crate::error::EXIT_OFFLINE_MISS);
            assert!(
                err.to_string().contains(&dir.path().display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn case_twins_and_local_dir_metadata_are_refused_together_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = vec![
            mf("README.md"),
            mf("readme.md"),
            mf("ok.txt"),
            mf(".cache/huggingface/x"),
        ];
        for (i, f) in files.iter_mut().enumerate() {
            f.git_oid = format!("{i}").repeat(40).as_str().into();
        }
        let manifest = Manifest::new("d".repeat(40), files);
        let req = PlanRequest::default();
        let cache = Target::cache(dir.path(), RepoType::MODEL, "evil/x");
        let plan = build_plan(manifest.clone(), "t", &req, &cache).unwrap();
        let refused: Vec<&str> = plan.refused.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(refused, vec!["README.md", "readme.md"]);
        let local = Target::local_dir(&dir.path().join("out"));
        let plan = build_plan(manifest, "t", &req, &local).unwrap();
        let refused: Vec<&str> = plan.refused.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            refused,
            vec!["README.md", "readme.md", ".cache/huggingface/x"]
        );
        assert_eq!(plan.files.len(), 1);
    }

    #[test]
    fn hostile_manifest_entries_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::cache(dir.path(), RepoType::MODEL, "evil/x");
        let mut files = vec![mf("ok.txt"), mf("../../evil")];
        files[0].git_oid = "a".repeat(40).as_str().into();
        let manifest = Manifest::new("d".repeat(40), files);
        let req = PlanRequest::default();
        // The hostile entry is refused by name; the safe one is still planned.
        let plan = build_plan(manifest.clone(), "t", &req, &target).unwrap();
        assert_eq!(plan.files.len(), 1);
        assert_eq!(plan.refused.len(), 1);
        assert!(plan.refused[0].to_string().contains("\"../../evil\""));
        let only_ok = PlanRequest {
            files: vec!["ok.txt".into()],
            ..PlanRequest::default()
        };
        assert_eq!(
            build_plan(manifest, "t", &only_ok, &target)
                .unwrap()
                .files
                .len(),
            1
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "nothing written"
        );
    }
}
