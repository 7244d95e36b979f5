//! hubget's `s3` backend plugin: an object store (S3 and compatibles: MinIO, Ceph RGW, R2,
//! JuiceFS's gateway, GCS's interoperability API) that a team seeds once with `hubget export`
//! and a fleet of machines reads from, without the Hub.
//!
//! * **resolve** reads the bucket's refs and manifests (layout in
//!   [`hubget_plugin_api::protocol::export`]): nodes without internet resolve too. A revision
//!   the bucket lacks is `NOT_FOUND`: the host asks the next backend (the Hub).
//! * **fetch** presigns a GET for `<repo folder>/blobs/<etag>` and downloads it with hub-http's
//!   ranged, resumable downloader (parallel ranges, `written_ranges`, `RANGE_WRITTEN`, the
//!   bandwidth cap): the same transport code as lfs and mirror. A missing object is
//!   `NOT_FOUND` for that file alone, so the Hub serves whatever the bucket lacks. The Hub
//!   token is never used here: nothing of it can reach the object store.
//! * **call** implements the export methods (`export.blob`, `export.manifest`, `export.ref`):
//!   an object is skipped when it has the right size and the metadata this plugin writes with
//!   every blob (the etag the host checked the file against before the upload): a second
//!   export moves nothing, an interrupted one resumes with the blobs still missing, and an
//!   object put there by anything else is uploaded again (a wrong one gets repaired); large blobs go up as multipart uploads with parallel
//!   parts.
//!
//! Why `object_store` (Apache Arrow): a maintained, widely used client for S3 and compatibles
//! with SigV4, presigned URLs, multipart uploads, retries and the instance-credential chain, on
//! the same reqwest/rustls stack as hub-http; no hand-written signing. `opendal` would serve too
//! but brings far more than one store.

pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hubget_hub_http::download::{
    DownloadOptions, ItemEvents, PartialTarget, Source, download_to_partial,
};
use hubget_hub_http::{HttpClient, is_xet_hash};
use hubget_plugin_api::protocol::{FetchOptions, export};
use hubget_plugin_api::sdk::BackendPlugin;
use hubget_plugin_api::std_types::ROption;
use hubget_plugin_api::{
    CancelToken, Capabilities, ErrorKind, EventKind, Features, FetchBatch, FileDone, FileOutcome,
    HostSettings, Manifest, ManifestFile, PluginError, Progress, ProgressEvent, RepoType,
    ResolveRequest, is_commit_sha,
};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::config::{Config, Location, Resolved};

/// Blobs at least this large go up as multipart uploads.
const MULTIPART_FROM: u64 = 64 * 1024 * 1024;
/// Part size of multipart uploads.
const PART_SIZE: usize = 16 * 1024 * 1024;
/// Parts in flight per upload.
const PARTS_IN_FLIGHT: usize = 8;
/// The object metadata (`x-amz-meta-…`) that records the etag the host checked the uploaded
/// file against: an export skips only objects that carry it (and have the right size).
const CHECKED_ETAG: &str = "hubget-checked-etag";
/// How long a presigned GET stays valid (a resumed download asks again).
const PRESIGN_FOR: Duration = Duration::from_secs(3600);

/// The `s3` backend.
pub struct Backend {
    settings: HostSettings,
    config: Config,
    /// The configured bucket to read from (None: inert for downloads).
    location: Option<Location>,
    chain: Resolved,
    http: HttpClient,
    stores: Mutex<HashMap<String, Arc<AmazonS3>>>,
    runtime: hubget_plugin_api::sdk::Runtime,
}

impl Backend {
    /// Creates the backend from the host settings and the `[plugins.s3]` table.
    pub fn new(settings: HostSettings, config_toml: &str) -> Result<Self, PluginError> {
        let config = Config::parse(config_toml)?;
        let location = if config.url.trim().is_empty() {
            None
        } else {
            Some(Location::parse(&config.url)?)
        };
        let mut http_settings = settings.clone();
        if config.ca_bundle.is_some() {
            http_settings.ca_bundle = config.ca_bundle.clone();
        }
        let http = HttpClient::new(&http_settings)?;
        let runtime = hubget_plugin_api::sdk::runtime("s3", 2)?;
        Ok(Self {
            chain: config::resolve_chain(&config.profile),
            settings,
            config,
            location,
            http,
            stores: Mutex::new(HashMap::new()),
            runtime,
        })
    }

    /// The endpoint in use, if not AWS's.
    fn endpoint(&self) -> Option<String> {
        let e = self.config.endpoint.trim();
        if e.is_empty() {
            self.chain.endpoint.clone()
        } else {
            Some(e.to_owned())
        }
    }

    /// Where the credentials come from, for messages.
    fn credential_source(&self) -> String {
        self.chain.credentials.as_ref().map_or_else(
            || "no static credentials (environment, shared files); the instance chain".to_owned(),
            |c| c.source.clone(),
        )
    }

    /// The client of `bucket` (built once).
    fn store(&self, bucket: &str) -> Result<Arc<AmazonS3>, PluginError> {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.get(bucket) {
            return Ok(Arc::clone(s));
        }
        let endpoint = self.endpoint();
        let mut options = object_store::ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(
                self.settings.connect_timeout_secs.max(1),
            ))
            .with_allow_http(
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            );
        if let Some(proxy) = &self.settings.proxy {
            options = options.with_proxy_url(proxy);
        }
        let ca = self
            .config
            .ca_bundle
            .clone()
            .or(self.settings.ca_bundle.clone());
        if let Some(path) = ca {
            let pem = std::fs::read(&path).map_err(|e| {
                PluginError::new(
                    ErrorKind::CONFIG,
                    format!("CA bundle {}: {e}", path.display()),
                )
            })?;
            for cert in object_store::Certificate::from_pem_bundle(&pem)
                .map_err(|e| PluginError::new(ErrorKind::CONFIG, format!("CA bundle: {e}")))?
            {
                options = options.with_root_certificate(cert);
            }
        }
        let region = if self.config.region.trim().is_empty() {
            self.chain
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_owned())
        } else {
            self.config.region.clone()
        };
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(region)
            .with_client_options(options)
            .with_virtual_hosted_style_request(
                !self.config.path_style.unwrap_or(endpoint.is_some()),
            );
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        if let Some(c) = &self.chain.credentials {
            b = b
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key);
            if let Some(t) = &c.session_token {
                b = b.with_token(t);
            }
        }
        let store = Arc::new(b.build().map_err(|e| {
            PluginError::new(
                ErrorKind::CONFIG,
                format!("object store s3://{bucket}: {}", one_line(&e)),
            )
        })?);
        stores.insert(bucket.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// An object store error as a plugin error naming the object (and, for refusals, where the
    /// credentials came from).
    fn error(&self, e: object_store::Error, object: &str) -> PluginError {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => {
                PluginError::new(ErrorKind::NOT_FOUND, format!("{object}: not in the bucket"))
            }
            E::Unauthenticated { .. } | E::PermissionDenied { .. } => PluginError::new(
                ErrorKind::AUTH,
                format!(
                    "{object}: the object store refused the credentials (from {})",
                    self.credential_source()
                ),
            ),
            other => {
                let text = one_line(&other);
                // object_store reports some refusals only in the text of a generic error.
                if text.contains("403")
                    || text.contains("InvalidAccessKeyId")
                    || text.contains("SignatureDoesNotMatch")
                {
                    PluginError::new(
                        ErrorKind::AUTH,
                        format!(
                            "{object}: the object store refused the credentials (from {})",
                            self.credential_source()
                        ),
                    )
                } else {
                    PluginError::new(ErrorKind::NETWORK, format!("{object}: {text}"))
                        .retryable(true)
                }
            }
        }
    }

    async fn read_text(&self, loc: &Location, key: &str) -> Result<String, PluginError> {
        let object = loc.url_of(key);
        let store = self.store(&loc.bucket)?;
        let got = store
            .get(&ObjectPath::from(loc.key(key)))
            .await
            .map_err(|e| self.error(e, &object))?;
        // A metadata object is read with the host's cap, checked before the body is read.
        let cap = self.settings.max_metadata_bytes.max(1);
        if got.meta.size > cap {
            return Err(PluginError::new(
                ErrorKind::PROTOCOL,
                format!(
                    "{object}: larger than {} MiB (`[network] max_metadata_mib`)",
                    cap.div_ceil(1 << 20)
                ),
            ));
        }
        let bytes = got.bytes().await.map_err(|e| self.error(e, &object))?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| PluginError::new(ErrorKind::PROTOCOL, format!("{object}: not UTF-8")))
    }

    async fn resolve_async(&self, req: &ResolveRequest) -> Result<Manifest, PluginError> {
        let Some(loc) = &self.location else {
            return Err(PluginError::unsupported("no [plugins.s3] url configured"));
        };
        let folder = req.repo_type.cache_folder(req.repo_id.as_str());
        let revision = req.revision.as_str();
        let commit = if is_commit_sha(revision) {
            revision.to_owned()
        } else {
            let key = export::ref_key(&folder, revision);
            let text = self.read_text(loc, &key).await?;
            export::parse_ref(&text).map_err(|e| {
                PluginError::new(ErrorKind::PROTOCOL, format!("{}: {e}", loc.url_of(&key)))
            })?
        };
        let key = export::manifest_key(&folder, &commit);
        let text = self.read_text(loc, &key).await?;
        let files = manifest_files(&text, &commit, &loc.url_of(&key))?;
        let extra = serde_json::json!({ "object_store": loc.url_of("") });
        Ok(Manifest::new(commit, files).with_extra(&extra))
    }

    async fn fetch_one(
        &self,
        loc: &Location,
        batch: &FetchBatch,
        index: u32,
        options: &FetchOptions,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Result<FileDone, PluginError> {
        let item = &batch.items[index as usize];
        let etag = item
            .file
            .sha256
            .as_ref()
            .map(|s| s.to_string())
            .into_option()
            .unwrap_or_else(|| item.file.git_oid.to_string())
            .to_ascii_lowercase();
        let folder = batch.repo_type.cache_folder(batch.repo_id.as_str());
        let key = export::blob_key(&folder, &etag);
        let object = loc.url_of(&key);
        let store = self.store(&loc.bucket)?;
        let path = ObjectPath::from(loc.key(&key));
        // A missing object is NOT_FOUND for this file alone (the Hub gets it).
        let meta = store
            .head(&path)
            .await
            .map_err(|e| self.error(e, &object))?;
        if meta.size != item.file.size {
            return Err(PluginError::new(
                ErrorKind::INTEGRITY,
                format!(
                    "{object}: {} bytes in the bucket, the manifest says {}",
                    meta.size, item.file.size
                ),
            ));
        }
        progress.on_event(ProgressEvent::message(index, EventKind::STARTED, ""));
        let url = store
            .signed_url(http::Method::GET, &path, PRESIGN_FOR)
            .await
            .map_err(|e| self.error(e, &object))?;
        let url = hubget_hub_http::reqwest::Url::parse(url.as_str())
            .map_err(|e| PluginError::new(ErrorKind::PROTOCOL, format!("presigned URL: {e}")))?;
        // No credential: the URL carries its signature; the Hub token is never here.
        let source = Source::new(url);
        let opts = DownloadOptions::from_settings(&self.settings)
            .with_written(options.written_for(index, item.offset, item.file.size));
        let to = ItemEvents { progress, index };
        let events = |e| to.send(e);
        let target = PartialTarget::of(item, item.offset);
        let done = download_to_partial(&self.http, &source, target, &opts, &events, cancel)
            .await
            .map_err(|e| e.context(&object))?;
        let extra = serde_json::json!({ "object": object });
        let source = format!("s3://{}", loc.bucket);
        Ok(FileDone::new(done.bytes_transferred, source).with_extra(&extra))
    }

    async fn put_blob(&self, req: export::Blob) -> Result<export::Uploaded, PluginError> {
        let loc = Location::parse(&req.to)?;
        let key = export::blob_key(&req.repo_folder, &req.etag);
        let object = loc.url_of(&key);
        let store = self.store(&loc.bucket)?;
        let path = ObjectPath::from(loc.key(&key));
        // Skipped only when the object is one this plugin put after the host had checked the
        // file against its etag (the metadata says so) and has its size: an object of the
        // right size from anywhere else (an older export, a hand copy, a corrupt write) is
        // uploaded again, so a wrong object gets repaired by the next export.
        let head = object_store::GetOptions {
            head: true,
            ..Default::default()
        };
        match store.get_opts(&path, head).await {
            Ok(found)
                if found.meta.size == req.size
                    && found
                        .attributes
                        .get(&object_store::Attribute::Metadata(CHECKED_ETAG.into()))
                        .is_some_and(|v| v.as_ref() == req.etag) =>
            {
                return Ok(export::Uploaded {
                    bytes: 0,
                    skipped: true,
                    object,
                });
            }
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.error(e, &object)),
        }
        let mut attributes = object_store::Attributes::new();
        attributes.insert(
            object_store::Attribute::Metadata(CHECKED_ETAG.into()),
            req.etag.clone().into(),
        );
        let file = std::path::PathBuf::from(&req.path);
        if req.size < MULTIPART_FROM {
            let data = tokio::fs::read(&file)
                .await
                .map_err(|e| PluginError::new(ErrorKind::IO, format!("{}: {e}", file.display())))?;
            if data.len() as u64 != req.size {
                return Err(PluginError::new(
                    ErrorKind::INTEGRITY,
                    format!(
                        "{}: {} bytes, expected {}",
                        file.display(),
                        data.len(),
                        req.size
                    ),
                ));
            }
            let opts = object_store::PutOptions {
                attributes,
                ..Default::default()
            };
            store
                .put_opts(&path, PutPayload::from(data), opts)
                .await
                .map_err(|e| self.error(e, &object))?;
        } else {
            let opts = object_store::PutMultipartOptions {
                attributes,
                ..Default::default()
            };
            let upload = store
                .put_multipart_opts(&path, opts)
                .await
                .map_err(|e| self.error(e, &object))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let f = tokio::fs::File::open(&file)
                .await
                .map_err(|e| PluginError::new(ErrorKind::IO, format!("{}: {e}", file.display())))?;
            let mut reader = tokio_util_stream(f);
            let mut sent = 0u64;
            while let Some(chunk) = reader.next().await {
                let chunk = chunk.map_err(|e| {
                    PluginError::new(ErrorKind::IO, format!("{}: {e}", file.display()))
                })?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.error(e, &object))?;
                sent += chunk.len() as u64;
                writer.put(chunk);
            }
            if sent != req.size {
                let _ = writer.abort().await;
                return Err(PluginError::new(
                    ErrorKind::INTEGRITY,
                    format!("{}: {sent} bytes, expected {}", file.display(), req.size),
                ));
            }
            writer.finish().await.map_err(|e| self.error(e, &object))?;
        }
        Ok(export::Uploaded {
            bytes: req.size,
            skipped: false,
            object,
        })
    }

    async fn put_text(
        &self,
        to: &str,
        key: &str,
        text: String,
    ) -> Result<export::Uploaded, PluginError> {
        let loc = Location::parse(to)?;
        let object = loc.url_of(key);
        let store = self.store(&loc.bucket)?;
        let bytes = text.len() as u64;
        store
            .put(
                &ObjectPath::from(loc.key(key)),
                PutPayload::from(text.into_bytes()),
            )
            .await
            .map_err(|e| self.error(e, &object))?;
        Ok(export::Uploaded {
            bytes,
            skipped: false,
            object,
        })
    }
}

/// A manifest object's files (through plugin-api's decoder); a Xet hash that is not one is
/// dropped. `object` names it in errors.
fn manifest_files(
    text: &str,
    commit: &str,
    object: &str,
) -> Result<Vec<ManifestFile>, PluginError> {
    let m = export::Manifest::parse(text, commit)
        .map_err(|e| PluginError::new(ErrorKind::PROTOCOL, format!("{object}: {e}")))?;
    Ok(m.files
        .into_iter()
        .map(|f| {
            let mut file = f.manifest_file();
            if !f.xet_hash.as_deref().is_some_and(is_xet_hash) {
                file.xet_hash = ROption::RNone;
            }
            file
        })
        .collect())
}

/// A file as a stream of 8 MiB chunks.
fn tokio_util_stream(
    mut f: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin {
    use tokio::io::AsyncReadExt;
    Box::pin(async_stream(move |tx| async move {
        loop {
            let mut buf = vec![0u8; 8 * 1024 * 1024];
            let mut filled = 0;
            while filled < buf.len() {
                match f.read(&mut buf[filled..]).await {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if filled == 0 {
                return;
            }
            buf.truncate(filled);
            if tx.send(Ok(bytes::Bytes::from(buf))).await.is_err() {
                return;
            }
        }
    }))
}

/// A stream fed by a task through a bounded channel (one chunk ahead).
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> impl futures_util::Stream<Item = T>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl BackendPlugin for Backend {
    fn capabilities(&self) -> Capabilities {
        let mut features = Features::empty();
        if self.location.is_some() {
            features = Features::RESOLVE
                | Features::RESUME
                | Features::PARALLEL_RANGES
                | Features::NON_XET_FILES
                | Features::RATE_LIMIT;
        }
        let mut extra = serde_json::json!({ (hubget_plugin_api::protocol::EXPORT): ["s3"] });
        if let Some(loc) = &self.location {
            extra[hubget_plugin_api::protocol::RESOLVES_VIA] = loc.url_of("").into();
        }
        Capabilities::new(&RepoType::ALL, features)
            .with_max_batch_files(32)
            .with_extra(&extra)
    }

    fn resolve(
        &self,
        request: &ResolveRequest,
        cancel: &CancelToken,
    ) -> Result<Manifest, PluginError> {
        self.runtime
            .block_on(hubget_hub_http::cancellable(
                cancel,
                self.resolve_async(request),
            ))
            .and_then(|r| r)
    }

    fn fetch(
        &self,
        batch: &FetchBatch,
        progress: &Progress,
        cancel: &CancelToken,
    ) -> Vec<FileOutcome> {
        let Some(loc) = &self.location else {
            return (0..batch.items.len() as u32)
                .map(|index| {
                    let e = PluginError::unsupported("no [plugins.s3] url configured");
                    FileOutcome::new(index, Err(e))
                })
                .collect();
        };
        let options = FetchOptions::parse(batch.options_json.as_str());
        let all = (0..batch.items.len() as u32).map(|index| {
            let options = &options;
            async move {
                let r = self
                    .fetch_one(loc, batch, index, options, progress, cancel)
                    .await
                    .map_err(|e| e.context(batch.items[index as usize].file.path.as_str()));
                FileOutcome::new(index, r)
            }
        });
        self.runtime.block_on(
            futures_util::stream::iter(all)
                .buffer_unordered(4)
                .collect::<Vec<_>>(),
        )
    }

    fn call(&self, method: &str, json: &str) -> Result<String, PluginError> {
        let bad =
            |e: serde_json::Error| PluginError::new(ErrorKind::PROTOCOL, format!("{method}: {e}"));
        let done = match method {
            export::BLOB => {
                let req: export::Blob = serde_json::from_str(json).map_err(bad)?;
                self.runtime.block_on(self.put_blob(req))?
            }
            export::MANIFEST => {
                let req: export::ManifestObject = serde_json::from_str(json).map_err(bad)?;
                let key = export::manifest_key(&req.repo_folder, &req.manifest.commit);
                let text = serde_json::to_string(&req.manifest).map_err(bad)?;
                self.runtime.block_on(self.put_text(&req.to, &key, text))?
            }
            export::REF => {
                let req: export::RefObject = serde_json::from_str(json).map_err(bad)?;
                let key = export::ref_key(&req.repo_folder, &req.revision);
                self.runtime
                    .block_on(self.put_text(&req.to, &key, req.commit))?
            }
            other => {
                return Err(PluginError::unsupported(format!(
                    "unknown method `{other}`"
                )));
            }
        };
        serde_json::to_string(&done).map_err(bad)
    }
}

hubget_plugin_api::export_plugin! {
    name: "s3",
    description: "An S3-compatible object store seeded with `hubget export` (reads and exports)",
    constructor: Backend::new,
}
