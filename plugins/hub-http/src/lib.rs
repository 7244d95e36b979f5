//! HTTP for hubget's first-party plugins (`lfs`, `xet`, `mirror`): one HTTP client built from
//! the host settings, the Hub API client, the Git LFS batch API, error classification, retries,
//! and (in [`download`]) ranged, resumable, parallel downloads into the host's partial files.
//!
//! # Why not `hf-hub`
//!
//! The workspace pins `hf-hub =1.0.0`, but this crate talks HTTP itself on reqwest (rustls),
//! because the parts we need are the parts 1.0.0 gets wrong or does not have
//! (measured against hf-hub 1.0.0):
//! * its tree entries deserialize `lfs` without serde renames, so `lfs.oid` (the sha256 the host
//!   verifies against) is always `None`; we parse the tree JSON ourselves;
//! * several download paths follow redirects with reqwest's policy and lose headers; we need
//!   our own redirect loop anyway, to send the Hub token only to the Hub's origin and a batch
//!   action's headers only to its href;
//! * it has no Git LFS batch API client, no ranged parallel download, and its client cannot
//!   be built from our settings (proxy, CA bundle, timeouts) or shared with the downloader.
//!
//! # Token rule
//!
//! The token is a [`Credential`] bound to the endpoint's origin; [`HttpClient::send`] follows
//! redirects itself and attaches it only on hops of that origin. Error messages carry the
//! method and the URL without its query string ([`redact_url`]), never a token.
//!
//! # Redacted Xet hashes
//!
//! Gated repositories may list `xetHash` as 64 `*`. [`HubApi::manifest`] keeps a xet hash only
//! when it is 64 lowercase hex digits, so such files appear as plain LFS files (sha256 only).

pub mod api;
pub mod client;
pub mod download;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod origin;
pub mod quota;
pub mod ranges;
pub mod rate;
pub mod retry;

pub use api::{
    HubApi, LfsDownload, LfsObject, XetToken, encode_component, encode_path, is_xet_hash, next_link,
};
pub use client::{Answer, Credential, HttpClient, Request, origin_of, same_origin};
pub use download::{
    DownloadOptions, Downloaded, Event, EventSink, ItemEvents, PartialTarget, Source,
    download_to_partial,
};
pub use error::{classify, classify_transport, redact_url, request_context, retry_after};
pub use ranges::{MIN_RANGE, holes, merge_ranges, plan_holes, plan_ranges, split_ranges};
pub use retry::{RetryPolicy, cancellable, with_retry};

/// Re-exported so that plugins use the same reqwest types (`Url`, `HeaderMap`).
pub use reqwest;
