//! The HTTP client's own rules against tiny raw servers: redirects are followed by hand with the
//! token and origin-bound headers only on their origin, an explicit proxy is used, the user
//! agent is sent, and a redirect loop ends.

use std::sync::{Arc, Mutex};

use hubget_hub_http::reqwest::header::{HeaderValue, RANGE};
use hubget_hub_http::reqwest::{Method, Url};
use hubget_hub_http::{Credential, HttpClient, Request};
use hubget_plugin_api::{CancelToken, ErrorKind, HostSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request heads a server received (lowercased header names).
type Seen = Arc<Mutex<Vec<String>>>;

/// A server answering every request with `response(head)`; returns its base URL.
async fn server(response: impl Fn(&str) -> String + Send + Sync + 'static) -> (Url, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let response = Arc::new(response);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let log = log.clone();
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                log.lock().unwrap().push(head.clone());
                let _ = sock.write_all(response(&head).as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (url, seen)
}

fn redirect(to: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// What asking `api` for the manifest of acme/tiny at main fails with.
async fn tiny_manifest_error(api: &hubget_hub_http::HubApi) -> hubget_plugin_api::PluginError {
    let model = hubget_plugin_api::RepoType::MODEL;
    let cancel = CancelToken::new();
    api.manifest(model, "acme/tiny", "main", &cancel)
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_keep_credentials_and_origin_headers_on_their_origin() {
    let (cdn, cdn_seen) = server(|_| ok("bytes")).await;
    let cdn_target = cdn.join("blob?sig=1").unwrap().to_string();
    // The "Hub": /start redirects to /again (same origin), which redirects to the CDN.
    let (hub, hub_seen) = server(move |head| {
        if head.starts_with("get /start") {
            redirect("/again")
        } else {
            redirect(&cdn_target)
        }
    })
    .await;
    let settings = HostSettings {
        user_agent: "hubget-test/1".into(),
        ..HostSettings::default()
    };
    let client = HttpClient::new(&settings).unwrap();
    let mut request = Request::get(hub.join("start").unwrap())
        .credential(Some(Credential::new(&hub, "hf_secret").unwrap()))
        .header(RANGE, HeaderValue::from_static("bytes=0-4"));
    request
        .origin_headers
        .insert("x-action-sig", HeaderValue::from_static("s3cr3t"));
    let answer = client.send(&request, &CancelToken::new()).await.unwrap();
    assert_eq!(answer.response.status(), 200);
    assert_eq!(
        answer.url.as_str(),
        cdn.join("blob?sig=1").unwrap().as_str()
    );
    assert_eq!(answer.method, Method::GET);
    assert_eq!(answer.context(), format!("GET {}blob", cdn));

    let hub_seen = hub_seen.lock().unwrap().clone();
    assert_eq!(hub_seen.len(), 2, "both hops on the Hub");
    for head in &hub_seen {
        assert!(head.contains("authorization: bearer hf_secret"), "{head}");
        assert!(head.contains("x-action-sig: s3cr3t"), "{head}");
        assert!(head.contains("range: bytes=0-4"), "{head}");
        assert!(head.contains("user-agent: hubget-test/1"), "{head}");
    }
    let cdn_seen = cdn_seen.lock().unwrap().clone();
    assert_eq!(cdn_seen.len(), 1);
    assert!(!cdn_seen[0].contains("authorization"), "{}", cdn_seen[0]);
    assert!(!cdn_seen[0].contains("x-action-sig"), "{}", cdn_seen[0]);
    assert!(
        cdn_seen[0].contains("range: bytes=0-4"),
        "Range follows redirects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_origin_header_never_leaves_its_origin() {
    let (other, other_seen) = server(|_| ok("x")).await;
    let target = other.join("x").unwrap().to_string();
    let (start, _) = server(move |_| redirect(&target)).await;
    let client = HttpClient::new(&HostSettings::default()).unwrap();
    let mut request = Request::get(start.join("a").unwrap());
    request
        .origin_headers
        .insert("authorization", HeaderValue::from_static("Basic abc"));
    client.send(&request, &CancelToken::new()).await.unwrap();
    assert!(!other_seen.lock().unwrap()[0].contains("authorization"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loops_end_with_a_protocol_error() {
    let (url, seen) = server(|_| redirect("/loop")).await;
    let client = HttpClient::new(&HostSettings::default()).unwrap();
    let e = client
        .send(
            &Request::get(url.join("loop?token=x").unwrap()),
            &CancelToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::PROTOCOL);
    assert!(e.message.contains("redirects"), "{}", e.message);
    assert!(
        !e.message.contains("token=x"),
        "query strings are redacted: {}",
        e.message
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        hubget_hub_http::client::MAX_REDIRECTS + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_proxy_carries_every_request() {
    let (proxy, seen) = server(|_| ok("via proxy")).await;
    let settings = HostSettings {
        proxy: Some(proxy.to_string()),
        ..HostSettings::default()
    };
    let client = HttpClient::new(&settings).unwrap();
    let target = Url::parse("http://hub.example.invalid/api/x").unwrap();
    let answer = client
        .send(&Request::get(target), &CancelToken::new())
        .await
        .unwrap();
    assert_eq!(answer.response.text().await.unwrap(), "via proxy");
    let head = seen.lock().unwrap()[0].clone();
    assert!(
        head.starts_with("get http://hub.example.invalid/api/x http/1.1"),
        "{head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_are_retryable_network_errors_without_query() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!(
        "http://{}/x?sig=secret",
        listener.local_addr().unwrap()
    ))
    .unwrap();
    drop(listener);
    let client = HttpClient::new(&HostSettings::default()).unwrap();
    let e = client
        .send(&Request::get(url), &CancelToken::new())
        .await
        .unwrap_err();
    assert_eq!((e.kind, e.retryable), (ErrorKind::NETWORK, true), "{e}");
    assert!(!e.message.contains("secret"), "{}", e.message);
    assert!(
        e.message.starts_with("GET http://127.0.0.1:"),
        "{}",
        e.message
    );
}

#[test]
fn a_bad_ca_bundle_or_proxy_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(
        &pem,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = HttpClient::new(&HostSettings {
        ca_bundle: Some(pem),
        ..HostSettings::default()
    })
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::CONFIG, "{e}");
    let e = HttpClient::new(&HostSettings {
        proxy: Some("::not a url::".into()),
        ..HostSettings::default()
    })
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::CONFIG, "{e}");
}

fn hub(base: &Url) -> hubget_hub_http::HubApi {
    let settings = HostSettings {
        endpoint: base.as_str().trim_end_matches('/').to_owned(),
        max_attempts: 1,
        ..HostSettings::default()
    };
    let client = HttpClient::new(&settings).unwrap();
    hubget_hub_http::HubApi::new(&settings.endpoint, None, client).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_metadata_answer_is_refused() {
    let (base, _) = server(|_| {
        let body = " ".repeat(65 * 1024 * 1024);
        ok(&body)
    })
    .await;
    let e = tiny_manifest_error(&hub(&base)).await;
    assert_eq!(e.kind, ErrorKind::PROTOCOL, "{e}");
    assert!(e.message.contains("larger than 64 MiB"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_cap_comes_from_the_settings() {
    let (base, _) = server(|_| ok(&" ".repeat(2 * 1024 * 1024))).await;
    let settings = HostSettings {
        endpoint: base.as_str().trim_end_matches('/').to_owned(),
        max_attempts: 1,
        max_metadata_bytes: 1024 * 1024,
        ..HostSettings::default()
    };
    let client = HttpClient::new(&settings).unwrap();
    let api = hubget_hub_http::HubApi::new(&settings.endpoint, None, client).unwrap();
    let e = tiny_manifest_error(&api).await;
    assert_eq!(e.kind, ErrorKind::PROTOCOL, "{e}");
    assert!(e.message.contains("larger than 1 MiB"), "{e}");
    assert!(e.message.contains("max_metadata_mib"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_whose_next_page_repeats_is_refused() {
    let sha = "a".repeat(40);
    let (base, seen) = server(move |head| {
        if head.contains("/revision/") {
            ok(&format!("{{\"sha\":\"{sha}\"}}"))
        } else {
            // Every page points at itself as the next one.
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nlink: <{path}>; rel=\"next\"\r\nconnection: close\r\n\r\n[]"
            )
        }
    })
    .await;
    let e = tiny_manifest_error(&hub(&base)).await;
    assert!(e.message.contains("repeats a page"), "{e}");
    assert!(seen.lock().unwrap().len() <= 3, "stopped at once");
}

#[tokio::test]
async fn an_endless_metadata_answer_is_refused_at_the_cap_not_read_whole() {
    // A server that streams JSON-ish bytes for ever (chunked, no length).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut tmp = [0u8; 4096];
                let _ = sock.read(&mut tmp).await;
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let piece = vec![b' '; 64 * 1024];
                let chunk = [
                    format!("{:x}\r\n", piece.len()).into_bytes(),
                    piece,
                    b"\r\n".to_vec(),
                ]
                .concat();
                while sock.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    let settings = HostSettings {
        max_metadata_bytes: 1024 * 1024,
        ..HostSettings::default()
    };
    let client = HttpClient::new(&settings).unwrap();
    let cancel = CancelToken::new();
    let answer = client.send(&Request::get(url), &cancel).await.unwrap();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        client.read_metadata(answer),
    )
    .await
    .expect("the read ends at the cap");
    let err = read.unwrap_err();
    assert_eq!(err.kind, ErrorKind::PROTOCOL);
    assert!(err.message.contains("larger than 1 MiB"), "{err}");
}
