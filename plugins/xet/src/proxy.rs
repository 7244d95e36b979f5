//! One network stack for Xet: hf-xet's own HTTP client is pointed at a Unix socket served by this
//! module (`client.unix_socket_path`), and every request it makes is forwarded through hub-http's
//! client, built from the host settings. So the host's explicit proxy, CA bundle, timeouts and
//! bandwidth cap (`--limit-rate`) apply to every CAS and xorb request, as they do to lfs.
//!
//! hf-xet rewrites `https://` to `http://` when it talks to a Unix socket (the scheme is lost);
//! the scheme is restored per origin: the CAS origin keeps the scheme of the CAS URL the Hub
//! gave, any other origin (presigned xorb URLs) is `https` unless registered otherwise.
//!
//! The socket lives in a private directory (mode 0700) under the system temp dir and is removed
//! when the backend is dropped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hubget_hub_http::HttpClient;
use hubget_hub_http::reqwest;
use hyper::body::Frame;

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Origins (`host:port`) whose scheme is not `https`.
pub type Schemes = Arc<Mutex<HashMap<String, String>>>;

/// The forwarding proxy on a Unix socket.
pub struct LocalProxy {
    dir: tempfile::TempDir,
    path: PathBuf,
    schemes: Schemes,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for LocalProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProxy")
            .field("path", &self.path)
            .finish()
    }
}

impl LocalProxy {
    /// Starts the proxy on `runtime`, forwarding through `client`.
    pub fn start(runtime: &tokio::runtime::Handle, client: HttpClient) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("hubget-xet-").tempdir()?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        let path = dir.path().join("cas.sock");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&path)?
        };
        let schemes: Schemes = Arc::default();
        let client = Arc::new(client);
        let task = runtime.spawn(serve(listener, client, Arc::clone(&schemes)));
        Ok(Self {
            dir,
            path,
            schemes,
            task,
        })
    }

    /// The socket path, for hf-xet's `client.unix_socket_path`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers the scheme of `url`'s origin (the CAS URL from the Hub).
    pub fn register(&self, url: &str) {
        if let Ok(u) = reqwest::Url::parse(url)
            && let Some(host) = u.host_str()
        {
            let origin = match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            };
            self.schemes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(origin, u.scheme().to_owned());
        }
    }
}

impl Drop for LocalProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
        let _ = &self.dir;
    }
}

async fn serve(listener: tokio::net::UnixListener, client: Arc<HttpClient>, schemes: Schemes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (client, schemes) = (Arc::clone(&client), Arc::clone(&schemes));
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (client, schemes) = (Arc::clone(&client), Arc::clone(&schemes));
                async move { forward(&client, &schemes, req).await }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                log::debug!("xet proxy connection: {e}");
            }
        });
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn answer(status: u16, text: String) -> hyper::Response<Body> {
    let body = Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed();
    let mut r = hyper::Response::new(body);
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    r
}

/// The absolute URL of a request hf-xet sent to the socket.
fn target_url(req: &hyper::Request<hyper::body::Incoming>, schemes: &Schemes) -> Option<String> {
    let authority = req.uri().authority().map(|a| a.to_string()).or_else(|| {
        req.headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    })?;
    let scheme = schemes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&authority)
        .cloned()
        .unwrap_or_else(|| "https".to_owned());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    Some(format!("{scheme}://{authority}{path}"))
}

/// Forwards one request. A failure to reach the origin is an `Err`: hyper then drops the
/// connection without an answer, so hf-xet sees the network failure it would have seen itself
/// (retryable), not an HTTP error from us.
async fn forward(
    client: &HttpClient,
    schemes: &Schemes,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Body>, std::io::Error> {
    let Some(url) = target_url(&req, schemes) else {
        return Ok(answer(400, "no target host".into()));
    };
    let method = match reqwest::Method::from_bytes(req.method().as_str().as_bytes()) {
        Ok(m) => m,
        Err(_) => return Ok(answer(405, "bad method".into())),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        let n = name.as_str();
        if n == "host" || HOP_BY_HOP.contains(&n) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(n.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(name, value);
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(answer(400, format!("request body: {e}"))),
    };
    let sent = client
        .reqwest()
        .request(method, &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => {
            // The request's query may hold a signature: never log the URL.
            let e = e.without_url();
            log::debug!("xet proxy: {e}");
            return Err(std::io::Error::other(e));
        }
    };
    let status = response.status().as_u16();
    let mut out = hyper::Response::builder().status(status);
    for (name, value) in response.headers() {
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        out = out.header(name.as_str(), value.as_bytes());
    }
    // Bytes pass the bandwidth cap as they arrive.
    let client = client.clone();
    let stream = response.bytes_stream().then(move |chunk| {
        let client = client.clone();
        async move {
            match chunk {
                Ok(b) => {
                    client.throttle(b.len() as u64).await;
                    Ok(Frame::data(b))
                }
                Err(e) => Err(std::io::Error::other(e.without_url())),
            }
        }
    });
    Ok(out
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|e| answer(502, format!("hubget xet proxy: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hubget_plugin_api::HostSettings;

    #[test]
    fn requests_through_the_socket_reach_the_origin_with_the_registered_scheme() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // A tiny origin on TCP.
        let origin = runtime.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(req.starts_with("GET /v1/x?sig=1 HTTP/1.1"), "{req}");
                assert!(
                    req.to_ascii_lowercase().contains("range: bytes=0-3"),
                    "{req}"
                );
                s.write_all(b"HTTP/1.1 206 Partial Content\r\ncontent-length: 4\r\n\r\nabcd")
                    .await
                    .unwrap();
            });
            addr
        });
        let client = HttpClient::new(&HostSettings::default()).unwrap();
        let proxy = LocalProxy::start(runtime.handle(), client).unwrap();
        proxy.register(&format!("http://{origin}/"));
        let path = proxy.path().to_path_buf();
        let body = runtime.block_on(async move {
            let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = hyper::Request::get(format!("http://{origin}/v1/x?sig=1"))
                .header("host", origin.to_string())
                .header("range", "bytes=0-3")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 206);
            resp.into_body().collect().await.unwrap().to_bytes()
        });
        assert_eq!(&body[..], b"abcd");
    }
}
