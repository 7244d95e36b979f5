//! Shared helpers.

use std::sync::OnceLock;

use hubsim::{FixtureSpec, HubSim, HubSimHandle};
use sha2::Digest as _;

/// The shared simulator with the default fixture set (read-only tests only: no faults).
pub fn shared() -> &'static HubSimHandle {
    static SIM: OnceLock<HubSimHandle> = OnceLock::new();
    SIM.get_or_init(|| HubSim::start_blocking(HubSim::builder()).expect("hubsim starts"))
}

/// A fresh simulator with only `acme/tiny` (for tests that inject faults or stop the CAS).
pub fn tiny() -> HubSimHandle {
    HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::minimal()))
        .expect("hubsim starts")
}

/// A blocking HTTP client that never follows redirects.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A blocking HTTP client that follows redirects.
pub fn following() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// The JSON body of `GET url` (redirects not followed).
#[track_caller]
pub fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    client()
        .get(url)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The body of `GET url`, redirects followed.
#[track_caller]
pub fn get_bytes(url: &str) -> bytes::Bytes {
    following()
        .get(url)
        .send()
        .and_then(|r| r.bytes())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// sha256 hex.
pub fn sha256(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}
