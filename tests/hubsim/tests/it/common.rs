//! Shared helpers: one default-set simulator per test process for read-only route tests.

use std::sync::OnceLock;

use hubsim::{HubSim, HubSimHandle};

/// The shared simulator with the default fixture set (read-only tests only: no faults).
pub fn shared() -> &'static HubSimHandle {
    static SIM: OnceLock<HubSimHandle> = OnceLock::new();
    SIM.get_or_init(|| HubSim::start_blocking(HubSim::builder()).expect("hubsim starts"))
}

/// A blocking HTTP client that never follows redirects.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}
