//! The CAS download protocol, spoken through hub-http's client (so the host's proxy, CA bundle,
//! timeouts and bandwidth cap apply): reconstruction queries and xorb range fetches, decoded
//! chunk by chunk with xet-core's chunk codec.
//!
//! * [`Cas::reconstruction`] asks `GET {cas}/v2/reconstructions/{hash}` as xet-core does (with
//!   `Range` for a part of the file), and `/v1/` when the CAS has no V2 route (404, 501): the
//!   terms (xorb, chunk range, unpacked length) and, per xorb, the presigned URLs and byte
//!   ranges that hold those chunks (V2: one URL per xorb for all its ranges).
//! * [`RangeWriter`] takes the raw bytes of one fetched xorb range, decodes each complete chunk
//!   once (bounded by its header's declared length), passes over the chunks no term needs, and
//!   writes each chunk to every term it serves, at its place in the file.
//!
//! The CAS token is the Hub's short-lived Xet read token ([`crate::token`]); [`Cas`] has it
//! renewed before it expires and once when the CAS answers 401.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use hubget_hub_http::reqwest::header::{AUTHORIZATION, HeaderValue, RANGE};
use hubget_hub_http::{HubApi, Request, XetToken};
use hubget_plugin_api::{CancelToken, ErrorKind, PluginError, RepoType};

use crate::token::Tokens;
use serde::Deserialize;
use xet_core_structures::xorb_object::{
    CompressionScheme, XORB_CHUNK_HEADER_LENGTH, parse_chunk_header,
};

/// Files per batch reconstruction query (64 hex digits each: the URL stays near 4 KiB).
const BATCH_FILES: usize = 50;

/// A token is renewed when it has fewer than this many seconds left.
const RENEW_BEFORE_SECS: u64 = 60;

/// Chunk indices `[start, end)` in a xorb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ChunkRange {
    /// First chunk.
    pub start: u32,
    /// One past the last chunk.
    pub end: u32,
}

/// Bytes `[start, end]` (inclusive, as the CAS writes them) of a xorb object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct UrlRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

/// One reconstruction term: chunks `range` of xorb `hash`, `unpacked_length` bytes decoded.
#[derive(Debug, Clone, Deserialize)]
pub struct WireTerm {
    /// The xorb hash (hex).
    pub hash: String,
    /// Decoded bytes of the term.
    pub unpacked_length: u64,
    /// The chunks of the xorb it takes.
    pub range: ChunkRange,
}

/// Where the chunks `range` of a xorb can be fetched.
#[derive(Debug, Clone, Deserialize)]
pub struct FetchInfo {
    /// The chunks the URL range holds.
    pub range: ChunkRange,
    /// Presigned URL of the xorb object.
    pub url: String,
    /// The bytes of the object that hold those chunks.
    pub url_range: UrlRange,
}

/// The CAS's answer for (a range of) a file.
#[derive(Debug, Clone, Deserialize)]
pub struct Reconstruction {
    /// Decoded bytes of the first term before the requested start.
    #[serde(default)]
    pub offset_into_first_range: u64,
    /// The terms, in file order.
    pub terms: Vec<WireTerm>,
    /// Per xorb hash, where its chunks are.
    #[serde(default)]
    pub fetch_info: HashMap<String, Vec<FetchInfo>>,
}

impl Reconstruction {
    /// Parses a V1 CAS answer and refuses one whose numbers cannot be right: a term or fetch
    /// range of no chunks (or backwards), a byte range that ends before it starts.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let r: Self = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        r.checked()
    }

    /// Parses a V2 answer (per xorb, signed URLs each covering several byte ranges) into the
    /// same terms and fetch ranges: each range is fetched with its URL and its own single
    /// `Range` (as xet-core does below its multi-range thresholds; the signed URL serves any
    /// range of its xorb).
    pub fn parse_v2(body: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct V2 {
            #[serde(default)]
            offset_into_first_range: u64,
            terms: Vec<WireTerm>,
            #[serde(default)]
            xorbs: HashMap<String, Vec<MultiRange>>,
        }
        #[derive(Deserialize)]
        struct MultiRange {
            url: String,
            ranges: Vec<RangeDescriptor>,
        }
        #[derive(Deserialize)]
        struct RangeDescriptor {
            chunks: ChunkRange,
            bytes: UrlRange,
        }
        let v2: V2 = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let fetch_info = v2
            .xorbs
            .into_iter()
            .map(|(hash, fetches)| {
                let infos = fetches
                    .into_iter()
                    .flat_map(|f| {
                        let url = f.url;
                        f.ranges.into_iter().map(move |r| FetchInfo {
                            range: r.chunks,
                            url: url.clone(),
                            url_range: r.bytes,
                        })
                    })
                    .collect();
                (hash, infos)
            })
            .collect();
        Self {
            offset_into_first_range: v2.offset_into_first_range,
            terms: v2.terms,
            fetch_info,
        }
        .checked()
    }

    fn checked(self) -> Result<Self, String> {
        let r = self;
        if let Some(t) = r.terms.iter().find(|t| t.range.start >= t.range.end) {
            return Err(format!(
                "a term of xorb {} takes chunks {}..{}",
                t.hash, t.range.start, t.range.end
            ));
        }
        for (hash, infos) in &r.fetch_info {
            for f in infos {
                if f.range.start >= f.range.end || f.url_range.start > f.url_range.end {
                    return Err(format!(
                        "xorb {hash}: chunks {}..{} at bytes {}-{}",
                        f.range.start, f.range.end, f.url_range.start, f.url_range.end
                    ));
                }
            }
        }
        Ok(r)
    }

    /// Where the chunks of `term` can be fetched: the fetch range that holds all of them.
    pub fn source_of(&self, term: &WireTerm) -> Option<&FetchInfo> {
        self.fetch_info
            .get(&term.hash)
            .or_else(|| self.fetch_info.get(&term.hash.to_ascii_lowercase()))?
            .iter()
            .find(|f| f.range.start <= term.range.start && term.range.end <= f.range.end)
    }
}

/// The CAS of one repository revision: its URL and the backend's shared token for it.
pub struct Cas {
    hub: HubApi,
    tokens: Arc<Tokens>,
    key: crate::token::Key,
    url: String,
    /// Set once the CAS answered the V2 route 404 or 501: V1 from then on (shared by the
    /// backend's calls).
    v1_only: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Cas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cas")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Cas {
    /// The CAS named by `token` (from the Hub's xet-read-token route of `repo_id` at
    /// `revision`), with a token store of its own.
    pub fn new(
        hub: HubApi,
        repo_type: RepoType,
        repo_id: &str,
        revision: &str,
        token: XetToken,
    ) -> Self {
        let key = crate::token::key(repo_type, repo_id, revision);
        let tokens = Arc::new(Tokens::seeded(hub.clone(), key.clone(), token.clone()));
        Self::shared(hub, tokens, key, &token, Arc::default())
    }

    /// The CAS named by `token`, renewing through the backend's shared `tokens`; `v1_only` is
    /// the backend's memory of a CAS without V2 reconstructions.
    pub fn shared(
        hub: HubApi,
        tokens: Arc<Tokens>,
        key: crate::token::Key,
        token: &XetToken,
        v1_only: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            hub,
            tokens,
            key,
            url: token.cas_url.trim_end_matches('/').to_owned(),
            v1_only,
        }
    }

    /// The CAS base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP client (the host's network stack).
    pub fn client(&self) -> &hubget_hub_http::HttpClient {
        self.hub.client()
    }

    /// The current token, renewed (single-flight, shared) when it is about to expire or when
    /// the CAS refused `refused`.
    async fn bearer(
        &self,
        refused: Option<&str>,
        cancel: &CancelToken,
    ) -> Result<String, PluginError> {
        self.tokens
            .get(&self.key, RENEW_BEFORE_SECS, refused, cancel)
            .await
            .map(|t| t.access_token)
            .map_err(|e| e.context("renewing the Xet CAS token"))
    }

    /// The terms of file `hash` for bytes `range` (the whole file when `None`), as xet-core
    /// asks: `GET /v2/reconstructions/{hash}` first (one signed URL per xorb for all of its
    /// ranges), `/v1/` when the CAS answers V2 with 404 or 501 (remembered for this CAS). A 401
    /// renews the token once.
    pub async fn reconstruction(
        &self,
        hash: &str,
        range: Option<Range<u64>>,
        cancel: &CancelToken,
    ) -> Result<Reconstruction, PluginError> {
        use std::sync::atomic::Ordering;
        if !self.v1_only.load(Ordering::Relaxed) {
            match self.query(Version::V2, hash, range.clone(), cancel).await? {
                Some(r) => return Ok(r),
                None => {
                    log::debug!("the CAS has no V2 reconstructions: asking V1");
                    self.v1_only.store(true, Ordering::Relaxed);
                }
            }
        }
        self.query(Version::V1, hash, range, cancel)
            .await?
            .ok_or_else(|| {
                PluginError::new(
                    ErrorKind::NOT_FOUND,
                    format!("the CAS has no reconstruction of {hash}"),
                )
            })
    }

    /// The terms of many files in one request (`GET /v1/reconstructions?file_id=..`, the batch
    /// query xet-core uses), `chunk` files per request; `None` when the CAS has no batch route
    /// (404, 501). Files the CAS does not know are absent from the answer.
    pub async fn batch_terms(
        &self,
        hashes: &[String],
        cancel: &CancelToken,
    ) -> Result<Option<HashMap<String, Vec<WireTerm>>>, PluginError> {
        #[derive(Deserialize)]
        struct Batch {
            #[serde(default)]
            files: HashMap<String, Vec<WireTerm>>,
        }
        let mut out = HashMap::new();
        for chunk in hashes.chunks(BATCH_FILES) {
            let query: Vec<String> = chunk.iter().map(|h| format!("file_id={h}")).collect();
            let url = hubget_hub_http::reqwest::Url::parse(&format!(
                "{}/v1/reconstructions?{}",
                self.url,
                query.join("&")
            ))
            .map_err(|e| PluginError::new(ErrorKind::CONFIG, format!("CAS URL: {e}")))?;
            let Some(body) = self.authorized_get(url, None, cancel).await? else {
                return Ok(None);
            };
            let batch: Batch = serde_json::from_slice(&body).map_err(|e| {
                PluginError::new(
                    ErrorKind::PROTOCOL,
                    format!("bad batch reconstruction: {e}"),
                )
            })?;
            out.extend(batch.files);
        }
        Ok(Some(out))
    }

    /// One reconstruction query; `None` when the route is missing (404, 501).
    async fn query(
        &self,
        version: Version,
        hash: &str,
        range: Option<Range<u64>>,
        cancel: &CancelToken,
    ) -> Result<Option<Reconstruction>, PluginError> {
        let route = match version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        let url = hubget_hub_http::reqwest::Url::parse(&format!(
            "{}/{route}/reconstructions/{hash}",
            self.url
        ))
        .map_err(|e| PluginError::new(ErrorKind::CONFIG, format!("CAS URL: {e}")))?;
        let Some(body) = self.authorized_get(url, range, cancel).await? else {
            return Ok(None);
        };
        let parsed = match version {
            Version::V1 => Reconstruction::parse(&body),
            Version::V2 => Reconstruction::parse_v2(&body),
        };
        parsed.map(Some).map_err(|why| {
            PluginError::new(ErrorKind::PROTOCOL, format!("bad reconstruction: {why}"))
        })
    }

    /// A GET of the CAS API with the token (renewed once on a 401) and an optional `Range`;
    /// the body read with the metadata cap, or `None` when the route is missing (404, 501).
    async fn authorized_get(
        &self,
        url: hubget_hub_http::reqwest::Url,
        range: Option<Range<u64>>,
        cancel: &CancelToken,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let mut refused: Option<String> = None;
        loop {
            let token = self.bearer(refused.as_deref(), cancel).await?;
            let mut request = Request::get(url.clone());
            let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| PluginError::new(ErrorKind::PROTOCOL, format!("CAS token: {e}")))?;
            auth.set_sensitive(true);
            request.headers.insert(AUTHORIZATION, auth);
            if let Some(r) = &range {
                let value = format!("bytes={}-{}", r.start, r.end.saturating_sub(1));
                request
                    .headers
                    .insert(RANGE, HeaderValue::from_str(&value).expect("ASCII"));
            }
            let answer = self.client().send(&request, cancel).await?;
            let context = answer.context();
            let status = answer.response.status();
            if status.as_u16() == 401 && refused.is_none() {
                refused = Some(token);
                continue;
            }
            if matches!(status.as_u16(), 404 | 501) {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(hubget_hub_http::classify(
                    status,
                    answer.response.headers(),
                    &context,
                ));
            }
            // Read with the metadata cap, chunk by chunk (never whole first).
            return self
                .client()
                .read_metadata(answer)
                .await
                .map(|b| Some(b.to_vec()));
        }
    }
}

/// The reconstruction API version of a query.
#[derive(Debug, Clone, Copy)]
enum Version {
    V1,
    V2,
}

/// One term a fetched range serves: its chunks, and the part of its decoded bytes to write.
#[derive(Debug, Clone)]
pub struct Target {
    /// The chunks of the term.
    pub chunks: ChunkRange,
    /// Its expected decoded length.
    pub unpacked: u64,
    /// Decoded bytes of the term to drop before the first one written.
    pub skip: u64,
    /// Where the first written byte goes in the file, and the end of what is wanted.
    pub pos: u64,
    /// One past the last file byte wanted.
    pub end: u64,
    /// Decoded bytes of the term seen so far.
    decoded: u64,
}

impl Target {
    /// The part of `term` from file offset `pos` to `end`, `skip` decoded bytes into it.
    pub fn new(term: &WireTerm, skip: u64, pos: u64, end: u64) -> Self {
        Self {
            chunks: term.range,
            unpacked: term.unpacked_length,
            skip,
            pos,
            end,
            decoded: 0,
        }
    }

    /// Where its next byte goes.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    fn done(&self) -> bool {
        self.pos >= self.end || self.decoded >= self.unpacked
    }
}

/// Decodes the bytes of one fetched xorb range, once, and writes each term it serves (one or
/// several: the spec's range coalescing) at its place in the file.
///
/// Fed the raw xorb bytes as they arrive; keeps an incomplete trailing chunk for the next feed.
/// A chunk no unfinished term needs is passed over without being decoded.
#[derive(Debug)]
pub struct RangeWriter {
    /// Index of the next chunk in the fetched range.
    next_chunk: u32,
    /// The terms served.
    targets: Vec<Target>,
    /// Raw bytes of an incomplete chunk.
    pending: Vec<u8>,
    /// One decoded chunk (kept for the next).
    out: Vec<u8>,
}

/// [`RangeWriter`] for one term.
pub type TermWriter = RangeWriter;

impl RangeWriter {
    /// A writer for `term` alone, fetched from `source`; the first `skip` decoded bytes are
    /// dropped and the rest written from file offset `pos`, up to `end`.
    pub fn new(term: &WireTerm, source: &FetchInfo, skip: u64, pos: u64, end: u64) -> Self {
        Self::serving(source, vec![Target::new(term, skip, pos, end)])
    }

    /// A writer for every term in `targets`, all of whose chunks `source` holds.
    pub fn serving(source: &FetchInfo, targets: Vec<Target>) -> Self {
        Self {
            next_chunk: source.range.start,
            targets,
            pending: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Whether every term is written (or nothing more of the range is needed).
    pub fn done(&self) -> bool {
        self.targets
            .iter()
            .all(|t| t.done() || self.next_chunk >= t.chunks.end)
    }

    /// Where the next byte of the first term goes.
    pub fn pos(&self) -> u64 {
        self.targets.first().map_or(0, |t| t.pos)
    }

    /// The terms, with how far each got.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Decodes the complete chunks of `pending + raw` and writes what each term wants, chunk by
    /// chunk, with `write(at, bytes)`. Returns the bytes written.
    ///
    /// `raw` is taken (left empty, its buffer kept for the next bytes); the writer's own buffers
    /// are reused from feed to feed, so a range costs a few allocations whatever its size, and
    /// memory stays one chunk of decoded bytes whatever the data's compression ratio.
    pub fn feed(
        &mut self,
        raw: &mut Vec<u8>,
        write: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<u64, FeedError> {
        if self.pending.is_empty() {
            std::mem::swap(&mut self.pending, raw);
        } else {
            self.pending.extend_from_slice(raw);
            raw.clear();
        }
        let corrupt = |e: xet_core_structures::CoreError| FeedError::Corrupt(e.to_string());
        let mut written = 0u64;
        let mut out = std::mem::take(&mut self.out);
        let mut at = 0;
        let mut result = Ok(());
        while !self.done() && self.pending.len() - at >= XORB_CHUNK_HEADER_LENGTH {
            let raw_header: [u8; XORB_CHUNK_HEADER_LENGTH] = self.pending
                [at..at + XORB_CHUNK_HEADER_LENGTH]
                .try_into()
                .expect("header length");
            let header =
                parse_chunk_header(raw_header).map_err(|e| header_error(&raw_header, e))?;
            let len = XORB_CHUNK_HEADER_LENGTH + header.get_compressed_length() as usize;
            if self.pending.len() - at < len {
                break;
            }
            let index = self.next_chunk;
            self.next_chunk += 1;
            let wanted = self
                .targets
                .iter()
                .any(|t| !t.done() && t.chunks.start <= index && index < t.chunks.end);
            if !wanted {
                at += len;
                continue;
            }
            // The declared length (validated against the chunk size limit) bounds the decoder:
            // a chunk that would decode to more is refused before it does.
            let declared = u64::from(header.get_uncompressed_length());
            let mut body = &self.pending[at + XORB_CHUNK_HEADER_LENGTH..at + len];
            out.clear();
            let mut bounded = Bounded {
                out: &mut out,
                left: declared,
            };
            let n = header
                .get_compression_scheme()
                .and_then(|scheme| scheme.decompress_from_reader(&mut body, &mut bounded))
                .map_err(corrupt)?;
            if n != declared {
                return Err(FeedError::Corrupt(format!(
                    "a chunk decodes to {n} bytes, its header says {declared}"
                )));
            }
            at += len;
            for t in self.targets.iter_mut() {
                if t.done() || index < t.chunks.start || index >= t.chunks.end {
                    continue;
                }
                let from = t.decoded;
                t.decoded += n;
                if index + 1 >= t.chunks.end && t.decoded != t.unpacked {
                    return Err(FeedError::Corrupt(format!(
                        "the term decodes to {} bytes, the reconstruction says {}",
                        t.decoded, t.unpacked
                    )));
                }
                // This chunk's bytes of the term, past the skip, up to the end wanted.
                let lo = t.skip.max(from);
                if t.decoded <= lo {
                    continue;
                }
                let want = (t.decoded - lo).min(t.end.saturating_sub(t.pos));
                let slice = &out[(lo - from) as usize..(lo - from + want) as usize];
                if want > 0 {
                    result = write(t.pos, slice);
                    if result.is_err() {
                        break;
                    }
                    written += want;
                    t.pos += want;
                }
            }
            if result.is_err() {
                break;
            }
        }
        self.pending.drain(..at);
        out.clear();
        self.out = out;
        result.map(|()| written).map_err(FeedError::Write)
    }
}

/// Fuzzing and corpus-replay entry point: `data` after its first byte as the bytes of a xorb
/// range serving two overlapping terms, fed in pieces of 64 × the first byte. Panics only when
/// an invariant breaks (a write outside what the terms want).
#[doc(hidden)]
pub fn fuzz_feed(data: &[u8]) {
    const MIB: u64 = 1 << 20;
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let source = FetchInfo {
        range: ChunkRange { start: 0, end: 8 },
        url: String::new(),
        url_range: UrlRange { start: 0, end: 0 },
    };
    let term = |start, end| WireTerm {
        hash: String::new(),
        unpacked_length: MIB,
        range: ChunkRange { start, end },
    };
    let targets = vec![
        Target::new(&term(0, 4), 0, 0, MIB),
        Target::new(&term(2, 8), 100, MIB, 2 * MIB),
    ];
    let mut w = RangeWriter::serving(&source, targets);
    let piece = usize::from(split).max(1) * 64;
    for p in rest.chunks(piece) {
        let mut raw = p.to_vec();
        let r = w.feed(&mut raw, &mut |at, bytes| {
            assert!(at + bytes.len() as u64 <= 2 * MIB, "a write past the terms");
            Ok(())
        });
        if r.is_err() || w.done() {
            break;
        }
    }
}

/// A writer that refuses to take more than `left` bytes.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    left: u64,
}

impl std::io::Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(std::io::Error::other(
                "the chunk decodes to more than its header says",
            ));
        }
        self.left -= buf.len() as u64;
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Why a chunk header was refused: a version or compression scheme this client does not know
/// is the same on every attempt (unsupported: the file goes to the next backend at once);
/// anything else is corrupt data (retried).
fn header_error(
    raw: &[u8; XORB_CHUNK_HEADER_LENGTH],
    e: xet_core_structures::CoreError,
) -> FeedError {
    if matches!(e, xet_core_structures::CoreError::ChunkHeaderParse) {
        return FeedError::Corrupt(e.to_string());
    }
    // Header layout: version, compressed length (3 bytes), scheme, uncompressed length (3).
    if raw[0] > 0 {
        return FeedError::Unsupported(format!(
            "chunk header version {} (this client reads version 0)",
            raw[0]
        ));
    }
    if CompressionScheme::try_from(raw[4]).is_err() {
        return FeedError::Unsupported(format!("unknown chunk compression scheme {}", raw[4]));
    }
    FeedError::Corrupt(e.to_string())
}

/// Why fed bytes could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The bytes are not valid chunks, or do not add up to the term.
    #[error("corrupt xorb data: {0}")]
    Corrupt(String),
    /// The data is in a format this client does not read (the same on every attempt).
    #[error("unsupported xorb data: {0}")]
    Unsupported(String),
    /// Writing the decoded bytes failed.
    #[error(transparent)]
    Write(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use xet_core_structures::xorb_object::{CompressionScheme, serialize_chunk};

    /// Chunks of 1000 bytes each (chunk i is all `i as u8`), serialized with LZ4.
    fn xorb(chunks: u8) -> (Vec<u8>, Vec<u8>) {
        let (mut raw, mut plain) = (Vec::new(), Vec::new());
        for i in 0..chunks {
            let data = vec![i; 1000];
            serialize_chunk(&data, &mut raw, CompressionScheme::LZ4).unwrap();
            plain.extend_from_slice(&data);
        }
        (raw, plain)
    }

    fn term(start: u32, end: u32, len: u64) -> (WireTerm, FetchInfo) {
        let range = ChunkRange { start, end };
        let term = WireTerm {
            hash: "0".repeat(64),
            unpacked_length: len,
            range,
        };
        let source = FetchInfo {
            range: ChunkRange { start: 0, end: 5 },
            url: String::new(),
            url_range: UrlRange { start: 0, end: 0 },
        };
        (term, source)
    }

    /// Feeds `raw` in pieces of `piece` bytes; returns the file image (`size` bytes).
    fn run(
        w: &mut TermWriter,
        raw: &[u8],
        piece: usize,
        size: usize,
    ) -> Result<Vec<u8>, FeedError> {
        let mut file = vec![0u8; size];
        for p in raw.chunks(piece) {
            w.feed(&mut p.to_vec(), &mut |at, bytes| {
                file[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
                Ok(())
            })?;
            if w.done() {
                break;
            }
        }
        Ok(file)
    }

    #[test]
    fn a_term_is_decoded_from_its_chunks_whatever_the_piece_size() {
        let (raw, plain) = xorb(5);
        for piece in [1, 7, 100, 4096, raw.len()] {
            // Chunks 1..4 of a fetch range holding 0..5, written from file offset 10.
            let (t, s) = term(1, 4, 3000);
            let mut w = TermWriter::new(&t, &s, 0, 10, 10 + 3000);
            let file = run(&mut w, &raw, piece, 3010).unwrap();
            assert!(w.done());
            assert_eq!(w.pos(), 3010);
            assert_eq!(&file[10..], &plain[1000..4000], "piece {piece}");
        }
    }

    #[test]
    fn one_range_decoded_once_serves_every_term_that_uses_it() {
        let (raw, plain) = xorb(5);
        let (_, source) = term(0, 5, 5000);
        // Chunks 0..2 at file offset 0, and chunks 1..4 (overlapping) at file offset 2000,
        // starting 500 bytes into that term.
        let first = WireTerm {
            hash: "0".repeat(64),
            unpacked_length: 2000,
            range: ChunkRange { start: 0, end: 2 },
        };
        let second = WireTerm {
            hash: "0".repeat(64),
            unpacked_length: 3000,
            range: ChunkRange { start: 1, end: 4 },
        };
        let targets = vec![
            Target::new(&first, 0, 0, 2000),
            Target::new(&second, 500, 2000, 4500),
        ];
        let mut w = RangeWriter::serving(&source, targets);
        let file = run(&mut w, &raw, 700, 4500).unwrap();
        assert!(w.done());
        assert_eq!(&file[..2000], &plain[..2000]);
        assert_eq!(&file[2000..], &plain[1500..4000]);
        assert_eq!(w.targets()[1].pos(), 4500);
    }

    #[test]
    fn the_skip_and_the_end_trim_the_first_and_last_chunk() {
        let (raw, plain) = xorb(5);
        let (t, s) = term(0, 5, 5000);
        // Start 1500 bytes into the term, stop 1000 bytes later.
        let mut w = TermWriter::new(&t, &s, 1500, 0, 1000);
        let file = run(&mut w, &raw, 333, 1000).unwrap();
        assert!(w.done());
        assert_eq!(&file[..], &plain[1500..2500]);
    }

    #[test]
    fn a_term_that_decodes_to_another_length_is_corrupt() {
        let (raw, _) = xorb(5);
        let (t, s) = term(0, 2, 2001);
        let mut w = TermWriter::new(&t, &s, 0, 0, 2001);
        assert!(matches!(
            run(&mut w, &raw, 4096, 2001),
            Err(FeedError::Corrupt(_))
        ));
    }

    #[test]
    fn a_reconstruction_with_backwards_ranges_is_refused() {
        let answer = |chunks: (u32, u32), bytes: (u64, u64)| {
            serde_json::json!({
                "offset_into_first_range": 0,
                "terms": [{"hash": "ab", "unpacked_length": 10, "range": {"start": 0, "end": 1}}],
                "fetch_info": {"ab": [{
                    "range": {"start": chunks.0, "end": chunks.1},
                    "url": "http://x/",
                    "url_range": {"start": bytes.0, "end": bytes.1}
                }]}
            })
            .to_string()
        };
        assert!(Reconstruction::parse(answer((0, 1), (0, 99)).as_bytes()).is_ok());
        for (chunks, bytes) in [((0, 1), (100, 99)), ((1, 1), (0, 9)), ((2, 1), (0, 9))] {
            let why = Reconstruction::parse(answer(chunks, bytes).as_bytes()).unwrap_err();
            assert!(why.contains("xorb ab"), "{why}");
        }
    }

    #[test]
    fn garbage_instead_of_chunks_is_corrupt() {
        let (t, s) = term(0, 1, 1000);
        let mut w = TermWriter::new(&t, &s, 0, 0, 1000);
        // A version-0 LZ4 header with impossible lengths, then noise.
        let mut garbage = vec![0, 0xFF, 0xFF, 0xFF, 1, 0xFF, 0xFF, 0xFF];
        garbage.extend_from_slice(&[0xFFu8; 56]);
        assert!(matches!(
            run(&mut w, &garbage, 64, 1000),
            Err(FeedError::Corrupt(_))
        ));
    }

    #[test]
    fn an_unknown_header_version_or_compression_scheme_is_unsupported_not_corrupt() {
        for (byte, value, what) in [(0, 1u8, "version 1"), (4, 7u8, "scheme 7")] {
            let (mut raw, _) = xorb(1);
            raw[byte] = value;
            let (t, s) = term(0, 1, 1000);
            let mut w = TermWriter::new(&t, &s, 0, 0, 1000);
            match run(&mut w, &raw, 4096, 1000) {
                Err(FeedError::Unsupported(why)) => assert!(why.contains(what), "{why}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_chunk_that_decodes_past_its_declared_length_is_refused() {
        let (mut raw, _) = xorb(1);
        // Declare 10 bytes where the chunk holds 1000 (uncompressed length, bytes 5..8).
        raw[5..8].copy_from_slice(&[10, 0, 0]);
        let (t, s) = term(0, 1, 10);
        let mut w = TermWriter::new(&t, &s, 0, 0, 10);
        assert!(matches!(
            run(&mut w, &raw, 4096, 10),
            Err(FeedError::Corrupt(_))
        ));
    }

    #[test]
    fn highly_compressible_data_is_written_in_bounded_pieces() {
        // 512 KiB of LZ4 chunks of zeros decode to far more than they weigh on the wire.
        let (mut raw, mut chunks) = (Vec::new(), 0u32);
        while raw.len() < 512 * 1024 {
            serialize_chunk(&vec![0u8; 64 * 1024], &mut raw, CompressionScheme::LZ4).unwrap();
            chunks += 1;
        }
        let size = u64::from(chunks) * 64 * 1024;
        assert!(size > 32 * 1024 * 1024, "{size}");
        let term = WireTerm {
            hash: "0".repeat(64),
            unpacked_length: size,
            range: ChunkRange {
                start: 0,
                end: chunks,
            },
        };
        let source = FetchInfo {
            range: ChunkRange {
                start: 0,
                end: chunks,
            },
            url: String::new(),
            url_range: UrlRange { start: 0, end: 0 },
        };
        let mut w = TermWriter::new(&term, &source, 0, 0, size);
        let (mut largest, mut total) = (0usize, 0u64);
        w.feed(&mut raw, &mut |_, bytes| {
            largest = largest.max(bytes.len());
            total += bytes.len() as u64;
            Ok(())
        })
        .unwrap();
        assert_eq!(total, size);
        assert!(largest <= 4 * 1024 * 1024 + 64 * 1024, "{largest}");
    }
}
