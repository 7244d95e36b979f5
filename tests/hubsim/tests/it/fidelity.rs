//! The fidelity check: Python huggingface_hub + hf_xet (pinned) download every fixture from
//! hubsim, with and without Xet, byte-exact. The virtualenv lives in `target/hubsim-venv`.

use std::path::PathBuf;
use std::process::Command;

use super::common::shared;

const PINS: [&str; 2] = ["huggingface_hub==2.4.0", "hf_xet==1.8.0"];

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Create (or reuse) the venv with the pinned client; returns its python.
fn venv_python() -> PathBuf {
    let venv = target_dir().join("hubsim-venv");
    let py = venv.join("bin/python");
    let ready = py.exists()
        && Command::new(&py)
            .args(["-c", "import huggingface_hub, hf_xet, sys; sys.exit(huggingface_hub.__version__ != '2.4.0')"])
            .status()
            .is_ok_and(|s| s.success());
    if !ready {
        let st = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed");
        assert!(st.success(), "python3 -m venv failed");
        let st = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PINS)
            .status()
            .expect("pip");
        assert!(st.success(), "pip install {PINS:?} failed");
    }
    py
}

#[test]
fn python_client_downloads_every_fixture_with_and_without_xet() {
    let py = venv_python();
    // Its own simulator: the script resets and reads the counters.
    let sim = hubsim::HubSim::start_blocking(hubsim::HubSim::builder()).unwrap();
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
