//! The upload half of `hubget export REPO --to s3://bucket/prefix`, which seeds an object store
//! from the local cache so that a fleet reads from it (see the `s3` plugin). The revision is first
//! downloaded through the normal engine (`download::run_then_export`: what is already in the
//! cache is not fetched again); then every blob of the
//! plan, the commit's manifest and the ref go to the store through the `call` extension point
//! of the plugin that advertises the destination's scheme (`export` in its capabilities), so a
//! third-party store plugin can offer export too. Every blob is hashed against the plan before
//! it is handed over (the cache may have changed since it landed). The plugin skips objects it
//! knows to be right: a second export moves nothing and an interrupted one resumes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hubget_plugin_api::protocol::{export, export_schemes};
use tokio::task::JoinSet;

use crate::backend::BackendHandle;
use crate::commands::{load_plugins, open_backends};
use crate::engine::FileReport;
use crate::error::HostError;
use crate::output::{Event, Output, Reporter};
use crate::plan::Plan;
use crate::settings::Settings;
use crate::store::{Target, etag_of};
use crate::verify::{Expected, verify_file};

/// Uploads the blobs of `plan` (from the cache `target`), the manifest and the ref to `to`.
/// Returns the destination URL and one report per blob (also sent as `file_done` events, with
/// the bytes sent in `bytes_transferred` and the object in `source`).
pub async fn upload(
    settings: &Settings,
    plan: &Plan,
    target: &Target,
    to: &str,
    output: &Arc<Output>,
) -> Result<(String, Vec<FileReport>), HostError> {
    let Target::Cache(cache) = target else {
        return Err(HostError::Usage(
            "hubget export reads the Hugging Face cache".to_owned(),
        ));
    };
    let scheme = to
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .ok_or_else(|| {
            HostError::Usage(format!("`{to}` is not a URL: expected s3://bucket/prefix"))
        })?;
    let registry = load_plugins(settings);
    let names = registry.names();
    let handles = open_backends(&registry, settings, &names)?;
    let exporter: Arc<BackendHandle> = handles
        .into_iter()
        .find(|h| export_schemes(h.capabilities().extra_json.as_str()).contains(&scheme))
        .map(Arc::new)
        .ok_or_else(|| {
            HostError::NoBackend(format!(
                "no loaded plugin exports to {scheme}:// (loaded: {})",
                names.join(", ")
            ))
        })?;
    let folder = cache.folder.clone();
    let mut jobs = JoinSet::new();
    let mut seen = std::collections::HashSet::new();
    let mut reports = Vec::new();
    let limit = settings.max_workers.value.max(1);
    let mut failures = Vec::new();
    for pf in &plan.files {
        let Ok(etag) = etag_of(&pf.file) else {
            continue;
        };
        if !seen.insert(etag.clone()) {
            continue;
        }
        let path = cache.blob_path(&etag);
        // Through the repo blob's link into the shared store, if any.
        let local = std::fs::canonicalize(&path).unwrap_or(path);
        let request = export::Blob {
            to: to.to_owned(),
            repo_folder: folder.clone(),
            etag,
            path: local.display().to_string(),
            size: pf.file.size,
        };
        while jobs.len() >= limit {
            collect(&mut jobs, output, &mut reports, &mut failures).await;
        }
        output.emit(Event::FileStart {
            path: pf.file.path.to_string(),
            backend: exporter.name().to_owned(),
            size: pf.file.size,
            offset: 0,
        });
        let (exporter, repo_path) = (Arc::clone(&exporter), pf.file.path.to_string());
        let expected = Expected::for_file(&pf.file);
        jobs.spawn(async move {
            let started = Instant::now();
            // Hashed first: the cache may have changed since it landed (a co-user, a disk
            // error, an edit through the snapshot link); a bucket is seeded with checked bytes
            // only.
            let checked = {
                let local = PathBuf::from(&request.path);
                tokio::task::spawn_blocking(move || verify_file(&local, &expected))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|r| r.map_err(std::io::Error::other))
            };
            let answer = match checked {
                Ok(_) => {
                    let json = serde_json::to_string(&request).unwrap_or_default();
                    exporter.call(export::BLOB, &json).await
                }
                Err(e) => Err(hubget_plugin_api::PluginError::new(
                    hubget_plugin_api::ErrorKind::INTEGRITY,
                    format!(
                        "not exported: the cache's copy does not match its hash ({e}); \
                         `hubget cache verify --repair` fetches it again"
                    ),
                )),
            };
            (repo_path, request, started, answer)
        });
    }
    while !jobs.is_empty() {
        collect(&mut jobs, output, &mut reports, &mut failures).await;
    }
    if !failures.is_empty() {
        return Err(HostError::Other(format!(
            "{} of {} blobs were not exported: {}",
            failures.len(),
            seen.len(),
            failures.join("; ")
        )));
    }
    // The manifest (every file of the commit), then the ref: a reader that finds the ref finds
    // the manifest and the blobs.
    let manifest = export::ManifestObject {
        to: to.to_owned(),
        repo_folder: folder.clone(),
        manifest: export::Manifest {
            commit: plan.commit.clone(),
            files: plan.manifest_files.iter().map(export::File::of).collect(),
        },
    };
    call(&exporter, export::MANIFEST, &manifest).await?;
    if plan.revision != plan.commit {
        let r = export::RefObject {
            to: to.to_owned(),
            repo_folder: folder,
            revision: plan.revision.clone(),
            commit: plan.commit.clone(),
        };
        call(&exporter, export::REF, &r).await?;
    }
    Ok((to.trim_end_matches('/').to_owned(), reports))
}

async fn call<T: serde::Serialize>(
    exporter: &BackendHandle,
    method: &str,
    request: &T,
) -> Result<export::Uploaded, HostError> {
    let json = serde_json::to_string(request).map_err(|e| HostError::Other(e.to_string()))?;
    let answer = exporter
        .call(method, &json)
        .await
        .map_err(|e| HostError::Other(format!("{} {method}: {}", exporter.name(), e.message)))?;
    serde_json::from_str(&answer)
        .map_err(|e| HostError::Other(format!("{} {method}: bad answer: {e}", exporter.name())))
}

type Job = (
    String,
    export::Blob,
    Instant,
    Result<String, hubget_plugin_api::PluginError>,
);

async fn collect(
    jobs: &mut JoinSet<Job>,
    output: &Arc<Output>,
    reports: &mut Vec<FileReport>,
    failures: &mut Vec<String>,
) {
    let Some(Ok((path, request, started, answer))) = jobs.join_next().await else {
        return;
    };
    let uploaded = answer.and_then(|a| {
        serde_json::from_str::<export::Uploaded>(&a).map_err(|e| {
            hubget_plugin_api::PluginError::new(
                hubget_plugin_api::ErrorKind::PROTOCOL,
                e.to_string(),
            )
        })
    });
    match uploaded {
        Ok(u) => {
            let report = FileReport {
                path,
                backend: "export".to_owned(),
                source: u.object.clone(),
                bytes: request.size,
                bytes_transferred: u.bytes,
                sha256: String::new(),
                secs: started.elapsed().as_secs_f64(),
                local_path: PathBuf::from(&request.path),
                reused_from: None,
                local_bytes: 0,
            };
            output.emit(report.event(str::to_owned));
            reports.push(report);
        }
        Err(e) => {
            output.emit(Event::Error {
                path: Some(path.clone()),
                kind: e.kind.name().into_owned(),
                message: e.message.to_string(),
                hint: None,
            });
            failures.push(format!("{path}: {}", e.message));
        }
    }
}
