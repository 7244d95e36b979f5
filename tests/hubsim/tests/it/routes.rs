//! Hub, CDN and CAS routes.

use super::common::{client, shared};

#[test]
fn starts_and_serves_config() {
    let t = std::time::Instant::now();
    let sim = shared();
    eprintln!("start took {:?}", t.elapsed());
    let r = client().get(format!("{}/acme/tiny/resolve/main/config.json", sim.hub_url())).send().unwrap();
    assert_eq!(r.status(), 200);
    let info = sim.info().repo("acme/tiny").unwrap();
    assert_eq!(r.headers()["x-repo-commit"], info.head.as_str());
    let f = info.file("config.json").unwrap();
    assert_eq!(r.bytes().unwrap().len() as u64, f.size);
}
