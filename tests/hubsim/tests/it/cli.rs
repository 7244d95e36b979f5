//! The `hubsim serve` binary: --spec, --info, serving, control from outside.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::common::{client, following, get_bytes, sha256};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SPEC: &str = r#"
[[repos]]
id = "me/cli"
type = "model"
tags = { "v0" = 0 }

[[repos.commits]]
message = "first"
files = [
  { path = "a.txt", content = { kind = "text", text = "hello\n" } },
  { path = "w.bin", storage = "xet", content = { kind = "random", size = 300000, seed = 7 } },
]

[[repos.commits]]
message = "second"
delete = ["a.txt"]
files = [
  { path = "b/c.bin", storage = "lfs", content = { kind = "compressible", size = 100000, seed = 8 } },
]
"#;

#[test]
fn serve_writes_info_and_serves_until_killed() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let info_path = dir.path().join("info.json");
    let child = Command::new(env!("CARGO_BIN_EXE_hubsim"))
        .args(["serve", "--spec"])
        .arg(&spec)
        .args([
            "--latency-ms",
            "1",
            "--rate-per-conn",
            "100000000",
            "--info",
        ])
        .arg(&info_path)
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let t = Instant::now();
    while !info_path.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "no info file");
        std::thread::sleep(Duration::from_millis(50));
    }
    let info: hubsim::SimInfo =
        serde_json::from_str(&std::fs::read_to_string(&info_path).unwrap()).unwrap();
    assert_eq!(info.shaping.latency_ms, 1);
    let repo = info.repo("me/cli").unwrap();
    assert_eq!(repo.commits.len(), 2);
    assert_eq!(repo.tags["v0"], repo.commits[0].sha);
    let paths: Vec<&str> = repo.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["b/c.bin", "w.bin"]);
    let w = repo.file("w.bin").unwrap();
    assert!(w.xet_hash.is_some());
    for f in &repo.files {
        let b = get_bytes(&format!("{}/me/cli/resolve/main/{}", info.hub_url, f.path));
        assert_eq!(sha256(&b), f.sha256);
    }
    let r = client()
        .get(format!("{}/me/cli/resolve/v0/a.txt", info.hub_url))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), "hello\n");
    // Control from outside.
    let r = client()
        .post(format!("{}/faults", info.control_url))
        .body(r#"{"origin":"cdn","path_contains":"/xet-bridge/","action":{"kind":"status","code":503}}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = following()
        .get(format!("{}/me/cli/resolve/main/w.bin", info.hub_url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 503);
    let c: hubsim::Counters = client()
        .get(format!("{}/counters", info.control_url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(c.requests["cdn:xet_bridge"], 2);
    let ok_bytes: u64 = c
        .log
        .iter()
        .filter(|r| r.origin == hubsim::Origin::Cdn && r.status == 200)
        .map(|r| r.bytes)
        .sum();
    assert_eq!(ok_bytes, w.size + repo.file("b/c.bin").unwrap().size);
    assert!(c.log.iter().any(|r| r.faulted && r.status == 503));
}
