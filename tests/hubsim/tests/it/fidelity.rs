//! The fidelity check: Python huggingface_hub + hf_xet (pinned) download every fixture from
//! hubsim, with and without Xet, byte-exact. The virtualenv lives in `target/hubsim-venv`.

use std::path::PathBuf;
use std::process::Command;

use super::common::shared;

#[test]
fn python_client_downloads_every_fixture_with_and_without_xet() {
    let py = hubsim::python::venv_python().expect("the pinned Python client");
    // Its own simulator: the script resets and reads the counters.
    // The default set and the realistic shapes (safetensors, shards, shared content).
    let spec = hubsim::FixtureSpec::default_set(8).with(hubsim::FixtureSpec::realistic_set(4));
    let sim = hubsim::HubSim::start_blocking(hubsim::HubSim::builder().fixtures(spec)).unwrap();
    let _ = shared; // (the shared sim is for read-only route tests)
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("info.json");
    std::fs::write(&info, serde_json::to_string(sim.info()).unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fidelity/check.py");
    let out = Command::new(&py)
        .arg(&script)
        .arg("--info")
        .arg(&info)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fidelity check failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("fidelity: OK"), "{stdout}");
}
