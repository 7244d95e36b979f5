//! The HTTP client every first-party plugin uses, built from [`HostSettings`]; it follows
//! redirects itself so that credentials go only where they belong.
//!
//! reqwest's own redirect policy is switched off. [`HttpClient::send`] follows up to
//! [`MAX_REDIRECTS`] hops and, on every hop, attaches
//! * the [`Credential`] (the Hub token as `Authorization: Bearer`) only when the hop's origin
//!   (scheme, host, port) equals the credential's origin (the configured Hub endpoint);
//! * the request's `origin_headers` (e.g. the headers of a Git LFS batch action) only when the
//!   hop's origin equals the origin of the URL the request started at;
//! * its plain `headers` (`Range`, `Accept`) everywhere.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use hubget_plugin_api::{CancelToken, ErrorKind, HostSettings, PluginError};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, Response, StatusCode, Url};

use crate::error::{classify_transport, redact_url, request_context};
pub use crate::origin::{origin_of, same_origin};
use crate::retry::{RetryPolicy, cancellable};

/// Redirect hops followed per request.
pub const MAX_REDIRECTS: usize = 10;

/// A bearer token bound to one origin: it is sent only to URLs of that origin.
#[derive(Clone)]
pub struct Credential {
    origin: Url,
    header: HeaderValue,
}

impl Credential {
    /// Binds `token` to the origin of `endpoint`.
    pub fn new(endpoint: &Url, token: &str) -> Result<Self, PluginError> {
        let mut header =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                PluginError::new(
                    ErrorKind::CONFIG,
                    "the token contains characters not allowed in a header",
                )
            })?;
        header.set_sensitive(true);
        Ok(Self {
            origin: endpoint.clone(),
            header,
        })
    }

    /// Whether the token may be sent to `url`: same scheme, host and port as the endpoint.
    pub fn applies_to(&self, url: &Url) -> bool {
        same_origin(&self.origin, url)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Credential({} <redacted>)",
            self.origin.origin().ascii_serialization()
        )
    }
}

/// One HTTP request, before redirects.
#[derive(Clone, Debug)]
pub struct Request {
    /// The method; a 303 turns it into `GET` without a body.
    pub method: Method,
    /// Where the request starts.
    pub url: Url,
    /// Headers sent on every hop (`Range`, `Accept`, `Content-Type`).
    pub headers: HeaderMap,
    /// Headers sent only to the origin of `url` (e.g. a batch action's `header`).
    pub origin_headers: HeaderMap,
    /// The token, sent only to its own origin.
    pub credential: Option<Credential>,
    /// A request body.
    pub body: Option<Bytes>,
}

impl Request {
    /// A request with no headers, credential or body.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            origin_headers: HeaderMap::new(),
            credential: None,
            body: None,
        }
    }

    /// A `GET` of `url`.
    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url)
    }

    /// Adds a header sent on every hop.
    #[must_use]
    pub fn header(mut self, name: reqwest::header::HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the credential (sent only to its origin).
    #[must_use]
    pub fn credential(mut self, credential: Option<Credential>) -> Self {
        self.credential = credential;
        self
    }

    /// `"<METHOD> <redacted url>"`.
    pub fn context(&self) -> String {
        request_context(&self.method, &self.url)
    }
}

/// A response after redirects, with the URL that answered it.
#[derive(Debug)]
pub struct Answer {
    /// The response (any status; classify errors with [`crate::classify`]).
    pub response: Response,
    /// The URL of the last hop.
    pub url: Url,
    /// The method of the last hop.
    pub method: Method,
}

impl Answer {
    /// `"<METHOD> <redacted url of the last hop>"`.
    pub fn context(&self) -> String {
        request_context(&self.method, &self.url)
    }
}

/// The shared HTTP client: a reqwest client configured from [`HostSettings`] (user agent,
/// proxy, extra CA bundle, connect and read timeouts; no automatic redirects; HTTP/1.1, so that
/// parallel ranges use parallel connections) plus the retry policy. Cheap to clone.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
    retry: RetryPolicy,
    /// The plugin's bandwidth budget (`HostSettings::limit_rate`), shared by clones.
    limiter: Option<std::sync::Arc<crate::rate::RateLimiter>>,
    /// The largest metadata answer read (`HostSettings::max_metadata_bytes`).
    max_metadata_bytes: u64,
    /// The request quotas of the Hub (and of any origin that announces one), shared by clones.
    quotas: std::sync::Arc<crate::quota::Quotas>,
}

impl HttpClient {
    /// Builds the client. The proxy is `settings.proxy` if set (with `NO_PROXY` from the
    /// environment), else reqwest's `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` handling.
    pub fn new(settings: &HostSettings) -> Result<Self, PluginError> {
        let config = |what: &str, e: &dyn fmt::Display| {
            PluginError::new(ErrorKind::CONFIG, format!("{what}: {e}"))
        };
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(settings.user_agent.clone())
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs.max(1)))
            .read_timeout(Duration::from_secs(settings.read_timeout_secs.max(1)))
            .tcp_nodelay(true)
            // Parallel ranges must be parallel TCP connections (per-connection limits are what
            // splitting beats); HTTP/2 would multiplex them onto one.
            .http1_only();
        if let Some(proxy) = settings.proxy.as_deref().filter(|p| !p.trim().is_empty()) {
            let proxy = reqwest::Proxy::all(proxy)
                .map_err(|e| config("invalid proxy URL in the settings", &e.without_url()))?
                .no_proxy(reqwest::NoProxy::from_env());
            builder = builder.proxy(proxy);
        }
        if let Some(path) = &settings.ca_bundle {
            let pem = std::fs::read(path).map_err(|e| {
                config(&format!("cannot read the CA bundle {}", path.display()), &e)
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                config(
                    &format!("invalid PEM in the CA bundle {}", path.display()),
                    &e,
                )
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let inner = builder
            .build()
            .map_err(|e| config("cannot build the HTTP client", &e))?;
        let hub = Url::parse(&settings.endpoint).ok();
        let max_wait = Duration::from_secs(settings.max_rate_limit_wait_secs);
        Ok(Self {
            inner,
            quotas: std::sync::Arc::new(crate::quota::Quotas::new(
                hub,
                settings.cache_dir.as_deref(),
                max_wait,
            )),
            retry: RetryPolicy::from_settings(settings),
            limiter: settings.limit_rate.map(crate::rate::RateLimiter::shared),
            max_metadata_bytes: settings.max_metadata_bytes.max(1),
        })
    }

    /// Counts `n` bytes received against the bandwidth cap, waiting as long as the cap asks.
    pub async fn throttle(&self, n: u64) {
        if let Some(l) = &self.limiter {
            let wait = l.take(n);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The largest metadata (JSON) answer to read, in bytes.
    pub fn max_metadata_bytes(&self) -> u64 {
        self.max_metadata_bytes
    }

    /// Reads a metadata (JSON) answer's body with the size cap, chunk by chunk: a hostile
    /// server cannot make us buffer without bound, whatever its `Content-Length` says.
    pub async fn read_metadata(&self, answer: Answer) -> Result<Bytes, PluginError> {
        let context = answer.context();
        let cap = self.max_metadata_bytes;
        let mut response = answer.response;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| classify_transport(&e, &context))?
        {
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(crate::error::protocol(
                    &context,
                    format!(
                        "the answer is larger than {} MiB: refusing it \
                         (raise `max_metadata_mib` in [network] if this server is trusted)",
                        cap.div_ceil(1 << 20)
                    ),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(body))
    }

    /// The retry policy from the settings.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// The underlying reqwest client (no redirects, no credentials: prefer [`Self::send`]).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Sends `request` once (no retries), following redirects by the origin rules of this
    /// module. Returns the last response whatever its status; transport failures are
    /// classified. Rate limits are waits ([`crate::quota`]), logged as warnings. Cancellable.
    pub async fn send(
        &self,
        request: &Request,
        cancel: &CancelToken,
    ) -> Result<Answer, PluginError> {
        self.send_observed(request, cancel, &crate::quota::log_wait)
            .await
    }

    /// [`Self::send`], telling `on_wait` of every rate-limit wait before it starts: a hop to a
    /// metered bucket waits while the shared budget is spent, and a 429 that announces its
    /// window is waited out and the hop sent again, up to the longest wait in the settings.
    pub async fn send_observed(
        &self,
        request: &Request,
        cancel: &CancelToken,
        on_wait: crate::quota::WaitObserver<'_>,
    ) -> Result<Answer, PluginError> {
        let start_origin = request.url.clone();
        let mut method = request.method.clone();
        let mut url = request.url.clone();
        let mut body = request.body.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut headers = request.headers.clone();
            if same_origin(&start_origin, &url) {
                for (name, value) in &request.origin_headers {
                    headers.insert(name.clone(), value.clone());
                }
            }
            if let Some(cred) = &request.credential
                && cred.applies_to(&url)
            {
                headers.insert(AUTHORIZATION, cred.header.clone());
            } else if !same_origin(&start_origin, &url) {
                // An `Authorization` from the origin headers never leaves its origin either.
                headers.remove(AUTHORIZATION);
            }
            let mut builder = self
                .inner
                .request(method.clone(), url.clone())
                .headers(headers);
            if let Some(body) = &body {
                builder = builder.body(body.clone());
            }
            let context = request_context(&method, &url);
            let response = self
                .send_metered(builder, &url, cancel, on_wait)
                .await
                .map_err(|e| match e {
                    Metered::Transport(e) => classify_transport(&e, &context),
                    Metered::Plugin(e) => e,
                })?;
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok(Answer {
                    response,
                    url,
                    method,
                });
            }
            let Some(location) = response.headers().get(LOCATION) else {
                return Ok(Answer {
                    response,
                    url,
                    method,
                });
            };
            let next = location
                .to_str()
                .ok()
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    crate::error::protocol(&context, format!("{status} with an invalid Location"))
                })?;
            if !matches!(next.scheme(), "http" | "https") {
                return Err(crate::error::protocol(
                    &context,
                    format!("redirect to a non-HTTP URL {}", redact_url(&next)),
                ));
            }
            if status == StatusCode::SEE_OTHER
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == Method::POST)
            {
                method = Method::GET;
                body = None;
            }
            log::debug!("{context}: {status} -> {}", redact_url(&next));
            url = next;
        }
        Err(crate::error::protocol(
            &request.context(),
            format!("more than {MAX_REDIRECTS} redirects"),
        ))
    }
}

/// Why a metered hop failed.
enum Metered {
    Transport(reqwest::Error),
    Plugin(PluginError),
}

impl From<PluginError> for Metered {
    fn from(e: PluginError) -> Self {
        Metered::Plugin(e)
    }
}

impl HttpClient {
    /// Sends one hop within its bucket's budget: waits while the budget is spent, records what
    /// the answer announced, and sends again after waiting out a 429 that announced its window.
    async fn send_metered(
        &self,
        builder: reqwest::RequestBuilder,
        url: &Url,
        cancel: &CancelToken,
        on_wait: crate::quota::WaitObserver<'_>,
    ) -> Result<Response, Metered> {
        let quotas = &self.quotas;
        let bucket = quotas.bucket_of(url);
        let mut waited = Duration::ZERO;
        loop {
            let ticket = match bucket {
                Some(b) => Some(quotas.acquire(url, b, &mut waited, cancel, on_wait).await?),
                None => None,
            };
            let attempt = builder.try_clone().map(|b| b.send()).ok_or_else(|| {
                PluginError::new(ErrorKind::OTHER, "a request body that cannot be sent twice")
            })?;
            let response = match cancellable(cancel, attempt).await? {
                Ok(r) => r,
                Err(e) => {
                    quotas.settle(ticket, url, StatusCode::OK, &HeaderMap::new());
                    return Err(Metered::Transport(e));
                }
            };
            let status = response.status();
            let Some((wait, note)) = quotas.settle(ticket, url, status, response.headers()) else {
                return Ok(response);
            };
            if waited + wait > quotas.max_wait() {
                return Err(quotas.spent(&note).into());
            }
            on_wait(&note);
            drop(response);
            crate::retry::sleep(cancel, wait).await?;
            waited += wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn credential_goes_only_to_its_origin() {
        let cred = Credential::new(&url("https://huggingface.co"), "hf_x").unwrap();
        assert!(cred.applies_to(&url("https://huggingface.co/api/models/a/b")));
        assert!(cred.applies_to(&url("https://huggingface.co:443/x")));
        assert!(cred.applies_to(&url("https://HuggingFace.co/x")));
        assert!(!cred.applies_to(&url("http://huggingface.co/x")));
        assert!(!cred.applies_to(&url("https://huggingface.co:8443/x")));
        assert!(!cred.applies_to(&url("https://cdn-lfs.huggingface.co/x")));
        assert!(!cred.applies_to(&url("https://huggingface.co.evil.example/x")));
        let local = Credential::new(&url("http://127.0.0.1:8080"), "t").unwrap();
        assert!(local.applies_to(&url("http://127.0.0.1:8080/a?b=c")));
        assert!(!local.applies_to(&url("http://127.0.0.1:8081/a")));
        assert!(!format!("{cred:?}").contains("hf_x"));
    }

    #[test]
    fn origin_is_scheme_host_port() {
        assert_eq!(
            origin_of(&url("http://127.0.0.1:9/x?y")),
            "http://127.0.0.1:9"
        );
        assert_eq!(origin_of(&url("https://h.example/x")), "https://h.example");
    }

    #[test]
    fn client_builds_from_default_settings_and_rejects_bad_ones() {
        HttpClient::new(&HostSettings::default()).unwrap();
        let bad = HostSettings {
            ca_bundle: Some("/nonexistent/ca.pem".into()),
            ..HostSettings::default()
        };
        assert_eq!(HttpClient::new(&bad).unwrap_err().kind, ErrorKind::CONFIG);
    }
}
