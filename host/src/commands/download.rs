//! `hubget download`: first version. It parses the request, resolves the settings, loads the
//! plugins, opens the backends in the effective order and resolves the revision with the first
//! backend that can (a backend that cannot, or fails, passes to the next). Then it stops with a
//! clear "not implemented" error: the download engine is the next step (issue 4), and this
//! command must not pretend to download.

use std::path::PathBuf;

use abi_stable::std_types::RString;
use hubget_plugin_api::{CancelToken, ErrorKind, Features, Manifest, ResolveRequest};

use crate::backend::BackendHandle;
use crate::cli::{DownloadArgs, RepoSpec};
use crate::commands::{load_plugins, open_backends};
use crate::error::HostError;
use crate::settings::{Env, Settings};

/// Runs `hubget download`.
pub fn run(env: &Env, config: Option<PathBuf>, args: &DownloadArgs) -> Result<(), HostError> {
    if args.resume_download {
        log::warn!("--resume-download is deprecated and ignored: hubget always resumes");
    }
    if args.local_dir_use_symlinks.is_some() {
        log::warn!("--local-dir-use-symlinks is deprecated and ignored");
    }
    let spec = RepoSpec::parse(
        &args.repo_id,
        &args.files,
        args.repo_type.as_deref(),
        args.revision.as_deref(),
    )?;
    let settings = Settings::load(&args.settings.overrides(config), env)?;
    let registry = load_plugins(&settings);
    let order = settings.effective_order(&registry.names())?;
    let backends = open_backends(&registry, &settings, &order)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| HostError::io("cannot start the async runtime", e))?;
    let (backend, manifest) = runtime.block_on(resolve(&backends, &spec))?;
    log::info!(
        "backend `{backend}` resolved {} {} at {} to commit {} ({} files)",
        spec.repo_type,
        spec.repo_id,
        spec.revision,
        manifest.commit,
        manifest.files.len()
    );
    Err(HostError::NotImplemented(format!(
        "the download engine (resolved {} at {} to commit {} with {} files via `{backend}`; \
         nothing was downloaded)",
        spec.repo_id,
        spec.revision,
        manifest.commit,
        manifest.files.len()
    )))
}

/// Resolves `spec` with the first backend that can; returns its name and the manifest.
async fn resolve(
    backends: &[BackendHandle],
    spec: &RepoSpec,
) -> Result<(String, Manifest), HostError> {
    let mut first_error: Option<HostError> = None;
    for backend in backends {
        let caps = backend.capabilities();
        if !caps.features.contains(Features::RESOLVE) {
            log::debug!("backend `{}` cannot resolve; next", backend.name());
            continue;
        }
        if !caps.repo_types.contains(&spec.repo_type) {
            log::debug!(
                "backend `{}` does not serve {} repositories; next",
                backend.name(),
                spec.repo_type
            );
            continue;
        }
        let request = ResolveRequest {
            repo_type: spec.repo_type,
            repo_id: RString::from(spec.repo_id.as_str()),
            revision: RString::from(spec.revision.as_str()),
            options_json: RString::new(),
        };
        match backend.resolve(request, CancelToken::new()).await {
            Ok(manifest) => return Ok((backend.name().to_owned(), manifest)),
            Err(e) if e.kind == ErrorKind::UNSUPPORTED => {
                log::debug!("backend `{}` cannot resolve: {e}", backend.name());
            }
            Err(e) => {
                log::warn!("backend `{}` failed to resolve: {e}", backend.name());
                first_error.get_or_insert(HostError::backend(backend.name(), "resolve", e));
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        HostError::NoBackend(format!(
            "none of the backends ({}) can resolve {} repositories",
            backends
                .iter()
                .map(|b| b.name().to_owned())
                .collect::<Vec<_>>()
                .join(", "),
            spec.repo_type
        ))
    }))
}
