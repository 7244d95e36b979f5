//! `hubget cache`: `ls`, `verify`, `rm` and `prune` over the Hugging Face cache, matching `hf
//! cache` where it has the command. They work on caches written by huggingface_hub and by
//! hubget (one layout), and leave caches that `hf cache verify` accepts.
//!
//! - `ls` reads [`crate::store::scan`]: sizes count every blob once, shared store included.
//! - `verify` checks every file of a revision against the Hub's manifest (resolved through the
//!   backends as a download does), or with `--offline` against the hashes the cache records
//!   (blob names, local-dir metadata); `--repair` removes what is bad and runs the normal
//!   download for the bad and missing files only.
//! - `rm` and `prune` never remove a shared blob store entry another repository still links
//!   to: entries are swept (under their lock, as huggingface_hub does) only once no repo blob
//!   links to them.

use std::collections::{BTreeSet, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hubget_plugin_api::{CancelToken, ManifestFile, RepoType, is_commit_sha};
use serde_json::{Value, json};

use crate::cli::{
    CacheCommand, CacheDirArg, CacheLsArgs, CacheRmArgs, CacheVerifyArgs, DownloadArgs, HfUri,
    RemovalArgs, RepoSpec,
};
use crate::commands::download::human_bytes;
use crate::commands::{open_transports, print_stdout};
use crate::error::HostError;
use crate::plan::{PlanRequest, local_dir_commit, resolve_plan};
use crate::settings::{Env, Overrides, Settings};
use crate::store::Target;
use crate::store::remove::{CacheRemover, Entry};
use crate::store::scan::{
    Scan, ScannedRepo, SnapshotLink, files_under, refs_of, scan, snapshot_link,
};
use crate::store::shared::SharedBlobs;
use crate::store::walk;
use crate::verify::{Algo, Expected, verify_file};

/// Runs `hubget cache ...`.
pub fn run(env: &Env, config: Option<PathBuf>, command: &CacheCommand) -> Result<(), HostError> {
    match command {
        CacheCommand::Ls(args) => ls(&cache_dir(env, config, &args.cache)?, args),
        CacheCommand::Verify(args) => verify(env, config, args),
        CacheCommand::Rm(args) => rm(&cache_dir(env, config, &args.removal.cache)?, args),
        CacheCommand::Prune(args) => prune(&cache_dir(env, config, &args.cache)?, args),
    }
}

/// The cache directory the settings name (`--cache-dir`, `HF_HUB_CACHE`, `HF_HOME`, config).
fn cache_dir(env: &Env, config: Option<PathBuf>, arg: &CacheDirArg) -> Result<PathBuf, HostError> {
    let overrides = Overrides {
        config,
        cache_dir: arg.cache_dir.clone(),
        ..Overrides::default()
    };
    Ok(Settings::load(&overrides, env)?.cache_dir.value)
}

fn scan_or_explain(root: &Path) -> Result<Scan, HostError> {
    scan(root).map_err(|e| HostError::Io {
        context: format!("cannot read the cache directory {}", root.display()),
        source: e,
    })
}

// ---------------------------------------------------------------------------------------- ls

/// One line of `ls`: a repository, or one of its revisions.
struct Row<'a> {
    repo: &'a ScannedRepo,
    revision: Option<&'a crate::store::scan::ScannedRevision>,
}

impl Row<'_> {
    fn size(&self) -> u64 {
        self.revision
            .map_or(self.repo.size_on_disk, |r| r.size_on_disk)
    }
    fn modified(&self) -> SystemTime {
        self.revision
            .map_or(self.repo.last_modified, |r| r.last_modified)
    }
    fn refs(&self) -> Vec<String> {
        match self.revision {
            Some(r) => r.refs.clone(),
            None => self.repo.refs.keys().cloned().collect(),
        }
    }
    fn json(&self) -> Value {
        let mut v = json!({
            "id": self.repo.cache_id(),
            "repo_id": self.repo.repo_id,
            "repo_type": self.repo.repo_type.name(),
            "size_on_disk": self.size(),
            "last_modified": unix(self.modified()),
            "refs": self.refs(),
            "path": self.repo.path.display().to_string(),
        });
        match self.revision {
            Some(r) => {
                v["revision"] = json!(r.commit);
                v["files"] = json!(r.files.len());
                v["path"] = json!(r.snapshot.display().to_string());
            }
            None => v["revisions"] = json!(self.repo.revisions.len()),
        }
        v
    }
}

/// A parsed `--filter` expression.
enum Filter {
    Type(RepoType),
    Name(String),
    SizeAbove(u64),
    SizeBelow(u64),
    OlderThan(Duration),
    NewerThan(Duration),
}

impl Filter {
    fn parse(expr: &str) -> Result<Self, HostError> {
        let bad = |why: &str| HostError::InvalidValue {
            name: "--filter".to_owned(),
            message: format!(
                "`{expr}`: {why} (e.g. type=dataset, size>1GB, modified>7d, name~bert)"
            ),
        };
        let e = expr.replace(' ', "");
        let Some(at) = e.find(['=', '~', '>', '<']) else {
            return Err(bad("unknown filter"));
        };
        let (field, op, value) = (&e[..at], &e[at..=at], &e[at + 1..]);
        let size = || parse_size(value).ok_or_else(|| bad("bad size"));
        let age = || parse_age(value).ok_or_else(|| bad("bad age"));
        match (field, op) {
            ("type", "=") => RepoType::parse(value)
                .map(Filter::Type)
                .ok_or_else(|| bad("unknown type")),
            ("name", "~") => Ok(Filter::Name(value.to_ascii_lowercase())),
            ("size", ">") => size().map(Filter::SizeAbove),
            ("size", "<") => size().map(Filter::SizeBelow),
            ("modified", ">") => age().map(Filter::OlderThan),
            ("modified", "<") => age().map(Filter::NewerThan),
            _ => Err(bad("unknown filter")),
        }
    }

    fn keeps(&self, row: &Row, now: SystemTime) -> bool {
        let age = now.duration_since(row.modified()).unwrap_or_default();
        match self {
            Filter::Type(t) => row.repo.repo_type == *t,
            Filter::Name(n) => row.repo.repo_id.to_ascii_lowercase().contains(n.as_str()),
            Filter::SizeAbove(n) => row.size() > *n,
            Filter::SizeBelow(n) => row.size() < *n,
            Filter::OlderThan(d) => age > *d,
            Filter::NewerThan(d) => age < *d,
        }
    }
}

/// `1GB`, `10M`, `500k`, `2GiB`, `123`: k/M/G/T are powers of 1000, Ki/Mi/Gi/Ti of 1024.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim_end_matches(['B', 'b']);
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        None => (s, 1f64),
        Some((i, _)) => {
            let unit = &s[i..];
            let m = match unit.to_ascii_lowercase().as_str() {
                "k" => 1e3,
                "m" => 1e6,
                "g" => 1e9,
                "t" => 1e12,
                "ki" => 1024f64,
                "mi" => 1024f64.powi(2),
                "gi" => 1024f64.powi(3),
                "ti" => 1024f64.powi(4),
                _ => return None,
            };
            (&s[..i], m)
        }
    };
    let n: f64 = num.parse().ok()?;
    (n >= 0.0).then_some((n * mult) as u64)
}

/// `30s`, `15m`, `2h`, `7d`, `4w`.
fn parse_age(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(Duration::from_secs(n.saturating_mul(secs)))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `just now`, `5 minutes ago`, `3 days ago`.
fn ago(t: SystemTime, now: SystemTime) -> String {
    let s = now.duration_since(t).unwrap_or_default().as_secs();
    let (n, unit) = match s {
        0..60 => return "just now".to_owned(),
        60..3600 => (s / 60, "minute"),
        3600..86_400 => (s / 3600, "hour"),
        86_400..2_592_000 => (s / 86_400, "day"),
        2_592_000..31_536_000 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn ls(root: &Path, args: &CacheLsArgs) -> Result<(), HostError> {
    let scan = scan_or_explain(root)?;
    let filters = args
        .filters
        .iter()
        .map(|f| Filter::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    let now = SystemTime::now();
    let mut rows: Vec<Row> = Vec::new();
    for repo in &scan.repos {
        if args.revisions {
            rows.extend(repo.revisions.iter().map(|r| Row {
                repo,
                revision: Some(r),
            }));
        } else {
            rows.push(Row {
                repo,
                revision: None,
            });
        }
    }
    rows.retain(|r| filters.iter().all(|f| f.keeps(r, now)));
    if let Some(sort) = &args.sort {
        let (key, order) = sort.split_once(':').unwrap_or((sort.as_str(), ""));
        let desc = match (key, order) {
            (_, "asc") => false,
            (_, "desc") => true,
            ("name", "") => false,
            ("size" | "modified", "") => true,
            _ => {
                return Err(HostError::InvalidValue {
                    name: "--sort".to_owned(),
                    message: format!("`{sort}`: use name, size or modified, optionally :asc/:desc"),
                });
            }
        };
        match key {
            "name" => rows.sort_by_key(|r| r.repo.cache_id()),
            "size" => rows.sort_by_key(|r| r.size()),
            "modified" => rows.sort_by_key(|r| r.modified()),
            _ => {
                return Err(HostError::InvalidValue {
                    name: "--sort".to_owned(),
                    message: format!("`{sort}`: use name, size or modified"),
                });
            }
        }
        if desc {
            rows.reverse();
        }
    }
    if let Some(n) = args.limit {
        rows.truncate(n);
    }
    let repo_count = rows
        .iter()
        .map(|r| r.repo.path.as_path())
        .collect::<HashSet<_>>()
        .len();
    let revision_count: usize = if args.revisions {
        rows.len()
    } else {
        rows.iter().map(|r| r.repo.revisions.len()).sum()
    };
    // The whole cache counts shared blobs once; a filtered listing sums its rows.
    let total = if filters.is_empty() && args.limit.is_none() && !args.revisions {
        scan.size_on_disk
    } else {
        rows.iter().map(Row::size).sum()
    };
    let incomplete_bytes: u64 = scan.incomplete.iter().map(|(_, n)| n).sum();
    if args.json {
        let doc = json!({
            "cache_dir": root.display().to_string(),
            if args.revisions { "revisions" } else { "repos" }: rows.iter().map(Row::json).collect::<Vec<_>>(),
            "repo_count": repo_count,
            "revision_count": revision_count,
            "size_on_disk": total,
            "incomplete": { "files": scan.incomplete.len(), "bytes": incomplete_bytes },
            "warnings": scan.warnings,
        });
        return print_stdout(&format!("{doc}\n"));
    }
    let mut table: Vec<Vec<String>> = vec![if args.revisions {
        ["ID", "REVISION", "SIZE", "LAST_MODIFIED", "REFS"]
            .map(str::to_owned)
            .to_vec()
    } else {
        ["ID", "SIZE", "LAST_MODIFIED", "REFS"]
            .map(str::to_owned)
            .to_vec()
    }];
    for r in &rows {
        let mut line = vec![r.repo.cache_id()];
        if let Some(rev) = r.revision {
            line.push(rev.commit.clone());
        }
        line.push(human_bytes(r.size()));
        line.push(ago(r.modified(), now));
        line.push(r.refs().join(", "));
        table.push(line);
    }
    let mut text = String::new();
    if rows.is_empty() {
        text.push_str("No cached repository matches.\n");
    } else {
        text.push_str(&format_table(&table));
    }
    text.push_str(&format!(
        "\nFound {repo_count} repo(s) for a total of {revision_count} revision(s) and {} on disk.\n",
        human_bytes(total)
    ));
    if !scan.incomplete.is_empty() {
        text.push_str(&format!(
            "hint: {} incomplete download(s) totalling {}; `hubget cache prune` removes the stale ones.\n",
            scan.incomplete.len(),
            human_bytes(incomplete_bytes)
        ));
    }
    for w in &scan.warnings {
        log::warn!("{w}");
    }
    print_stdout(&text)
}

fn format_table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------------------------------ verify

/// What `verify` found.
#[derive(Default)]
struct Report {
    commit: String,
    ok: Vec<String>,
    bad: Vec<(String, String)>,
    missing: Vec<String>,
    extra: Vec<String>,
    unverifiable: Vec<String>,
}

fn verify(env: &Env, config: Option<PathBuf>, args: &CacheVerifyArgs) -> Result<(), HostError> {
    let settings = Settings::load(&args.settings.overrides(config.clone()), env)?;
    crate::commands::register_token(&settings);
    let spec = RepoSpec::parse(
        &args.repo_id,
        &[],
        args.repo_type.as_deref(),
        args.revision.as_deref(),
    )?;
    let target = match &args.local_dir {
        Some(dir) => Target::local_dir(dir),
        None => Target::cache(&settings.cache_dir.value, spec.repo_type, &spec.repo_id),
    };
    let what = format!("{} {} at {}", spec.repo_type, spec.repo_id, spec.revision);
    let mut report = check(&settings, &spec, &target)?;
    let mut repaired = Vec::new();
    if args.repair && !(report.bad.is_empty() && report.missing.is_empty()) {
        repaired = repair(env, config, args, &spec, &target, &report)?;
        // Check again what was fetched.
        let after = check(&settings, &spec, &target)?;
        report = after;
    }
    let failed = !(report.bad.is_empty() && report.missing.is_empty() && report.extra.is_empty());
    if args.json {
        let doc = json!({
            "repo_id": spec.repo_id,
            "repo_type": spec.repo_type.name(),
            "revision": spec.revision,
            "commit": report.commit,
            "checked": report.ok.len() + report.bad.len(),
            "ok": report.ok.len(),
            "bad": report.bad.iter().map(|(p, why)| json!({"path": p, "reason": why})).collect::<Vec<_>>(),
            "missing": report.missing,
            "extra": report.extra,
            "unverifiable": report.unverifiable,
            "repaired": repaired,
        });
        print_stdout(&format!("{doc}\n"))?;
    } else {
        let mut text = String::new();
        for (p, why) in &report.bad {
            text.push_str(&format!(
                "bad      {}  ({why})\n",
                crate::output::escape_name(p)
            ));
        }
        for p in &report.missing {
            text.push_str(&format!("missing  {}\n", crate::output::escape_name(p)));
        }
        for p in &report.extra {
            text.push_str(&format!("extra    {}\n", crate::output::escape_name(p)));
        }
        for p in &report.unverifiable {
            text.push_str(&format!(
                "unknown  {}  (no recorded hash to check against)\n",
                crate::output::escape_name(p)
            ));
        }
        if !repaired.is_empty() {
            text.push_str(&format!("repaired {} file(s)\n", repaired.len()));
        }
        text.push_str(&format!(
            "{}: {} file(s) verified, {} bad, {} missing, {} extra ({})\n",
            if failed { "FAILED" } else { "OK" },
            report.ok.len(),
            report.bad.len(),
            report.missing.len(),
            report.extra.len(),
            what
        ));
        print_stdout(&text)?;
    }
    if failed {
        return Err(HostError::VerifyFailed {
            what,
            bad: report.bad.len(),
            missing: report.missing.len(),
            extra: report.extra.len(),
        });
    }
    Ok(())
}

/// Compares the revision's files with what is on disk.
fn check(settings: &Settings, spec: &RepoSpec, target: &Target) -> Result<Report, HostError> {
    let req = PlanRequest {
        repo_type: spec.repo_type,
        repo_id: spec.repo_id.clone(),
        revision: spec.revision.clone(),
        files: spec.files.clone(),
        ..PlanRequest::default()
    };
    let (commit, expected, known) = if settings.offline.value {
        recorded(spec, target)?
    } else {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| HostError::io("cannot start the async runtime", e))?;
        let plan = runtime.block_on(async {
            let backends = open_transports(settings)?;
            let timeout = Duration::from_secs(settings.stall_timeout_secs.value.max(1) * 10);
            resolve_plan(&backends, &req, target, &CancelToken::new(), timeout).await
        });
        runtime.shutdown_background();
        let plan = plan?;
        let expected: Vec<(String, Option<Expected>)> = plan
            .files
            .iter()
            .map(|f| (f.file.path.to_string(), Some(Expected::for_file(&f.file))))
            .collect();
        let known: HashSet<String> = plan
            .manifest_files
            .iter()
            .map(|f: &ManifestFile| f.path.to_string())
            .collect();
        (plan.commit, expected, known)
    };
    let on_disk: std::collections::HashMap<String, PathBuf> = on_disk_files(target, &commit)
        .into_iter()
        .map(|(path, file, _)| (path, file))
        .collect();
    let mut report = Report {
        commit: commit.clone(),
        ..Report::default()
    };
    for (path, expect) in &expected {
        let Some(file) = on_disk.get(path) else {
            report.missing.push(path.clone());
            continue;
        };
        if let Target::Cache(c) = target
            && let SnapshotLink::Outside(to) =
                snapshot_link(&c.root, &c.snapshot_dir(&commit).join(path))
        {
            report.bad.push((
                path.clone(),
                format!(
                    "a link out of the repository's blobs (to {}); only the link will go",
                    to.display()
                ),
            ));
            continue;
        }
        let Some(expect) = expect else {
            report.unverifiable.push(path.clone());
            continue;
        };
        match verify_file(file, expect) {
            Ok(_) => report.ok.push(path.clone()),
            Err(e) => report.bad.push((path.clone(), e.to_string())),
        }
    }
    // Extra: on disk, not in the revision (under the folders asked for, if any).
    report.extra = on_disk
        .keys()
        .filter(|path| selected(path, &spec.files) && !known.contains(*path))
        .cloned()
        .collect();
    report.extra.sort();
    Ok(report)
}

/// Offline: the commit the cache (or the local dir's metadata) records, and for each file the
/// hash its blob is named after (the local dir's recorded etag).
#[allow(clippy::type_complexity)]
fn recorded(
    spec: &RepoSpec,
    target: &Target,
) -> Result<(String, Vec<(String, Option<Expected>)>, HashSet<String>), HostError> {
    let what = format!("{} {} at {}", spec.repo_type, spec.repo_id, spec.revision);
    let expect_for = |etag: &str, file: &Path| -> Option<Expected> {
        let size = std::fs::metadata(file).ok()?.len();
        let etag = etag.to_ascii_lowercase();
        let algo = match etag.len() {
            64 => Algo::Sha256,
            40 => Algo::GitSha1,
            _ => return None,
        };
        etag.bytes()
            .all(|b| b.is_ascii_hexdigit())
            .then_some(Expected {
                size,
                algo,
                digest: etag,
            })
    };
    match target {
        Target::Cache(c) => {
            let commit = if is_commit_sha(&spec.revision) {
                Some(spec.revision.clone())
            } else {
                c.read_ref(&spec.revision)
            }
            .filter(|s| c.snapshot_dir(s).is_dir())
            .ok_or_else(|| HostError::OfflineMiss {
                what: what.clone(),
                cache_dir: c.cache_dir.clone(),
            })?;
            let files = files_under(&c.snapshot_dir(&commit), &[]);
            let expected = files
                .iter()
                .filter(|(p, _, _)| selected(p, &spec.files))
                .map(|(p, resolved, _)| {
                    let link = c.snapshot_dir(&commit).join(p);
                    let etag = match snapshot_link(&c.root, &link) {
                        SnapshotLink::Blob(name) => Some(name),
                        SnapshotLink::File | SnapshotLink::Outside(_) => None,
                    };
                    (p.clone(), etag.and_then(|e| expect_for(&e, resolved)))
                })
                .collect();
            let known = files.into_iter().map(|(p, _, _)| p).collect();
            Ok((commit, expected, known))
        }
        Target::LocalDir(l) => {
            let meta = l.metadata_files();
            let commit = local_dir_commit(l, &meta, &what)?;
            let expected = meta
                .iter()
                .filter(|(p, _, _)| selected(p, &spec.files))
                .map(|(p, m, _)| {
                    let file = l.file_path(p).ok();
                    (p.clone(), file.and_then(|f| expect_for(&m.etag, &f)))
                })
                .collect();
            let known = meta.into_iter().map(|(p, _, _)| p).collect();
            Ok((commit, expected, known))
        }
    }
}

fn selected(path: &str, files: &[String]) -> bool {
    files.is_empty()
        || files
            .iter()
            .any(|f| path == f || (f.ends_with('/') && path.starts_with(f.as_str())))
}

/// The files of the revision on disk: the snapshot folder, or the local dir (without its
/// `.cache/huggingface/`).
fn on_disk_files(target: &Target, commit: &str) -> Vec<(String, PathBuf, u64)> {
    match target {
        Target::Cache(c) => files_under(&c.snapshot_dir(commit), &[]),
        Target::LocalDir(l) => files_under(&l.root, &[".cache"])
            .into_iter()
            .filter(|(p, _, _)| !p.contains(crate::resume::PARTIAL_SUFFIX))
            .collect(),
    }
}

/// Removes the bad files (the repo blob or the local file, never a shared store entry) and
/// downloads the bad and missing ones again, at the verified commit. Returns what it fetched.
fn repair(
    env: &Env,
    config: Option<PathBuf>,
    args: &CacheVerifyArgs,
    spec: &RepoSpec,
    target: &Target,
    report: &Report,
) -> Result<Vec<String>, HostError> {
    for (path, _) in &report.bad {
        match target {
            Target::Cache(c) => {
                // The snapshot link, and the repo blob behind it when it is one of the repo's
                // own (a file, or a link into the shared store: only that link goes, the entry
                // stays for the repos that use it). A link anywhere else goes as a link.
                let link = c.snapshot_dir(&report.commit).join(path);
                let blob = snapshot_link(&c.root, &link);
                let folder = c.folder.clone();
                let mut remover = CacheRemover::open(&c.cache_dir).map_err(|e| {
                    HostError::io(
                        format!("cannot open the cache {}", c.cache_dir.display()),
                        e,
                    )
                })?;
                let gone = |e| HostError::io(format!("cannot remove the bad file {path}"), e);
                remover
                    .remove(Entry::SnapshotFile {
                        folder: &folder,
                        commit: &report.commit,
                        path,
                    })
                    .map_err(gone)?;
                if let SnapshotLink::Blob(name) = blob {
                    remover
                        .remove(Entry::Blob {
                            folder: &folder,
                            name: &name,
                        })
                        .map_err(gone)?;
                }
            }
            Target::LocalDir(l) => {
                if let Ok(meta) = l.metadata_path(path) {
                    let _ = std::fs::remove_file(meta);
                }
                let remove = l
                    .file_path(path)
                    .map_err(|e| HostError::Other(e.to_string()))?;
                if let Err(e) = std::fs::remove_file(&remove)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(HostError::Io {
                        context: format!("cannot remove the bad file {}", remove.display()),
                        source: e,
                    });
                }
            }
        }
    }
    let files: Vec<String> = report
        .bad
        .iter()
        .map(|(p, _)| p.clone())
        .chain(report.missing.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let download = DownloadArgs {
        repo_id: spec.repo_id.clone(),
        files: files.clone(),
        repo_type: Some(spec.repo_type.name().into_owned()),
        revision: Some(report.commit.clone()),
        include: Vec::new(),
        exclude: Vec::new(),
        local_dir: args.local_dir.clone(),
        force_download: false,
        dry_run: false,
        json: args.json,
        quiet: !args.json,
        settings: args.settings.clone(),
        resume_download: false,
        local_dir_use_symlinks: None,
    };
    crate::commands::download::run_for_repair(env, config, &download)?;
    // `--revision <commit>` wrote no ref: the revision asked for still points where it did.
    Ok(files)
}

// ---------------------------------------------------------------------------------- rm/prune

/// What `rm` or `prune` removes, by names inside the cache (see [`CacheRemover`]).
#[derive(Default)]
struct Removal {
    /// Whole repository folders.
    repos: Vec<String>,
    /// (repo folder, commit) of single revisions.
    revisions: Vec<(String, String)>,
    /// Incomplete downloads: (repo folder, file name in `blobs/`, its download lock).
    incomplete: Vec<(String, String, PathBuf)>,
    /// Shared store entries to sweep afterwards (removed only if nothing links to them).
    shared: BTreeSet<PathBuf>,
    /// Lines to show: one per item, and the files each takes with it.
    lines: Vec<String>,
    /// The items among `lines` (the rest list their files).
    items: Vec<String>,
    /// Bytes expected to be freed.
    bytes: u64,
}

impl Removal {
    fn item(&mut self, line: String) {
        self.items.push(line.clone());
        self.lines.push(line);
    }

    fn files_of(&mut self, revision: &crate::store::scan::ScannedRevision) {
        for (path, _, _) in &revision.files {
            self.lines.push(format!(
                "    {}/{}",
                revision.commit,
                crate::output::escape_name(path)
            ));
        }
    }
}

/// Parses an `rm` target into (type, repo id, revision).
fn parse_target(
    target: &str,
    default_type: Option<&str>,
) -> Result<(Option<RepoType>, String, Option<String>), HostError> {
    if let Some(body) = target.strip_prefix("hf://") {
        let uri =
            HfUri::parse(body).map_err(|why| HostError::Usage(format!("`{target}`: {why}")))?;
        return Ok((
            uri.repo_type
                .or_else(|| default_type.and_then(RepoType::parse)),
            uri.repo_id,
            uri.revision,
        ));
    }
    let (repo, revision) = match target.split_once('@') {
        Some((r, rev)) => (r, Some(rev.to_owned())),
        None => (target, None),
    };
    // `model/owner/name`, as `ls` prints ids.
    let (repo_type, id) = match repo.split_once('/') {
        Some((t, rest))
            if rest.contains('/') && RepoType::parse(t).is_some() && !t.ends_with('s') =>
        {
            (RepoType::parse(t), rest.to_owned())
        }
        _ => (default_type.and_then(RepoType::parse), repo.to_owned()),
    };
    Ok((repo_type.or(Some(RepoType::MODEL)), id, revision))
}

/// The names (in `<repo>/blobs`) of the blobs a revision links. A link anywhere else is
/// reported once and never followed: only the link itself goes with its snapshot.
fn revision_blobs(repo: &Path, snapshot: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    for (rel, e) in walk::files(snapshot, false).flatten() {
        match snapshot_link(repo, e.path()) {
            SnapshotLink::Blob(name) => {
                out.insert(name);
            }
            SnapshotLink::File => {}
            SnapshotLink::Outside(to) => log::warn!(
                "{}/{} links outside the repository's blobs (to {}): only the link will go",
                snapshot.display(),
                crate::output::escape_name(&rel),
                to.display()
            ),
        }
    }
    out
}

/// Plans the removal of `commits` of `repo` (all of them: the whole folder).
fn plan_repo_removal(
    shared: &SharedBlobs,
    repo: &ScannedRepo,
    commits: &BTreeSet<String>,
    removal: &mut Removal,
) {
    let all = repo.revisions.iter().all(|r| commits.contains(&r.commit));
    let blobs_dir = repo.path.join("blobs");
    let doomed: HashSet<PathBuf> = if all {
        std::fs::read_dir(&blobs_dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    } else {
        let kept: HashSet<String> = repo
            .revisions
            .iter()
            .filter(|r| !commits.contains(&r.commit))
            .flat_map(|r| revision_blobs(&repo.path, &r.snapshot))
            .collect();
        repo.revisions
            .iter()
            .filter(|r| commits.contains(&r.commit))
            .flat_map(|r| revision_blobs(&repo.path, &r.snapshot))
            .filter(|b| !kept.contains(b))
            .map(|b| blobs_dir.join(b))
            .collect()
    };
    for blob in &doomed {
        let Ok(meta) = std::fs::symlink_metadata(blob) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            // A link into the shared store: the entry goes only if every link to it goes.
            if let Some(entry) = std::fs::canonicalize(blob)
                .ok()
                .filter(|e| e.starts_with(shared.dir()))
            {
                let refs = shared.live_references(&entry).unwrap_or_default();
                if !refs.is_empty() && refs.iter().all(|r| doomed.contains(r)) {
                    removal.bytes += std::fs::metadata(&entry).map_or(0, |m| m.len());
                }
                removal.shared.insert(entry);
            }
        } else {
            removal.bytes += meta.len();
        }
    }
    if all {
        removal.item(format!(
            "{} ({} revision(s))",
            repo.cache_id(),
            repo.revisions.len()
        ));
        for r in &repo.revisions {
            removal.files_of(r);
        }
        removal.repos.push(repo.folder.clone());
    } else {
        for r in repo
            .revisions
            .iter()
            .filter(|r| commits.contains(&r.commit))
        {
            removal.item(format!("{} @ {}", repo.cache_id(), r.commit));
            removal.files_of(r);
            removal
                .revisions
                .push((repo.folder.clone(), r.commit.clone()));
        }
    }
}

/// Asks before deleting, unless `--yes`; without a terminal, `--yes` is required.
fn confirm(yes: bool) -> Result<bool, HostError> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(HostError::Usage(
            "refusing to delete without confirmation: stdin is not a terminal (pass --yes, or \
             --dry-run to see what would go)"
                .to_owned(),
        ));
    }
    {
        use std::io::Write;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "Proceed? [y/N] ");
        let _ = err.flush();
    }
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| HostError::io("cannot read the answer", e))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Deletes what `removal` names, through [`CacheRemover`] only; returns the bytes swept from the
/// shared store and what the remover refused.
fn execute(root: &Path, removal: &Removal) -> Result<(u64, Vec<String>), HostError> {
    let mut remover = CacheRemover::open(root)
        .map_err(|e| HostError::io(format!("cannot open the cache {}", root.display()), e))?;
    let io = |e: std::io::Error| HostError::io("cannot delete", e);
    for folder in &removal.repos {
        remover.remove(Entry::Repo { folder }).map_err(io)?;
    }
    for (folder, commit) in &removal.revisions {
        let repo = root.join(folder);
        let mine = revision_blobs(&repo, &repo.join("snapshots").join(commit));
        if !remover
            .remove(Entry::Snapshot { folder, commit })
            .map_err(io)?
        {
            continue;
        }
        // Blobs no remaining snapshot links.
        let kept: HashSet<String> = std::fs::read_dir(repo.join("snapshots"))
            .map(|d| {
                d.flatten()
                    .flat_map(|s| revision_blobs(&repo, &s.path()))
                    .collect()
            })
            .unwrap_or_default();
        for name in mine.difference(&kept) {
            remover.remove(Entry::Blob { folder, name }).map_err(io)?;
        }
        // Refs that pointed at it.
        for (name, c) in refs_of(&repo) {
            if c == *commit {
                remover
                    .remove(Entry::Ref {
                        folder,
                        name: &name,
                    })
                    .map_err(io)?;
            }
        }
    }
    for (folder, name, lock) in &removal.incomplete {
        // Deleted under its download's lock, taken now: a download that started since the scan
        // keeps its partial file.
        let Ok(Some(_held)) = crate::store::lock::try_lock(lock) else {
            log::warn!("{folder}/blobs/{name} is being downloaded; kept");
            continue;
        };
        remover.remove(Entry::Blob { folder, name }).map_err(io)?;
    }
    let shared = SharedBlobs::new(root);
    let mut swept = 0;
    for entry in &removal.shared {
        swept += shared.sweep(entry).unwrap_or(0);
    }
    let refused = remover.refused().iter().map(ToString::to_string).collect();
    Ok((swept, refused))
}

fn rm(root: &Path, args: &CacheRmArgs) -> Result<(), HostError> {
    let scan = scan_or_explain(root)?;
    let shared = SharedBlobs::new(root);
    let mut selected: Vec<(usize, BTreeSet<String>)> = Vec::new();
    let mut select = |repo: usize, commits: BTreeSet<String>| match selected
        .iter_mut()
        .find(|(r, _)| *r == repo)
    {
        Some((_, c)) => c.extend(commits),
        None => selected.push((repo, commits)),
    };
    let mut missing = Vec::new();
    for target in &args.targets {
        if is_commit_sha(target) {
            let found: Vec<usize> = scan
                .repos
                .iter()
                .enumerate()
                .filter(|(_, r)| r.revisions.iter().any(|v| v.commit == *target))
                .map(|(i, _)| i)
                .collect();
            if found.is_empty() {
                missing.push(target.clone());
            }
            for i in found {
                select(i, BTreeSet::from([target.clone()]));
            }
            continue;
        }
        let (repo_type, id, revision) = parse_target(target, args.repo_type.as_deref())?;
        let folder = repo_type.unwrap_or(RepoType::MODEL).cache_folder(&id);
        let Some(i) = scan.repos.iter().position(|r| r.folder == folder) else {
            missing.push(target.clone());
            continue;
        };
        let repo = &scan.repos[i];
        match revision {
            None => select(i, repo.revisions.iter().map(|r| r.commit.clone()).collect()),
            Some(rev) => {
                let commit = if is_commit_sha(&rev) {
                    Some(rev.clone())
                } else {
                    repo.refs.get(&rev).cloned()
                };
                match commit.filter(|c| repo.revisions.iter().any(|r| r.commit == *c)) {
                    Some(c) => select(i, BTreeSet::from([c])),
                    None => missing.push(target.clone()),
                }
            }
        }
    }
    for m in &missing {
        log::warn!("not in the cache: {m}");
    }
    let mut removal = Removal::default();
    for (i, commits) in &selected {
        let repo = &scan.repos[*i];
        if repo.revisions.is_empty() {
            // A folder without snapshots (only blobs or refs): the whole folder goes.
            removal.item(format!("{} (no revision)", repo.cache_id()));
            removal.repos.push(repo.folder.clone());
            removal.bytes += repo.size_on_disk;
            continue;
        }
        plan_repo_removal(&shared, repo, commits, &mut removal);
    }
    finish(root, removal, &args.removal)
}

fn finish(root: &Path, removal: Removal, how: &RemovalArgs) -> Result<(), HostError> {
    let RemovalArgs { dry_run, yes, .. } = *how;
    if removal.lines.is_empty() && removal.incomplete.is_empty() && removal.shared.is_empty() {
        return print_stdout("Nothing to delete.\n");
    }
    let mut text = format!(
        "{} {} item(s), about {}:\n",
        if dry_run {
            "Would delete"
        } else {
            "About to delete"
        },
        removal.items.len(),
        human_bytes(removal.bytes)
    );
    for l in &removal.lines {
        text.push_str(&format!("  - {l}\n"));
    }
    if dry_run {
        text.push_str("Dry run: nothing was deleted.\n");
        return print_stdout(&text);
    }
    print_stdout(&text)?;
    if !confirm(yes)? {
        return print_stdout("Nothing deleted.\n");
    }
    let (_, refused) = execute(root, &removal)?;
    let mut done = format!("Deleted; freed about {}.\n", human_bytes(removal.bytes));
    if !refused.is_empty() {
        done.push_str(&format!(
            "Left alone {} entr(y/ies) that are not what the cache's layout puts there:\n",
            refused.len()
        ));
        for r in &refused {
            done.push_str(&format!("  - {r}\n"));
        }
    }
    print_stdout(&done)
}

/// Removes every revision of the repository folder `folder` except `keep` (with the blobs
/// only they use, and their refs), through the same safe removal as `cache rm`; returns what
/// went, one line each.
pub(crate) fn remove_other_revisions(
    root: &Path,
    folder: &str,
    keep: &str,
) -> Result<Vec<String>, HostError> {
    let scan = scan_or_explain(root)?;
    let Some(repo) = scan.repos.iter().find(|r| r.folder == folder) else {
        return Ok(Vec::new());
    };
    let doomed: BTreeSet<String> = repo
        .revisions
        .iter()
        .map(|r| r.commit.clone())
        .filter(|c| c != keep)
        .collect();
    if doomed.is_empty() {
        return Ok(Vec::new());
    }
    let mut removal = Removal::default();
    plan_repo_removal(&SharedBlobs::new(root), repo, &doomed, &mut removal);
    execute(root, &removal)?;
    Ok(removal.items)
}

fn prune(root: &Path, args: &RemovalArgs) -> Result<(), HostError> {
    let scan = scan_or_explain(root)?;
    let shared = SharedBlobs::new(root);
    let mut removal = Removal::default();
    // Detached revisions: no ref points at them.
    for repo in &scan.repos {
        let detached: BTreeSet<String> = repo
            .revisions
            .iter()
            .filter(|r| r.refs.is_empty())
            .map(|r| r.commit.clone())
            .collect();
        if !detached.is_empty() {
            plan_repo_removal(&shared, repo, &detached, &mut removal);
        }
    }
    // Stale partial downloads: not locked by a running download.
    for (file, size) in &scan.incomplete {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        let etag = name
            .as_deref()
            .and_then(|n| n.split('.').next())
            .unwrap_or("");
        let folder = file
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock = root
            .join(".locks")
            .join(&folder)
            .join(format!("{etag}.lock"));
        let in_use =
            lock.exists() && matches!(crate::store::lock::try_lock(&lock), Ok(None) | Err(_));
        if in_use {
            log::warn!("{} is being downloaded; kept", file.display());
            continue;
        }
        removal.item(format!("incomplete {}", file.display()));
        removal
            .incomplete
            .push((folder, name.unwrap_or_default(), lock));
        removal.bytes += size;
    }
    // Shared store entries no repo links to any more.
    for entry in shared.entries() {
        if shared.live_references(&entry).is_some_and(|r| r.is_empty()) {
            removal.bytes += std::fs::metadata(&entry).map_or(0, |m| m.len());
            removal.item(format!("unreferenced shared blob {}", entry.display()));
            removal.shared.insert(entry);
        }
    }
    finish(root, removal, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_sizes_and_ages_parse() {
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("2KiB"), Some(2048));
        assert_eq!(parse_size("10M"), Some(10_000_000));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_age("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("7"), None);
        assert!(Filter::parse("type=kernel").is_ok());
        assert!(Filter::parse("colour=red").is_err());
    }

    #[test]
    fn filters_read_field_operator_value() {
        let day = Duration::from_secs(86_400);
        let parsed = |e: &str| Filter::parse(e).unwrap();
        assert!(matches!(
            parsed("type = dataset"),
            Filter::Type(RepoType::DATASET)
        ));
        assert!(matches!(parsed("name~BERT>2"), Filter::Name(n) if n == "bert>2"));
        assert!(matches!(
            parsed("size>1GB"),
            Filter::SizeAbove(1_000_000_000)
        ));
        assert!(matches!(parsed("size<2KiB"), Filter::SizeBelow(2048)));
        assert!(matches!(parsed("modified>7d"), Filter::OlderThan(d) if d == 7 * day));
        assert!(matches!(parsed("modified<1d"), Filter::NewerThan(d) if d == day));
        for (bad, why) in [
            ("size", "unknown filter"),
            ("size=1GB", "unknown filter"),
            ("name>x", "unknown filter"),
            ("type=car", "unknown type"),
            ("size>lots", "bad size"),
            ("modified<soon", "bad age"),
        ] {
            let Err(e) = Filter::parse(bad) else {
                panic!("{bad} should not parse")
            };
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rm_targets_read_like_ls_ids_and_hf_addresses() {
        let t = |s: &str| parse_target(s, None).unwrap();
        assert_eq!(
            t("acme/tiny"),
            (Some(RepoType::MODEL), "acme/tiny".into(), None)
        );
        assert_eq!(
            t("dataset/acme/data@v1"),
            (
                Some(RepoType::DATASET),
                "acme/data".into(),
                Some("v1".into())
            )
        );
        assert_eq!(
            t("hf://kernels/acme/flash@main"),
            (
                Some(RepoType::KERNEL),
                "acme/flash".into(),
                Some("main".into())
            )
        );
        assert_eq!(
            parse_target("acme/s", Some("space")).unwrap().0,
            Some(RepoType::SPACE)
        );
    }
}
