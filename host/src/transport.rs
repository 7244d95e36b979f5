//! The engine's view of a backend: name, capabilities, async `resolve` and `fetch`. Implemented
//! by [`BackendHandle`] (plugins) and by in-process fakes in tests.

use std::future::Future;
use std::pin::Pin;

use hubget_plugin_api::{
    CancelToken, Capabilities, FetchBatch, FileOutcome, Manifest, PluginError, Progress,
    ResolveRequest,
};

use crate::backend::BackendHandle;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend as the engine uses it. Dropping a `fetch` future abandons the call.
pub trait Transport: Send + Sync + 'static {
    /// The backend's name.
    fn name(&self) -> &str;
    /// What it can do.
    fn capabilities(&self) -> &Capabilities;
    /// Resolves a revision into a manifest.
    fn resolve(
        &self,
        req: ResolveRequest,
        cancel: CancelToken,
    ) -> BoxFuture<'_, Result<Manifest, PluginError>>;
    /// Fetches a batch; exactly one outcome per item, in index order.
    fn fetch(
        &self,
        batch: FetchBatch,
        progress: Progress,
        cancel: CancelToken,
    ) -> BoxFuture<'_, Vec<FileOutcome>>;
}

impl Transport for BackendHandle {
    fn name(&self) -> &str {
        BackendHandle::name(self)
    }

    fn capabilities(&self) -> &Capabilities {
        BackendHandle::capabilities(self)
    }

    fn resolve(
        &self,
        req: ResolveRequest,
        cancel: CancelToken,
    ) -> BoxFuture<'_, Result<Manifest, PluginError>> {
        Box::pin(BackendHandle::resolve(self, req, cancel))
    }

    fn fetch(
        &self,
        batch: FetchBatch,
        progress: Progress,
        cancel: CancelToken,
    ) -> BoxFuture<'_, Vec<FileOutcome>> {
        Box::pin(BackendHandle::fetch(self, batch, progress, cancel))
    }
}
