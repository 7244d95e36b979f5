//! `hubget download`: plan (resolve with the backends in order, select, validate, skip what is
//! complete), then the engine fetches, verifies and installs; the output module reports it.
//! Offline mode (`--offline`, `HF_HUB_OFFLINE=1`) plans from the cache alone and never calls a
//! backend. The last line of stdout is the local path (the snapshot folder or local dir, or the
//! file when exactly one file was asked for); `--json` prints NDJSON events instead.
//!
//! A full disk is exit 7 and loses nothing: before any transfer the bytes still to fetch are
//! compared with the free space of the target filesystem (`--dry-run` reports a shortfall as a
//! warning); during the run, the first failure reporting "no space left on device" (a backend's
//! write, or the host's own prepare/install) stops the run like Ctrl-C does, so no other
//! backend or retry is tried, and partial files keep their verified checkpoints for the next run.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hubget_plugin_api::{CancelToken, Features};

use crate::cli::{DownloadArgs, RepoSpec};
use crate::commands::open_transports;
use crate::engine::{EngineOptions, Summary};
use crate::error::HostError;
use crate::output::{Event, Output, PlanFile, Reporter};
use crate::plan::{FileStatus, Plan, PlanRequest, offline_plan, resolve_plan};
use crate::redact::redact;
use crate::retry::RetryPolicy;
use crate::settings::{Env, Settings};
use crate::store::Target;
use crate::store::shared::SharedBlobs;
use crate::store::space;
use crate::transport::Transport;

/// Runs `hubget download`.
pub fn run(env: &Env, config: Option<PathBuf>, args: &DownloadArgs) -> Result<(), HostError> {
    run_then_export(env, config, args, None)
}

/// A download, then (with `export_to`) `hubget export`'s upload of what it planned: one
/// settings resolution, one runtime, one output stream for both.
pub fn run_then_export(
    env: &Env,
    config: Option<PathBuf>,
    args: &DownloadArgs,
    export_to: Option<&str>,
) -> Result<(), HostError> {
    execute(env, config, args, export_to, true)
}

/// A download for `hubget cache verify --repair`: the same run, without the final path line
/// on stdout (the verification report follows).
pub fn run_for_repair(
    env: &Env,
    config: Option<PathBuf>,
    args: &DownloadArgs,
) -> Result<(), HostError> {
    execute(env, config, args, None, false)
}

fn execute(
    env: &Env,
    config: Option<PathBuf>,
    args: &DownloadArgs,
    export_to: Option<&str>,
    print_path: bool,
) -> Result<(), HostError> {
    let started = Instant::now();
    let prepared = Settings::load(&args.settings.overrides(config), env).and_then(|settings| {
        let spec = RepoSpec::parse(
            &args.repo_id,
            &args.files,
            args.repo_type.as_deref(),
            args.revision.as_deref(),
        )?;
        Ok((settings, spec))
    });
    let (settings, spec) = match prepared {
        Ok(v) => v,
        Err(e) => {
            // `--json` consumers still get an `error` and a final `done`.
            let output = Output::new(args.json, false);
            emit_failure(&output, &e, None, started);
            return Err(e);
        }
    };
    if args.resume_download {
        log::warn!("--resume-download is deprecated and ignored: hubget always resumes");
    }
    if args.local_dir_use_symlinks.is_some() {
        log::warn!("--local-dir-use-symlinks is deprecated and ignored");
    }
    let bars = !args.quiet
        && !args.dry_run
        && std::io::stderr().is_terminal()
        && !env.is_true("HF_HUB_DISABLE_PROGRESS_BARS");
    let output = Arc::new(Output::new(args.json, bars));
    let token = settings.token.value.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hubget")
        .build()
        .map_err(|e| HostError::io("cannot start the async runtime", e))?;
    let result = runtime.block_on(async {
        let outcome = download(&settings, &spec, args, Arc::clone(&output)).await?;
        match (export_to, &outcome.plan) {
            (Some(to), Some(plan)) => {
                crate::commands::export::upload(&settings, plan, &outcome.target, to, &output)
                    .await
                    .map(|(url, _uploads)| Outcome {
                        path: Some(PathBuf::from(url)),
                        ..outcome
                    })
                    .map_err(|e| (e, None))
            }
            _ => Ok(outcome),
        }
    });
    // Abandoned backend calls run on their own threads; do not wait for anything.
    runtime.shutdown_background();
    let result = result.map_err(|e| redact_error(e, token.as_deref()));
    output.clear();
    match result {
        Ok(Outcome { path, summary, .. }) => {
            output.emit(Event::Done {
                exit_code: 0,
                files_done: summary.done.len(),
                files_failed: 0,
                bytes: summary.done.iter().map(|d| d.bytes).sum(),
                bytes_transferred: summary.bytes_transferred(),
                files_reused: summary.reused().0,
                bytes_reused: summary.reused().1,
                bytes_local: summary.local_bytes(),
                secs: started.elapsed().as_secs_f64(),
                path: path.as_ref().map(|p| p.display().to_string()),
            });
            print_reuse_line(&output, &summary, args.quiet);
            if let Some(p) = path.as_ref().filter(|_| !args.dry_run && print_path) {
                output.print_path(p);
            }
            Ok(())
        }
        Err((e, summary)) => {
            emit_failure(&output, &e, summary.as_ref(), started);
            Err(e)
        }
    }
}

/// The `error` and `done` events of a failed run.
fn emit_failure(output: &Output, e: &HostError, summary: Option<&Summary>, started: Instant) {
    output.emit(Event::Error {
        path: None,
        kind: error_kind(e).to_owned(),
        message: e.to_string(),
        hint: e.hint(),
    });
    output.emit(Event::Done {
        exit_code: e.exit_code(),
        files_done: summary.map_or(0, |s| s.done.len()),
        files_failed: summary.map_or(0, |s| s.failed.len()),
        bytes: summary.map_or(0, |s| s.done.iter().map(|d| d.bytes).sum()),
        bytes_transferred: summary.map_or(0, Summary::bytes_transferred),
        files_reused: summary.map_or(0, |s| s.reused().0),
        bytes_reused: summary.map_or(0, |s| s.reused().1),
        bytes_local: summary.map_or(0, Summary::local_bytes),
        secs: started.elapsed().as_secs_f64(),
        path: None,
    });
}

/// The summary lines on stderr when reuse saved downloads:
/// `2 files reused, 1.5 GiB not downloaded (shared blob store)` and
/// `700 MiB taken from chunks already on disk, not downloaded`.
fn print_reuse_line(output: &Output, summary: &Summary, quiet: bool) {
    if quiet || output.is_json() {
        return;
    }
    let (files, bytes) = summary.reused();
    let local = summary.local_bytes();
    let mut err = std::io::stderr().lock();
    if files > 0 {
        let s = if files == 1 { "" } else { "s" };
        let _ = writeln!(
            err,
            "{files} file{s} reused, {} not downloaded (shared blob store)",
            human_bytes(bytes)
        );
    }
    if local > 0 {
        let _ = writeln!(
            err,
            "{} taken from chunks already on disk, not downloaded",
            human_bytes(local)
        );
    }
}

struct Outcome {
    path: Option<PathBuf>,
    summary: Summary,
    /// The plan of the download (none for a dry run).
    plan: Option<Plan>,
    target: Target,
}

type Failure = (HostError, Option<Summary>);

fn error_kind(e: &HostError) -> &'static str {
    match e.exit_code() {
        crate::error::EXIT_USAGE => "usage",
        crate::error::EXIT_NOT_FOUND => "not-found",
        crate::error::EXIT_AUTH => "auth",
        crate::error::EXIT_INTEGRITY => "integrity",
        crate::error::EXIT_OFFLINE_MISS => "offline-miss",
        crate::error::EXIT_INTERRUPTED => "interrupted",
        crate::error::EXIT_DISK_FULL => "disk-full",
        _ => "error",
    }
}

/// The same error with every message passed through [`redact`].
fn redact_error((e, s): Failure, token: Option<&str>) -> Failure {
    let r = |t: String| redact(&t, token);
    let e = match e {
        HostError::NotFound(m) => HostError::NotFound(r(m)),
        HostError::Auth { message, hint } => HostError::Auth {
            message: r(message),
            hint: hint.map(r),
        },
        HostError::Integrity(m) => HostError::Integrity(r(m)),
        HostError::Other(m) => HostError::Other(r(m)),
        HostError::NoBackend(m) => HostError::NoBackend(r(m)),
        HostError::DiskFull { dir, message } => HostError::DiskFull {
            dir,
            message: r(message),
        },
        HostError::Backend {
            backend,
            operation,
            mut error,
        } => {
            error.message = r(error.message.to_string()).into();
            HostError::Backend {
                backend,
                operation,
                error,
            }
        }
        other => other,
    };
    (e, s)
}

fn plan_request(spec: &RepoSpec, args: &DownloadArgs) -> PlanRequest {
    PlanRequest {
        repo_type: spec.repo_type,
        repo_id: spec.repo_id.clone(),
        revision: spec.revision.clone(),
        files: spec.files.clone(),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        force: args.force_download,
    }
}

pub(crate) fn engine_options(settings: &Settings, force: bool) -> EngineOptions {
    EngineOptions {
        max_workers: settings.max_workers.value.max(1),
        stall_timeout: Duration::from_secs(settings.stall_timeout_secs.value.max(1)),
        lock_timeout: Duration::from_secs(settings.lock_timeout_secs.value),
        token: settings.token.value.clone(),
        force,
        retry: RetryPolicy {
            // A 429's wait (and a backend's announced rate-limit wait) up to the configured one.
            max_retry_after: Duration::from_secs(settings.max_rate_limit_wait_secs.value),
            ..RetryPolicy::default()
        },
        ..EngineOptions::default()
    }
}

/// How long a backend may take to resolve before the next one is asked: a guard against a
/// stuck plugin (ten stall timeouts; the plugins' own HTTP timeouts normally answer first).
pub(crate) fn resolve_timeout(settings: &Settings) -> Duration {
    // A resolve may wait out a rate-limit window (the Hub's api bucket) on top.
    Duration::from_secs(
        settings
            .stall_timeout_secs
            .value
            .max(1)
            .saturating_mul(10)
            .saturating_add(settings.max_rate_limit_wait_secs.value),
    )
}

/// Sets the token on Ctrl-C, telling the person what happens to their download; a second
/// Ctrl-C exits at once (partial files and their last checkpoints stay on disk either way).
fn watch_ctrl_c(stop: &CancelToken, output: Arc<Output>) {
    let stop = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            log::info!("interrupted by the user");
            output.notice(
                "Interrupted: stopping. Partial files are kept; run the same command again to \
                 resume where it stopped (Ctrl-C again to quit at once).",
            );
            stop.cancel();
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(i32::from(crate::error::EXIT_INTERRUPTED));
        }
    });
}

async fn download(
    settings: &Settings,
    spec: &RepoSpec,
    args: &DownloadArgs,
    output: Arc<Output>,
) -> Result<Outcome, Failure> {
    let target = match &args.local_dir {
        Some(dir) => Target::local_dir(dir),
        None => Target::cache(&settings.cache_dir.value, spec.repo_type, &spec.repo_id),
    };
    let shared = settings
        .shared_blobs
        .value
        .then(|| SharedBlobs::new(&settings.cache_dir.value));
    let target = target.with_shared_blobs(shared);
    let req = plan_request(spec, args);
    let stop = CancelToken::new();
    watch_ctrl_c(&stop, Arc::clone(&output));

    if settings.offline.value {
        let plan = offline_plan(&req, &target).map_err(|e| (e, None))?;
        for w in &plan.warnings {
            output.emit(Event::Warning { message: w.clone() });
        }
        let cache = ["cache".to_owned()];
        let first = vec![Some("cache".to_owned()); plan.files.len()];
        output.emit(plan_event(&plan, &cache, &first, args.dry_run));
        if args.dry_run {
            print_dry_run(&output, &plan, &cache, &first, None);
            return Ok(Outcome {
                path: None,
                summary: Summary::default(),
                plan: None,
                target,
            });
        }
        let mut summary = Summary::default();
        for pf in &plan.files {
            let local = target
                .final_path(&pf.file, &plan.commit)
                .map_err(|e| (HostError::Other(e.to_string()), None))?;
            let mut report = crate::engine::cached_report(&pf.file, local);
            report.sha256 = String::new();
            output.emit(report.event(str::to_owned));
            summary.done.push(report);
        }
        let path = result_path(&plan, &target, spec).map_err(|e| (e, None))?;
        return Ok(Outcome {
            path: Some(path),
            summary,
            plan: Some(plan),
            target,
        });
    }

    // Isolated plugins may write where this target's partial files go, and nowhere else; the
    // sandbox needs the directory to exist (made now, removed again if the run leaves it
    // empty, so a mistyped repo leaves no folder behind).
    let mut settings = settings.clone();
    let partial_dir = target.partial_dir();
    let _made = MadeDirs::create(&partial_dir);
    settings.plugin_write_dirs = vec![partial_dir];
    let settings = &settings;
    let backends = open_transports(settings).map_err(|e| (e, None))?;
    let names: Vec<String> = backends.iter().map(|b| b.name().to_owned()).collect();
    if settings.limit_rate.value > 0 {
        let ignoring: Vec<&str> = backends
            .iter()
            .filter(|b| {
                // Backends that fetch anything (an unconfigured mirror does not).
                let f = b.capabilities().features;
                (f.contains(Features::XET) || f.contains(Features::NON_XET_FILES))
                    && !f.contains(Features::RATE_LIMIT)
            })
            .map(|b| b.name())
            .collect();
        if !ignoring.is_empty() {
            output.emit(Event::Warning {
                message: format!(
                    "--limit-rate is not honoured by backend{} {}: what {} download is not capped",
                    if ignoring.len() == 1 { "" } else { "s" },
                    ignoring.join(", "),
                    if ignoring.len() == 1 { "it" } else { "they" }
                ),
            });
        }
    }

    let plan = tokio::select! {
        p = resolve_plan(&backends, &req, &target, &stop, resolve_timeout(settings)) => p.map_err(|e| (e, None))?,
        _ = wait_cancelled(&stop) => return Err((HostError::Interrupted, None)),
    };
    // Xet hashes the Hub itself listed name shared-store entries as they are; those of another
    // source (a bucket, a mirror) are proven against the content before they name one.
    let target = if resolved_through_the_hub(&plan, &backends, settings) {
        target.trusting_shared_names()
    } else {
        target
    };
    for w in &plan.warnings {
        log::warn!("{w}");
        output.emit(Event::Warning { message: w.clone() });
    }
    if plan.files.is_empty() && plan.missing.is_empty() {
        let message = format!(
            "no file of {} {} at {} matches the --include/--exclude filters",
            plan.repo_type, plan.repo_id, plan.revision
        );
        log::warn!("{message}");
        output.emit(Event::Warning { message });
    }
    if !plan.missing.is_empty() {
        for m in &plan.missing {
            if let Err(e) = target.mark_missing(&plan.commit, m) {
                log::debug!("cannot write the .no_exist marker for {m}: {e}");
            }
        }
        // A folder named without its `/` is a file name (as in `hf download`); say so when the
        // repository has a folder of that name.
        let folders: Vec<String> = plan
            .missing
            .iter()
            .filter(|m| {
                let prefix = format!("{}/", m.trim_end_matches('/'));
                plan.manifest_files
                    .iter()
                    .any(|f| f.path.as_str().starts_with(&prefix))
            })
            .map(|m| {
                let repo = crate::project::manifest::name_of(plan.repo_type, &plan.repo_id);
                format!("`{m}` is a folder: ask for `{m}/` (hf://{repo}/{m}/)")
            })
            .collect();
        let mut message = format!(
            "{} {} at {} ({}) has no file {}",
            plan.repo_type,
            plan.repo_id,
            plan.revision,
            plan.commit,
            plan.missing.join(", ")
        );
        if !folders.is_empty() {
            message.push_str(&format!("; {}", folders.join("; ")));
        }
        return Err((HostError::NotFound(message), None));
    }
    let first = first_backends(&plan, &backends);
    output.emit(plan_event(&plan, &names, &first, args.dry_run));
    // Before anything is written or fetched: does what is left fit on the target filesystem?
    let space_line = match preflight(&plan, &target) {
        Ok(line) => line,
        Err(e) if args.dry_run => {
            let message = format!("{e} (the download would stop before fetching anything)");
            log::warn!("{message}");
            output.emit(Event::Warning {
                message: message.clone(),
            });
            Some(message)
        }
        Err(e) => return Err((e, None)),
    };
    if args.dry_run {
        print_dry_run(&output, &plan, &names, &first, space_line.as_deref());
        return Ok(Outcome {
            path: None,
            summary: Summary::default(),
            plan: None,
            target,
        });
    }
    if let Err(e) = target.write_ref(&plan.revision, &plan.commit) {
        log::warn!("cannot write refs/{}: {e}", plan.revision);
    }
    if let Target::Cache(c) = &target {
        let _ = std::fs::create_dir_all(c.snapshot_dir(&plan.commit));
    }
    let opts = engine_options(settings, args.force_download);
    let watch = Arc::new(DiskWatch {
        inner: Arc::clone(&output),
        stop: stop.clone(),
        first: Mutex::new(None),
    });
    let reporter: Arc<dyn Reporter> = watch.clone();
    let summary = crate::engine::run(&plan, &target, &backends, &opts, reporter, stop).await;
    if let Some(what) = watch.first.lock().expect("disk watch").take() {
        let dir = target.space_dir().to_path_buf();
        let message = format!(
            "disk full: no space left in {} ({what}); the download stopped, partial files are \
             kept for resume",
            dir.display()
        );
        return Err((HostError::DiskFull { dir, message }, Some(summary)));
    }
    if let Some(e) = summary.error() {
        return Err((e, Some(summary)));
    }
    let path = result_path(&plan, &target, spec).map_err(|e| (e, None))?;
    Ok(Outcome {
        path: Some(path),
        summary,
        plan: Some(plan),
        target,
    })
}

/// The free-space preflight: `Err` (a [`HostError::DiskFull`]) when the bytes still to fetch do
/// not fit on the target filesystem; `Ok(Some(line))` describes the check for `--dry-run`;
/// `Ok(None)` when nothing is left to fetch or the free space cannot be measured.
fn preflight(plan: &Plan, target: &Target) -> Result<Option<String>, HostError> {
    // In the cache, files with the same content share one blob and are fetched once.
    let shared_blobs = matches!(target, Target::Cache(_));
    let mut seen = std::collections::HashSet::new();
    let needed: u64 = plan
        .files
        .iter()
        .filter(|f| {
            !shared_blobs || crate::store::etag_of(&f.file).map_or(true, |e| seen.insert(e))
        })
        .map(crate::plan::PlannedFile::remaining)
        .fold(0u64, u64::saturating_add);
    let dir = target.space_dir();
    if needed == 0 {
        return Ok(None);
    }
    let free = match space::available_space(dir) {
        Ok((_, free)) => free,
        Err(e) => {
            log::debug!("cannot measure the free space of {}: {e}", dir.display());
            return Ok(None);
        }
    };
    if needed > free {
        return Err(HostError::DiskFull {
            dir: dir.to_path_buf(),
            message: format!(
                "not enough free space in {}: {} still to fetch, {} free",
                dir.display(),
                human_bytes(needed),
                human_bytes(free)
            ),
        });
    }
    Ok(Some(format!(
        "free space in {}: {} ({} to fetch)",
        dir.display(),
        human_bytes(free),
        human_bytes(needed)
    )))
}

/// Forwards the engine's events and watches their errors for a full disk: the first one stops
/// the run (the engine then cancels running calls, saves their checkpoints and starts nothing
/// new, so the file is not handed to every other backend and retry), and is remembered for the
/// final disk-full error.
struct DiskWatch {
    inner: Arc<Output>,
    stop: CancelToken,
    first: Mutex<Option<String>>,
}

impl Reporter for DiskWatch {
    fn emit(&self, event: Event) {
        let failure = match &event {
            Event::Retry { path, error, .. } | Event::Fallback { path, error, .. } => {
                Some((Some(path), &error.message))
            }
            Event::Error { path, message, .. } => Some((path.as_ref(), message)),
            _ => None,
        };
        if let Some((path, message)) = failure
            && space::is_disk_full_message(message)
        {
            let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                let what = match path {
                    Some(p) if !message.starts_with(p.as_str()) => format!("{p}: {message}"),
                    _ => message.clone(),
                };
                log::warn!("disk full ({what}); stopping, partial files are kept for resume");
                *first = Some(what);
            }
            self.stop.cancel();
        }
        self.inner.emit(event);
    }
}

async fn wait_cancelled(stop: &CancelToken) {
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The file when exactly one file (not a folder) was asked for, else the snapshot folder.
fn result_path(plan: &Plan, target: &Target, spec: &RepoSpec) -> Result<PathBuf, HostError> {
    if let [one] = spec.files.as_slice()
        && !one.ends_with('/')
        && let Some(pf) = plan.files.iter().find(|f| f.file.path.as_str() == one)
    {
        return target
            .final_path(&pf.file, &plan.commit)
            .map_err(|e| HostError::Other(e.to_string()));
    }
    Ok(target.root_path(&plan.commit))
}

fn status_name(s: FileStatus) -> &'static str {
    match s {
        FileStatus::Complete => "complete",
        FileStatus::Linkable => "linkable",
        FileStatus::InSharedStore => "shared_store",
        FileStatus::Partial(_) => "partial",
        FileStatus::Missing => "missing",
    }
}

/// The backend each planned file would go to first (`cache` offline, `None` if none can).
/// Where each planned file will come from: `cache` for a file already there (complete, or
/// linked from a blob the cache has), `shared-store` for one taken from the shared blob store
/// (as their `file_done` events will say), else the first backend that can serve it.
fn first_backends(plan: &Plan, backends: &[Arc<dyn Transport>]) -> Vec<Option<String>> {
    plan.files
        .iter()
        .map(|f| match f.status {
            FileStatus::Complete | FileStatus::Linkable => Some("cache".to_owned()),
            FileStatus::InSharedStore => Some("shared-store".to_owned()),
            FileStatus::Partial(_) | FileStatus::Missing => backends
                .iter()
                .find(|b| crate::engine::can_serve(b.as_ref(), &f.file, plan.repo_type))
                .map(|b| b.name().to_owned()),
        })
        .collect()
}

fn plan_event(plan: &Plan, backends: &[String], first: &[Option<String>], dry_run: bool) -> Event {
    Event::Plan {
        repo_id: plan.repo_id.clone(),
        repo_type: plan.repo_type.name().into_owned(),
        revision: plan.revision.clone(),
        commit: plan.commit.clone(),
        resolved_by: plan.resolved_by.clone(),
        backends: backends.to_vec(),
        files: plan
            .files
            .iter()
            .zip(first)
            .map(|(f, first)| PlanFile {
                path: f.file.path.to_string(),
                size: f.file.size,
                status: status_name(f.status),
                remaining: f.remaining(),
                xet: f.file.xet_hash.is_some(),
                backend: first.clone(),
            })
            .collect(),
        total_bytes: plan.total_bytes(),
        remaining_bytes: plan.remaining_bytes(),
        shared_store_bytes: plan.shared_store_bytes(),
        dry_run,
    }
}

/// Human-readable size (binary units).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_dry_run(
    output: &Output,
    plan: &Plan,
    backends: &[String],
    first: &[Option<String>],
    space: Option<&str>,
) {
    if output.is_json() {
        return;
    }
    let mut text = format!(
        "{} {} @ {} -> {}\nbackends: {} (first: {})\n",
        plan.repo_type,
        plan.repo_id,
        plan.revision,
        plan.commit,
        backends.join(", "),
        backends.first().map_or("none", String::as_str)
    );
    text.push_str(&format!(
        "{:>12}  {:<12} {:<8} PATH\n",
        "SIZE", "STATUS", "BACKEND"
    ));
    for (f, first) in plan.files.iter().zip(first) {
        text.push_str(&format!(
            "{:>12}  {:<12} {:<8} {}\n",
            human_bytes(f.file.size),
            status_name(f.status),
            first.as_deref().unwrap_or("-"),
            f.file.path
        ));
    }
    text.push_str(&format!(
        "{} files, {} total, {} to fetch\n",
        plan.files.len(),
        human_bytes(plan.total_bytes()),
        human_bytes(plan.remaining_bytes())
    ));
    let shared = plan.shared_store_bytes();
    if shared > 0 {
        let n = plan
            .files
            .iter()
            .filter(|f| f.status == FileStatus::InSharedStore)
            .count();
        text.push_str(&format!(
            "{n} files ({}) from the shared blob store, not downloaded\n",
            human_bytes(shared)
        ));
    }
    if let Some(line) = space {
        text.push_str(line);
        text.push('\n');
    }
    let _ = crate::commands::print_stdout(&text);
}

/// Whether the backend that resolved `plan` did so through the configured Hub (its
/// `resolves_via` origin is the endpoint).
fn resolved_through_the_hub(
    plan: &Plan,
    backends: &[Arc<dyn crate::transport::Transport>],
    settings: &Settings,
) -> bool {
    let hub = settings
        .endpoint
        .value
        .trim_end_matches('/')
        .to_ascii_lowercase();
    backends
        .iter()
        .find(|b| b.name() == plan.resolved_by)
        .and_then(|b| {
            hubget_plugin_api::protocol::resolves_via(b.capabilities().extra_json.as_str())
        })
        .is_some_and(|origin| origin == hub)
}

/// Directories made for a run and removed when it ends, if they are still empty.
struct MadeDirs(Vec<PathBuf>);

impl MadeDirs {
    fn create(dir: &Path) -> Self {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(Path::to_path_buf)
            .collect();
        if let Err(e) = std::fs::create_dir_all(dir) {
            log::debug!("cannot create {}: {e}", dir.display());
        }
        Self(missing)
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        // Deepest first; a directory that holds anything stays.
        for dir in &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlannedFile;
    use abi_stable::std_types::ROption;
    use hubget_plugin_api::{ManifestFile, RepoType};

    fn plan(files: &[(&str, u64, &str, FileStatus)]) -> Plan {
        Plan {
            repo_type: RepoType::MODEL,
            repo_id: "org/name".into(),
            revision: "main".into(),
            commit: "c".repeat(40),
            resolved_by: "lfs".into(),
            files: files
                .iter()
                .map(|&(path, size, sha, status)| PlannedFile {
                    file: ManifestFile {
                        path: path.into(),
                        size,
                        git_oid: "0".repeat(40).as_str().into(),
                        sha256: ROption::RSome(sha.into()),
                        xet_hash: ROption::RNone,
                    },
                    status,
                })
                .collect(),
            missing: Vec::new(),
            warnings: Vec::new(),
            refused: Vec::new(),
            manifest_files: Vec::new(),
        }
    }

    #[test]
    fn files_already_on_disk_are_planned_from_the_cache_not_a_backend() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let p = plan(&[
            ("done.bin", 5, &a, FileStatus::Complete),
            ("store.bin", 5, &b, FileStatus::InSharedStore),
            ("new.bin", 5, &c, FileStatus::Missing),
        ]);
        assert_eq!(
            first_backends(&p, &[]),
            [
                Some("cache".to_owned()),
                Some("shared-store".to_owned()),
                None
            ]
        );
    }

    #[test]
    fn preflight_compares_what_is_left_with_the_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Target::cache(dir.path(), RepoType::MODEL, "org/name");
        let (_, free) = space::available_space(dir.path()).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));

        // Too big: a disk-full error naming the directory and both numbers.
        let huge = plan(&[("w.bin", free * 4, &a, FileStatus::Missing)]);
        let e = preflight(&huge, &cache).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::EXIT_DISK_FULL);
        let msg = e.to_string();
        let head = format!("not enough free space in {}: ", dir.path().display());
        assert!(msg.starts_with(&head), "{msg}");
        assert!(
            msg.contains(" still to fetch, ") && msg.ends_with(" free"),
            "{msg}"
        );

        // What is complete or already resumed does not count.
        let done = plan(&[
            ("w.bin", free * 4, &a, FileStatus::Complete),
            ("x.bin", free * 4, &b, FileStatus::Partial(free * 4 - 10)),
        ]);
        let line = preflight(&done, &cache).unwrap().unwrap();
        assert!(line.ends_with("(10 B to fetch)"), "{line}");
        let nothing = plan(&[("w.bin", 5, &a, FileStatus::Linkable)]);
        assert_eq!(preflight(&nothing, &cache).unwrap(), None);

        // Two paths with one content: one blob in the cache, two files in a local dir.
        let twins = plan(&[
            ("w.bin", free / 10 * 6, &a, FileStatus::Missing),
            ("copy/w.bin", free / 10 * 6, &a, FileStatus::Missing),
        ]);
        assert!(preflight(&twins, &cache).is_ok());
        let local = Target::local_dir(&dir.path().join("out"));
        assert!(preflight(&twins, &local).is_err());
    }
}
