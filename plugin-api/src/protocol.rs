//! Side protocols: the data that host and plugins exchange inside the frozen v1 types.
//!
//! The v1 layout never changes, so everything added since 1.0 travels as data: JSON keys in
//! [`FetchBatch::options_json`](crate::FetchBatch::options_json) and text in
//! [`ProgressEvent::message`](crate::ProgressEvent::message). This module is the one codec for
//! each of them; the host and every plugin call it, nobody else formats or parses them.
//!
//! | protocol | direction | carried in | type |
//! | --- | --- | --- | --- |
//! | ranges already written past `offset` | host → plugin | `FetchBatch::options_json`, key `written_ranges` | [`FetchOptions`] |
//! | a range written to the partial file | plugin → host | `RANGE_WRITTEN` event message | [`RangeWritten`] |
//! | a retry inside the backend (attempt, wait) | plugin → host | `RETRY` event message | [`RetryNote`] |
//! | a wait for a server's rate-limit window | plugin → host | `RETRY` event message, its reason | [`RateLimitNote`] |
//! | the origin a backend resolves through | plugin → host | `Capabilities::extra_json`, key `resolves_via` | [`resolves_via`] |
//! | the URL schemes a backend exports to | plugin → host | `Capabilities::extra_json`, key `export` | [`export_schemes`] |
//! | `hubget export` uploads | host → plugin | `Backend::call` methods `export.*` | [`export`] |
//! | bytes taken from disk, not the network | plugin → host | `FileDone::extra_json`, key `local_bytes` | [`local_bytes`] |
//!
//! Design decisions:
//! - The wire formats are the ones 1.0 plugins already speak, so old plugins keep working.
//! - Decoding never fails loudly: a malformed payload reads as "nothing said" (no ranges, no
//!   delay), which is always safe (the backend rewrites from `offset`; the watchdog does not
//!   excuse a wait).
//! - Ranges are absolute byte offsets of the partial file, end exclusive, and are merged
//!   ([`merge_ranges`]) wherever they are read.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use crate::types::{EventKind, ProgressEvent};

/// Sorts and merges `ranges` (dropping empty ones): disjoint, non-adjacent, ascending.
pub fn merge_ranges(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The parts of `offset..size` not covered by `written`, ascending.
pub fn holes(offset: u64, size: u64, written: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = offset;
    for w in merge_ranges(written.to_vec()) {
        if w.end <= at {
            continue;
        }
        if w.start >= size {
            break;
        }
        if w.start > at {
            out.push(at..w.start);
        }
        at = at.max(w.end);
    }
    if at < size {
        out.push(at..size);
    }
    out
}

/// The options of a fetch batch (`FetchBatch::options_json`). Every key is optional; a backend
/// ignores the keys it does not know.
///
/// Wire format: `{"written_ranges": {"<item index>": [[start, end], ...]}}`, or the empty
/// string when no option is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchOptions {
    /// Per item index: ranges of its partial file already written past `offset` (from
    /// `RANGE_WRITTEN` events of an earlier attempt). A backend may skip them; one that ignores
    /// them rewrites from `offset`, which stays correct.
    pub written_ranges: BTreeMap<u32, Vec<Range<u64>>>,
}

impl FetchOptions {
    /// Decodes `options_json`; empty or malformed text (or a malformed key) reads as no options.
    pub fn parse(options_json: &str) -> Self {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(options_json) else {
            return Self::default();
        };
        let mut written_ranges = BTreeMap::new();
        if let Some(map) = value.get("written_ranges").and_then(|w| w.as_object()) {
            for (key, list) in map {
                let (Ok(index), Some(list)) = (key.parse::<u32>(), list.as_array()) else {
                    continue;
                };
                let ranges = list
                    .iter()
                    .filter_map(|r| {
                        let pair = r.as_array()?;
                        Some(pair.first()?.as_u64()?..pair.get(1)?.as_u64()?)
                    })
                    .collect();
                let ranges = merge_ranges(ranges);
                if !ranges.is_empty() {
                    written_ranges.insert(index, ranges);
                }
            }
        }
        Self { written_ranges }
    }

    /// The JSON text for `FetchBatch::options_json` (empty when nothing is set).
    pub fn to_json(&self) -> String {
        let written: BTreeMap<String, Vec<[u64; 2]>> = self
            .written_ranges
            .iter()
            .filter(|(_, ranges)| !ranges.is_empty())
            .map(|(index, ranges)| {
                let pairs = ranges.iter().map(|r| [r.start, r.end]).collect();
                (index.to_string(), pairs)
            })
            .collect();
        if written.is_empty() {
            return String::new();
        }
        serde_json::json!({ "written_ranges": written }).to_string()
    }

    /// The written ranges of item `index`, clipped to `offset..size` and merged.
    pub fn written_for(&self, index: u32, offset: u64, size: u64) -> Vec<Range<u64>> {
        let Some(ranges) = self.written_ranges.get(&index) else {
            return Vec::new();
        };
        merge_ranges(
            ranges
                .iter()
                .map(|r| r.start.max(offset)..r.end.min(size))
                .collect(),
        )
    }
}

/// The payload of a `RANGE_WRITTEN` event: bytes `start..end` of the partial file are on disk
/// (flushed to the file, not necessarily synced). Wire format: `{"start":S,"end":E}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeWritten {
    /// The first byte written.
    pub start: u64,
    /// One past the last byte written.
    pub end: u64,
}

impl RangeWritten {
    /// The event for item `index` (encoded by [`ProgressEvent::range_written`]).
    pub fn event(self, index: u32) -> ProgressEvent {
        ProgressEvent::range_written(index, self.start, self.end)
    }

    /// Decodes a `RANGE_WRITTEN` message; `None` when malformed or empty (`start >= end`).
    pub fn parse(message: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(message).ok()?;
        let start = v.get("start")?.as_u64()?;
        let end = v.get("end")?.as_u64()?;
        (start < end).then_some(Self { start, end })
    }

    /// As a range.
    pub fn range(self) -> Range<u64> {
        self.start..self.end
    }
}

/// The payload of a `RETRY` event: a request inside the backend failed and is about to be tried
/// again after `delay`.
///
/// Wire format: `"<reason>; retrying in <ms> ms (attempt <n>/<max>)"`. A message without that
/// suffix (an older plugin's free text) decodes with only `reason` set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryNote {
    /// Why the attempt failed, redacted (no token, no query string).
    pub reason: String,
    /// The wait before the next attempt, when the backend says it.
    pub delay: Option<Duration>,
    /// The attempt about to run (2 for the first retry) and the attempts allowed, when said.
    pub attempt: Option<(u32, u32)>,
}

impl RetryNote {
    /// A note with every field known.
    pub fn new(
        reason: impl Into<String>,
        delay: Duration,
        attempt: u32,
        max_attempts: u32,
    ) -> Self {
        Self {
            reason: reason.into(),
            delay: Some(delay),
            attempt: Some((attempt, max_attempts)),
        }
    }

    /// A note that says only why (no wait, no attempt count), such as a refreshed URL.
    pub fn reason_only(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            delay: None,
            attempt: None,
        }
    }

    /// The wire text.
    pub fn message(&self) -> String {
        match (self.delay, self.attempt) {
            (Some(delay), Some((n, max))) => format!(
                "{}; retrying in {} ms (attempt {n}/{max})",
                self.reason,
                delay.as_millis()
            ),
            _ => self.reason.clone(),
        }
    }

    /// The event for item `index`.
    pub fn event(&self, index: u32) -> ProgressEvent {
        ProgressEvent::message(index, EventKind::RETRY, self.message())
    }

    /// Decodes a `RETRY` message (see the type docs).
    pub fn parse(message: &str) -> Self {
        match split_suffix(message) {
            Some((head, delay_ms, attempt, max)) => Self {
                reason: head.to_owned(),
                delay: Some(Duration::from_millis(delay_ms)),
                attempt: Some((attempt, max)),
            },
            None => Self {
                reason: message.to_owned(),
                delay: None,
                attempt: None,
            },
        }
    }
}

impl std::fmt::Display for RetryNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// A wait for a server's rate-limit window (the IETF `RateLimit` header fields the Hub sends):
/// the reason of a [`RetryNote`] whose delay is the wait, so that hosts that do not know this
/// note still excuse the wait from their stall watchdog and show it as a retry.
///
/// Wire format (the note's reason): `rate limited by <origin>: "<bucket>" <remaining> of
/// <quota> left, window resets in <secs> s` (`of <quota>` omitted when not announced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitNote {
    /// `scheme://host[:port]` of the server.
    pub origin: String,
    /// The quota's bucket (`api`, `resolvers`, `pages`, ...).
    pub bucket: String,
    /// Requests left in the window.
    pub remaining: u64,
    /// The window's quota, when announced.
    pub quota: Option<u64>,
    /// When the window resets.
    pub reset_in: Duration,
}

impl RateLimitNote {
    const PREFIX: &'static str = "rate limited by ";

    /// The reason text.
    pub fn reason(&self) -> String {
        let quota = self.quota.map(|q| format!(" of {q}")).unwrap_or_default();
        format!(
            "{}{}: \"{}\" {}{quota} left, window resets in {} s",
            Self::PREFIX,
            self.origin,
            self.bucket,
            self.remaining,
            self.reset_in.as_secs_f64().ceil() as u64
        )
    }

    /// The `RETRY` event for item `index`: a wait of `reset_in`.
    pub fn event(&self, index: u32, attempt: u32, max_attempts: u32) -> ProgressEvent {
        RetryNote::new(self.reason(), self.reset_in, attempt, max_attempts).event(index)
    }

    /// Decodes the reason of a [`RetryNote`]; `None` for any other reason.
    pub fn parse(reason: &str) -> Option<Self> {
        let rest = reason.strip_prefix(Self::PREFIX)?;
        let (origin, rest) = rest.split_once(": \"")?;
        let (bucket, rest) = rest.split_once("\" ")?;
        let (counts, rest) = rest.split_once(" left, window resets in ")?;
        let secs: u64 = rest.strip_suffix(" s")?.parse().ok()?;
        let (remaining, quota) = match counts.split_once(" of ") {
            Some((r, q)) => (r.parse().ok()?, Some(q.parse().ok()?)),
            None => (counts.parse().ok()?, None),
        };
        Some(Self {
            origin: origin.to_owned(),
            bucket: bucket.to_owned(),
            remaining,
            quota,
            reset_in: Duration::from_secs(secs),
        })
    }
}

/// `(head, delay_ms, attempt, max)` of `"<head>; retrying in <ms> ms (attempt <n>/<max>)"`.
fn split_suffix(message: &str) -> Option<(&str, u64, u32, u32)> {
    let before = message.strip_suffix(')')?;
    let (before, counts) = before.rsplit_once(" ms (attempt ")?;
    let (attempt, max) = counts.split_once('/')?;
    let (head, delay) = before.rsplit_once("; retrying in ")?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(delay) || !all_digits(attempt) || !all_digits(max) {
        return None;
    }
    Some((
        head,
        delay.parse().ok()?,
        attempt.parse().ok()?,
        max.parse().ok()?,
    ))
}

/// The `Capabilities::extra_json` key naming the origin (`scheme://host[:port]`) a backend
/// resolves repositories through. Backends that resolve through the same origin fail the same
/// way when it is unreachable: the host asks the next one only if its origin differs.
pub const RESOLVES_VIA: &str = "resolves_via";

/// The origin in a capabilities `extra_json` (see [`RESOLVES_VIA`]), if any.
pub fn resolves_via(extra_json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(extra_json).ok()?;
    let origin = v.get(RESOLVES_VIA)?.as_str()?.trim().trim_end_matches('/');
    (!origin.is_empty()).then(|| origin.to_ascii_lowercase())
}

/// The `FileDone::extra_json` key with the file bytes a backend took from disk instead of the
/// network (chunks already on disk): the host reports them as saved, and a `bytes_transferred`
/// of 0 with local bytes means "nothing crossed the network", not "unknown".
pub const LOCAL_BYTES: &str = "local_bytes";

/// The local bytes in a `FileDone::extra_json` (see [`LOCAL_BYTES`]); 0 when absent.
pub fn local_bytes(extra_json: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(extra_json)
        .ok()
        .and_then(|v| v.get(LOCAL_BYTES)?.as_u64())
        .unwrap_or(0)
}

/// The `Capabilities::extra_json` key listing the URL schemes (`["s3"]`) a backend can export
/// to through the [`export`] `call` methods.
pub const EXPORT: &str = "export";

/// The export schemes in a capabilities `extra_json` (see [`EXPORT`]).
pub fn export_schemes(extra_json: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(extra_json)
        .ok()
        .and_then(|v| v.get(EXPORT)?.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| s.as_str().map(str::to_ascii_lowercase))
        .collect()
}

/// `hubget export`: the host drives, a store plugin uploads, through `Backend::call`. Each
/// method takes one JSON request and answers one JSON [`Uploaded`](export::Uploaded); a plugin
/// that does not export answers `UNSUPPORTED`.
///
/// The layout under the destination URL `<scheme>://<bucket>/<prefix>` (the Hugging Face cache
/// names, so that a node can also read it as a cache):
///
/// ```text
/// <prefix>/<repo folder>/blobs/<etag>                 the file content
/// <prefix>/<repo folder>/manifests/<commit>.json      the resolved file list (Manifest below)
/// <prefix>/<repo folder>/refs/<revision>              the commit, no newline
/// ```
pub mod export {
    use serde::{Deserialize, Serialize};

    /// Uploads one blob (skipped when an object of the right size is there already).
    pub const BLOB: &str = "export.blob";
    /// Writes one commit's manifest.
    pub const MANIFEST: &str = "export.manifest";
    /// Points a ref at a commit.
    pub const REF: &str = "export.ref";

    /// Request of [`BLOB`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Blob {
        /// The destination, `<scheme>://<bucket>/<prefix>`.
        pub to: String,
        /// `models--org--name`.
        pub repo_folder: String,
        /// The blob name (sha256 or git oid).
        pub etag: String,
        /// The verified local file to upload.
        pub path: String,
        /// Its size.
        pub size: u64,
    }

    /// Request of [`MANIFEST`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ManifestObject {
        /// The destination.
        pub to: String,
        /// `models--org--name`.
        pub repo_folder: String,
        /// The manifest.
        pub manifest: Manifest,
    }

    /// Request of [`REF`].
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RefObject {
        /// The destination.
        pub to: String,
        /// `models--org--name`.
        pub repo_folder: String,
        /// A branch, tag or `refs/pr/N`.
        pub revision: String,
        /// The 40-hex commit.
        pub commit: String,
    }

    /// A commit's file list, as stored in `manifests/<commit>.json`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Manifest {
        /// The 40-hex commit.
        pub commit: String,
        /// Every file of the commit.
        pub files: Vec<File>,
    }

    /// One file of a [`Manifest`] (also one file of `hubget.lock`).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct File {
        /// Path in the repository.
        pub path: String,
        /// Size.
        pub size: u64,
        /// Git object id.
        pub git_oid: String,
        /// sha256, for LFS and Xet files.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub sha256: Option<String>,
        /// Xet hash, for Xet files.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub xet_hash: Option<String>,
    }

    impl File {
        /// A manifest file as data.
        pub fn of(f: &crate::ManifestFile) -> Self {
            Self {
                path: f.path.to_string(),
                size: f.size,
                git_oid: f.git_oid.to_string(),
                sha256: f.sha256.as_ref().map(|s| s.to_string()).into_option(),
                xet_hash: f.xet_hash.as_ref().map(|s| s.to_string()).into_option(),
            }
        }

        /// Back to a manifest file (what a backend fetches by).
        pub fn manifest_file(&self) -> crate::ManifestFile {
            crate::ManifestFile {
                path: self.path.as_str().into(),
                size: self.size,
                git_oid: self.git_oid.as_str().into(),
                sha256: self.sha256.as_deref().map(Into::into).into(),
                xet_hash: self.xet_hash.as_deref().map(Into::into).into(),
            }
        }
    }

    /// The answer of every export method.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Uploaded {
        /// Bytes sent to the store (0 when skipped).
        pub bytes: u64,
        /// The object was there already with the right size.
        pub skipped: bool,
        /// The object's URL (`<scheme>://<bucket>/<key>`), for messages.
        pub object: String,
    }

    impl Manifest {
        /// Reads a manifest object's text for `commit`: the one decoder of what a bucket holds
        /// (malformed JSON, or a manifest naming another commit, is an error that says so).
        pub fn parse(text: &str, commit: &str) -> Result<Self, String> {
            let m: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
            if m.commit != commit {
                return Err(format!("names commit {}", m.commit));
            }
            Ok(m)
        }
    }

    /// Reads a ref object's text: the 40-hex commit it names (whitespace around it allowed).
    pub fn parse_ref(text: &str) -> Result<String, String> {
        let commit = text.trim();
        if crate::is_commit_sha(commit) {
            Ok(commit.to_owned())
        } else {
            Err("not a commit sha".to_owned())
        }
    }

    /// The fuzz entry point of the export layout's decoders: `data` as a ref and as a
    /// manifest (hubget's `fuzz/bucket` target and its corpus replay).
    #[doc(hidden)]
    pub fn fuzz_bucket(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let _ = parse_ref(text);
        let _ = Manifest::parse(text, &"0".repeat(40));
        if let Ok(m) = serde_json::from_str::<Manifest>(text) {
            let _ = Manifest::parse(text, &m.commit)
                .map(|m| m.files.iter().map(File::manifest_file).count());
        }
    }

    /// The blob key of a file: `<repo folder>/blobs/<etag>`.
    pub fn blob_key(repo_folder: &str, etag: &str) -> String {
        format!("{repo_folder}/blobs/{etag}")
    }

    /// The manifest key of a commit.
    pub fn manifest_key(repo_folder: &str, commit: &str) -> String {
        format!("{repo_folder}/manifests/{commit}.json")
    }

    /// The key of a ref.
    pub fn ref_key(repo_folder: &str, revision: &str) -> String {
        format!("{repo_folder}/refs/{revision}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_ranges_sorts_and_joins_overlapping_and_adjacent_ranges() {
        assert_eq!(
            merge_ranges(vec![20..30, 0..5, 5..8, 25..40, 50..50, 45..48]),
            vec![0..8, 20..40, 45..48]
        );
    }

    #[test]
    fn holes_are_what_written_ranges_leave_of_the_remainder() {
        assert_eq!(holes(10, 100, &[]), vec![10..100]);
        assert_eq!(
            holes(10, 100, &[0..20, 50..60, 90..120]),
            vec![20..50, 60..90]
        );
        assert_eq!(holes(10, 100, &[0..60, 60..100]), Vec::<Range<u64>>::new());
    }

    #[test]
    fn fetch_options_round_trip_and_clip_per_item() {
        let mut o = FetchOptions::default();
        assert_eq!(o.to_json(), "");
        o.written_ranges.insert(3, vec![10..20, 40..50]);
        let json = o.to_json();
        assert_eq!(json, r#"{"written_ranges":{"3":[[10,20],[40,50]]}}"#);
        let back = FetchOptions::parse(&json);
        assert_eq!(back, o);
        assert_eq!(back.written_for(3, 15, 45), vec![15..20, 40..45]);
        assert!(back.written_for(0, 0, 100).is_empty());
    }

    #[test]
    fn malformed_fetch_options_read_as_none() {
        for bad in [
            "",
            "nope",
            "[]",
            r#"{"written_ranges":5}"#,
            r#"{"written_ranges":{"x":[[1,2]]}}"#,
        ] {
            assert_eq!(FetchOptions::parse(bad), FetchOptions::default(), "{bad}");
        }
        let partly = FetchOptions::parse(r#"{"written_ranges":{"1":[[1,2],["a",3],[5]]}}"#);
        assert_eq!(partly.written_ranges[&1], vec![1..2]);
    }

    #[test]
    fn range_written_round_trips_and_rejects_garbage() {
        let e = RangeWritten { start: 5, end: 9 }.event(2);
        assert_eq!(e.kind, EventKind::RANGE_WRITTEN);
        assert_eq!(e.index, 2);
        assert_eq!(
            RangeWritten::parse(&e.message),
            Some(RangeWritten { start: 5, end: 9 })
        );
        for bad in [
            "",
            "{}",
            r#"{"start":9,"end":5}"#,
            r#"{"start":-1,"end":5}"#,
        ] {
            assert_eq!(RangeWritten::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resolves_via_reads_the_origin_or_nothing() {
        assert_eq!(
            resolves_via(r#"{"resolves_via":"https://HF.co/","x":1}"#).as_deref(),
            Some("https://hf.co")
        );
        for none in ["", "{}", r#"{"resolves_via":5}"#, r#"{"resolves_via":" "}"#] {
            assert_eq!(resolves_via(none), None, "{none}");
        }
    }

    #[test]
    fn rate_limit_note_round_trips_inside_a_retry_note() {
        let note = RateLimitNote {
            origin: "http://127.0.0.1:4321".into(),
            bucket: "resolvers".into(),
            remaining: 0,
            quota: Some(3000),
            reset_in: Duration::from_secs(189),
        };
        let event = note.event(3, 1, 1);
        assert_eq!(event.kind, EventKind::RETRY);
        let retry = RetryNote::parse(event.message.as_str());
        assert_eq!(retry.delay, Some(Duration::from_secs(189)));
        assert_eq!(RateLimitNote::parse(&retry.reason), Some(note.clone()));
        let unannounced = RateLimitNote {
            quota: None,
            ..note
        };
        assert_eq!(
            RateLimitNote::parse(&unannounced.reason()),
            Some(unannounced)
        );
        assert_eq!(RateLimitNote::parse("GET /x: 503"), None);
        assert_eq!(
            RateLimitNote::parse("rate limited by x: \"api\" lots left"),
            None
        );
    }

    #[test]
    fn retry_note_round_trips() {
        let n = RetryNote::new(
            "GET http://127.0.0.1:4321/lfs/ab12: 503 Service Unavailable",
            Duration::from_millis(200),
            2,
            5,
        );
        let m = n.message();
        assert_eq!(
            m,
            "GET http://127.0.0.1:4321/lfs/ab12: 503 Service Unavailable; retrying in 200 ms (attempt 2/5)"
        );
        assert_eq!(RetryNote::parse(&m), n);
        assert_eq!(RetryNote::parse(&n.event(0).message), n);
    }

    #[test]
    fn retry_note_without_the_suffix_keeps_only_the_reason() {
        for m in [
            "refreshing the download URL after: 403 Forbidden",
            "retrying in a while (attempt 2/5)",
            "x; retrying in 200 ms (attempt 2/5) and more",
            "x; retrying in -1 ms (attempt 2/5)",
            "x; retrying in 200 ms (attempt two/5)",
            "x; retrying in 200 ms (attempt 2/)",
        ] {
            let n = RetryNote::parse(m);
            assert_eq!(n.reason, m);
            assert_eq!(n.delay, None, "{m}");
            assert_eq!(n.attempt, None, "{m}");
        }
    }
}
