//! `hubget add`, `remove`, `lock` and `sync`: a project's declared repositories
//! ([`crate::project`]) made into the same verified bytes on every machine.
//!
//! - `add`/`remove` edit `hubget.toml` and nothing else (no network).
//! - `lock` resolves each entry that has no pin, or whose pin was made for another revision or
//!   other patterns (or every entry, or one, with `--upgrade`), through the backends as a
//!   download does; existing pins stay.
//! - `sync` plans each pinned entry from the lock (commit and files, not the Hub's current
//!   state) and runs the normal engine: backends, fallback, verification, resume, the shared
//!   blob store. An entry whose files are all in place costs no request at all. Before
//!   fetching, the pin is checked against the Hub (the commit must still exist and serve the
//!   same files), unless `--frozen`, which asks nothing of the Hub's API and lets the backends
//!   fetch by commit and hash (a bucket or a mirror alone can serve a fleet). `--to` uploads
//!   exactly the locked files (as `hubget export`), `--prune` removes the cached revisions of
//!   the manifest's repositories that the lock does not name (as `hubget cache rm`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use hubget_plugin_api::{CancelToken, ErrorKind};

use crate::cli::{AddArgs, LockArgs, ManifestArg, RemoveArgs, SyncArgs};
use crate::commands::download::{engine_options, human_bytes, resolve_timeout};
use crate::commands::{open_transports, print_stdout};
use crate::error::HostError;
use crate::output::{Output, Reporter};
use crate::plan::{FileStatus, Plan, PlanRequest, build_plan, resolve, select};
use crate::project::lock::{self, Lock, LockedFile, LockedRepo};
use crate::project::manifest::{self, Entry, Manifest, parse_name};
use crate::settings::{Env, Settings};
use crate::store::Target;
use crate::store::shared::SharedBlobs;
use crate::transport::Transport;
use crate::verify::{Expected, verify_file};

/// The manifest `--manifest` names, or the one found from the current directory up.
fn manifest_path(arg: &ManifestArg, must_exist: bool) -> Result<PathBuf, HostError> {
    if let Some(p) = &arg.manifest {
        return Ok(p.clone());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| HostError::io("cannot read the current directory", e))?;
    match manifest::find(&cwd) {
        Some(p) => Ok(p),
        None if must_exist => Err(HostError::Usage(format!(
            "no {} in {} or above (create one with `hubget add REPO`, or pass --manifest)",
            manifest::FILE_NAME,
            cwd.display()
        ))),
        None => Ok(cwd.join(manifest::FILE_NAME)),
    }
}

/// An entry name from the command line, with `--repo-type` for a name without a prefix.
fn entry_name(repo: &str, repo_type: Option<&str>) -> Result<(String, Entry), HostError> {
    let (mut name, mut kind, id) = parse_name(repo)?;
    if let Some(t) = repo_type {
        let t = hubget_plugin_api::RepoType::parse(t)
            .ok_or_else(|| HostError::Usage(format!("unknown repository type `{t}`")))?;
        if name != id && t != kind {
            return Err(HostError::Usage(format!(
                "`{repo}` names a {kind}, --repo-type says {t}"
            )));
        }
        kind = t;
        name = manifest::name_of(kind, &id);
    }
    let entry = Entry {
        name: name.clone(),
        repo_type: kind,
        repo_id: id,
        revision: "main".to_owned(),
        include: Vec::new(),
        exclude: Vec::new(),
        local_dir: None,
    };
    Ok((name, entry))
}

/// Runs `hubget add`.
pub fn add(args: &AddArgs) -> Result<(), HostError> {
    let path = manifest_path(&args.manifest, false)?;
    let (name, mut entry) = entry_name(&args.repo, args.repo_type.as_deref())?;
    if let Some(r) = &args.revision {
        entry.revision = r.clone();
    }
    entry.include = args.include.clone();
    entry.exclude = args.exclude.clone();
    entry.local_dir = args.local_dir.clone();
    manifest::add(&path, &entry)?;
    print_stdout(&format!(
        "{name} @ {} in {} (run `hubget lock` to pin it)\n",
        entry.revision,
        path.display()
    ))
}

/// Runs `hubget remove`.
pub fn remove(args: &RemoveArgs) -> Result<(), HostError> {
    let path = manifest_path(&args.manifest, true)?;
    let (name, _) = entry_name(&args.repo, args.repo_type.as_deref())?;
    if !manifest::remove(&path, &name)? {
        return Err(HostError::NotFound(format!(
            "{} has no entry {name}",
            path.display()
        )));
    }
    print_stdout(&format!("removed {name} from {}\n", path.display()))
}

/// Which pins `lock` moves even when they match their entry.
enum Upgrade {
    None,
    All,
    One(String),
}

impl Upgrade {
    fn covers(&self, entry: &Entry) -> bool {
        match self {
            Upgrade::None => false,
            Upgrade::All => true,
            Upgrade::One(name) => *name == entry.name,
        }
    }
}

/// Pins every entry of `manifest`: kept from `old` when it still matches (and is not to be
/// upgraded), else resolved now. Returns the new lock and the names it (re)pinned.
async fn relock(
    settings: &Settings,
    backends: &[Arc<dyn Transport>],
    manifest: &Manifest,
    old: &Lock,
    upgrade: &Upgrade,
) -> Result<(Lock, Vec<String>), HostError> {
    let mut lock = Lock::default();
    let mut moved = Vec::new();
    for entry in &manifest.entries {
        if let Some(pin) = old.get(&entry.name)
            && pin.matches(entry)
            && !upgrade.covers(entry)
        {
            lock.repos.push(pin.clone());
            continue;
        }
        let req = PlanRequest {
            repo_type: entry.repo_type,
            repo_id: entry.repo_id.clone(),
            revision: entry.revision.clone(),
            include: entry.include.clone(),
            exclude: entry.exclude.clone(),
            ..PlanRequest::default()
        };
        let (resolved, _) = resolve(
            backends,
            &req,
            &CancelToken::new(),
            resolve_timeout(settings),
        )
        .await
        .map_err(|e| entry_error(manifest, entry, &e.to_string()))?;
        let files: Vec<_> = resolved.files.iter().cloned().collect();
        let selection = select(&files, &req);
        for w in &selection.warnings {
            log::warn!("{}: {w}", entry.name);
        }
        lock.repos.push(LockedRepo {
            name: entry.name.clone(),
            revision: entry.revision.clone(),
            include: entry.include.clone(),
            exclude: entry.exclude.clone(),
            commit: resolved.commit.to_string(),
            files: selection
                .selected
                .iter()
                .map(|&i| LockedFile::of(&files[i]))
                .collect(),
        });
        moved.push(entry.name.clone());
    }
    Ok((lock, moved))
}

fn entry_error(manifest: &Manifest, entry: &Entry, message: &str) -> HostError {
    HostError::Project {
        path: manifest.path.clone(),
        message: format!("[repos.\"{}\"]: {message}", entry.name),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, HostError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hubget")
        .build()
        .map_err(|e| HostError::io("cannot start the async runtime", e))
}

fn lock_path(manifest: &Manifest) -> PathBuf {
    manifest.dir().join(lock::FILE_NAME)
}

/// Runs `hubget lock`.
pub fn lock(env: &Env, config: Option<PathBuf>, args: &LockArgs) -> Result<(), HostError> {
    let settings = Settings::load(&args.settings.overrides(config), env)?;
    crate::commands::register_token(&settings);
    let manifest = Manifest::load(&manifest_path(&args.manifest, true)?)?;
    let path = lock_path(&manifest);
    let old = Lock::load(&path)?.unwrap_or_default();
    let upgrade = match args.upgrade.as_deref() {
        None => Upgrade::None,
        Some("") => Upgrade::All,
        Some(repo) => Upgrade::One(entry_name(repo, None)?.0),
    };
    let rt = runtime()?;
    let result = rt.block_on(async {
        let backends = open_transports(&settings)?;
        relock(&settings, &backends, &manifest, &old, &upgrade).await
    });
    rt.shutdown_background();
    let (mut new, moved) = result?;
    new.save(&path)?;
    let mut text = String::new();
    for r in &new.repos {
        let was = old.get(&r.name).map(|p| p.commit.as_str());
        let note = match was {
            Some(c) if c == r.commit => "unchanged".to_owned(),
            Some(c) => format!("was {}", &c[..12.min(c.len())]),
            None => "new".to_owned(),
        };
        if moved.contains(&r.name) || was.is_none() {
            text.push_str(&format!(
                "{} @ {} -> {} ({} files, {note})\n",
                r.name,
                r.revision,
                r.commit,
                r.files.len()
            ));
        }
    }
    text.push_str(&format!(
        "{}: {} entr(y/ies), {} resolved now\n",
        path.display(),
        new.repos.len(),
        moved.len()
    ));
    print_stdout(&text)
}

/// The entries whose pin is missing or was made for something else, and pins of entries the
/// manifest no longer has.
fn stale(manifest: &Manifest, lock: Option<&Lock>) -> Vec<String> {
    let mut out: Vec<String> = manifest
        .entries
        .iter()
        .filter(|e| {
            !lock
                .and_then(|l| l.get(&e.name))
                .is_some_and(|p| p.matches(e))
        })
        .map(|e| e.name.clone())
        .collect();
    if let Some(l) = lock {
        let names: BTreeSet<&str> = manifest.entries.iter().map(|e| e.name.as_str()).collect();
        out.extend(
            l.repos
                .iter()
                .filter(|r| !names.contains(r.name.as_str()))
                .map(|r| format!("{} (no longer in the manifest)", r.name)),
        );
    }
    out
}

/// Where an entry syncs to: its `local_dir`, else (or when the sync also uploads, which reads
/// the cache) the Hugging Face cache.
fn target_of(settings: &Settings, manifest: &Manifest, entry: &Entry, to_cache: bool) -> Target {
    let target = match &entry.local_dir {
        Some(dir) if !to_cache => Target::local_dir(&manifest.dir().join(dir)),
        _ => Target::cache(&settings.cache_dir.value, entry.repo_type, &entry.repo_id),
    };
    let shared = settings
        .shared_blobs
        .value
        .then(|| SharedBlobs::new(&settings.cache_dir.value));
    target.with_shared_blobs(shared)
}

/// The plan of a pin: its files at its commit, as the target holds them.
fn plan_of(pin: &LockedRepo, entry: &Entry, target: &Target) -> Result<Plan, HostError> {
    let req = PlanRequest {
        repo_type: entry.repo_type,
        repo_id: entry.repo_id.clone(),
        revision: pin.revision.clone(),
        ..PlanRequest::default()
    };
    build_plan(pin.manifest(), "lock", &req, target)
}

/// What `--check` finds wrong with one entry: missing and different files, and cached
/// revisions the lock does not name.
fn check_entry(pin: &LockedRepo, plan: &Plan, target: &Target) -> Vec<String> {
    let mut out = Vec::new();
    for f in &plan.files {
        let path = &f.file.path;
        match f.status {
            FileStatus::Complete => {
                let Ok(on_disk) = target.final_path(&f.file, &pin.commit) else {
                    continue;
                };
                if let Err(e) = verify_file(&on_disk, &Expected::for_file(&f.file)) {
                    out.push(format!("different  {}: {path} ({e})", pin.name));
                }
            }
            _ => out.push(format!("missing    {}: {path}", pin.name)),
        }
    }
    if let Target::Cache(c) = target
        && let Ok(dir) = std::fs::read_dir(c.root.join("snapshots"))
    {
        let mut extra: Vec<String> = dir
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|commit| *commit != pin.commit)
            .collect();
        extra.sort();
        for commit in extra {
            out.push(format!(
                "extra      {}: revision {commit} (not in the lock)",
                pin.name
            ));
        }
    }
    out
}

/// Checks a pin against what the Hub serves at its commit: the commit must still exist and
/// every locked file must be there with the same size and hashes.
async fn confirm_pin(
    settings: &Settings,
    backends: &[Arc<dyn Transport>],
    manifest: &Manifest,
    entry: &Entry,
    pin: &LockedRepo,
) -> Result<(), HostError> {
    let req = PlanRequest {
        repo_type: entry.repo_type,
        repo_id: entry.repo_id.clone(),
        revision: pin.commit.clone(),
        ..PlanRequest::default()
    };
    let resolved = resolve(
        backends,
        &req,
        &CancelToken::new(),
        resolve_timeout(settings),
    )
    .await;
    let remote = match resolved {
        Ok((m, _)) => m,
        Err(e) if e.exit_code() == crate::error::exit_code_for_kind(ErrorKind::NOT_FOUND) => {
            return Err(entry_error(
                manifest,
                entry,
                &format!(
                    "the pinned commit {} is gone from the Hub (force-pushed away?); nothing was \
                     re-resolved: run `hubget lock --upgrade {}` to pin what {} is now ({e})",
                    pin.commit, entry.name, entry.revision
                ),
            ));
        }
        Err(e) => return Err(e),
    };
    for f in &pin.files {
        let theirs = remote
            .files
            .iter()
            .find(|r| r.path.as_str() == f.path)
            .map(LockedFile::of);
        let same = theirs
            .as_ref()
            .is_some_and(|t| t.size == f.size && t.git_oid == f.git_oid && t.sha256 == f.sha256);
        if !same {
            return Err(entry_error(
                manifest,
                entry,
                &format!(
                    "{} at the pinned commit {} is not what the lock says ({}); nothing was \
                     fetched",
                    f.path,
                    pin.commit,
                    match theirs {
                        Some(t) => format!("the Hub has {} bytes, git {}", t.size, t.git_oid),
                        None => "the Hub has no such file".to_owned(),
                    }
                ),
            ));
        }
    }
    Ok(())
}

/// Runs `hubget sync`.
pub fn sync(env: &Env, config: Option<PathBuf>, args: &SyncArgs) -> Result<(), HostError> {
    let mut settings = Settings::load(&args.settings.overrides(config), env)?;
    crate::commands::register_token(&settings);
    let manifest = Manifest::load(&manifest_path(&args.manifest, true)?)?;
    // Isolated plugins may write where the entries' partial files go.
    settings.plugin_write_dirs = manifest
        .entries
        .iter()
        .map(|e| target_of(&settings, &manifest, e, args.to.is_some()).partial_dir())
        .collect();
    let path = lock_path(&manifest);
    let lock = Lock::load(&path)?;
    let out_of_date = stale(&manifest, lock.as_ref());
    let bars = !args.quiet
        && !args.dry_run
        && !args.check
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
        && !env.is_true("HF_HUB_DISABLE_PROGRESS_BARS");
    let output = Arc::new(Output::new(args.json, bars));
    let rt = runtime()?;
    let result = rt.block_on(async {
        let mut backends: Option<Vec<Arc<dyn Transport>>> = None;
        let mut open = |settings: &Settings| -> Result<Vec<Arc<dyn Transport>>, HostError> {
            if backends.is_none() {
                backends = Some(open_transports(settings)?);
            }
            Ok(backends.clone().unwrap_or_default())
        };
        let lock = if out_of_date.is_empty() {
            lock.unwrap_or_default()
        } else if args.locked || args.frozen || args.check {
            return Err(HostError::Project {
                path: path.clone(),
                message: format!(
                    "out of date with {}: {} (run `hubget lock`)",
                    manifest.path.display(),
                    out_of_date.join(", ")
                ),
            });
        } else {
            let old = lock.unwrap_or_default();
            let (mut new, _) = relock(
                &settings,
                &open(&settings)?,
                &manifest,
                &old,
                &Upgrade::None,
            )
            .await?;
            new.save(&path)?;
            new
        };
        sync_entries(&settings, &manifest, &lock, args, &output, &mut open).await
    });
    rt.shutdown_background();
    output.clear();
    let text = result?;
    print_stdout(&text)
}

/// Opens the backends the first time a sync needs them (a sync with nothing to fetch opens
/// none).
type OpenBackends<'a> = dyn FnMut(&Settings) -> Result<Vec<Arc<dyn Transport>>, HostError> + 'a;

/// Syncs (or checks, or plans) every pinned entry; returns the report.
async fn sync_entries(
    settings: &Settings,
    manifest: &Manifest,
    lock: &Lock,
    args: &SyncArgs,
    output: &Arc<Output>,
    open: &mut OpenBackends<'_>,
) -> Result<String, HostError> {
    let mut text = String::new();
    let mut problems = Vec::new();
    let (mut moved, mut fetched_files) = (0u64, 0usize);
    for entry in &manifest.entries {
        let pin = lock.get(&entry.name).expect("the lock is up to date");
        let target = target_of(settings, manifest, entry, args.to.is_some());
        let plan = plan_of(pin, entry, &target)?;
        if args.check {
            problems.extend(check_entry(pin, &plan, &target));
            continue;
        }
        let to_fetch: Vec<_> = plan
            .files
            .iter()
            .filter(|f| f.status != FileStatus::Complete)
            .collect();
        if args.dry_run {
            text.push_str(&format!(
                "{} @ {}: {} file(s), {} of {} to fetch\n",
                entry.name,
                pin.commit,
                to_fetch.len(),
                human_bytes(plan.remaining_bytes()),
                human_bytes(plan.total_bytes())
            ));
            continue;
        }
        if !to_fetch.is_empty() {
            let backends = open(settings)?;
            if !args.frozen {
                confirm_pin(settings, &backends, manifest, entry, pin).await?;
            }
            if let Target::Cache(c) = &target {
                let _ = std::fs::create_dir_all(c.snapshot_dir(&pin.commit));
            }
            let opts = engine_options(settings, false);
            let reporter: Arc<dyn Reporter> = output.clone();
            let summary = crate::engine::run(
                &plan,
                &target,
                &backends,
                &opts,
                reporter,
                CancelToken::new(),
            )
            .await;
            if let Some(e) = summary.error() {
                return Err(entry_error(manifest, entry, &e.to_string()));
            }
            moved += summary.bytes_transferred();
            fetched_files += to_fetch.len();
        }
        if let Err(e) = target.write_ref(&pin.revision, &pin.commit) {
            log::warn!("{}: cannot write refs/{}: {e}", entry.name, pin.revision);
        }
        if let Some(to) = &args.to {
            let (url, uploads) =
                crate::commands::export::upload(settings, &plan, &target, to, output).await?;
            let sent: u64 = uploads.iter().map(|u| u.bytes_transferred).sum();
            text.push_str(&format!(
                "{} @ {}: exported to {url} ({} sent)\n",
                entry.name,
                pin.commit,
                human_bytes(sent)
            ));
        }
        if args.prune
            && let Target::Cache(c) = &target
        {
            for line in crate::commands::cache::remove_other_revisions(
                &settings.cache_dir.value,
                &c.folder,
                &pin.commit,
            )? {
                text.push_str(&format!("pruned {line}\n"));
            }
        }
        text.push_str(&format!(
            "{} @ {}: {} file(s) in place{}\n",
            entry.name,
            pin.commit,
            plan.files.len(),
            if to_fetch.is_empty() {
                String::new()
            } else {
                format!(", {} fetched", to_fetch.len())
            }
        ));
    }
    if args.check {
        if problems.is_empty() {
            text.push_str(&format!(
                "OK: the target holds exactly what {} pins\n",
                lock_display(manifest)
            ));
            return Ok(text);
        }
        let mut listing = problems.join("\n");
        listing.push('\n');
        print_stdout(&listing)?;
        return Err(HostError::Drift {
            what: lock_display(manifest),
            count: problems.len(),
        });
    }
    if !args.dry_run {
        text.push_str(&format!(
            "synced {} entr(y/ies): {fetched_files} file(s) fetched, {} moved\n",
            manifest.entries.len(),
            human_bytes(moved)
        ));
    }
    Ok(text)
}

fn lock_display(manifest: &Manifest) -> String {
    lock_path(manifest).display().to_string()
}
