//! The pinned Python client (huggingface_hub + hf_xet from PyPI) in one shared virtualenv,
//! `target/hubsim-venv`: hubsim's fidelity check and hubget's interop tests both use it.
//!
//! It is created with `python3 -m venv` + pip on first use. Creation is serialised across
//! processes (an exclusive lock on `target/hubsim-venv.lock`, so parallel test binaries never
//! half-build it for each other) and done once per process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The pip requirements of the venv.
pub const PYTHON_PINS: [&str; 2] = ["huggingface_hub==2.4.0", "hf_xet==1.8.0"];

/// The huggingface_hub version in [`PYTHON_PINS`].
pub const HUGGINGFACE_HUB_VERSION: &str = "2.4.0";

/// Why the venv could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("python venv at {venv}: {message}")]
pub struct VenvError {
    /// The venv directory.
    pub venv: PathBuf,
    /// What failed.
    pub message: String,
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else the workspace's `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// The python of the shared venv, created (or repaired) on first use; later calls in the same
/// process return the first answer.
pub fn venv_python() -> Result<PathBuf, VenvError> {
    static PYTHON: OnceLock<Result<PathBuf, VenvError>> = OnceLock::new();
    PYTHON
        .get_or_init(|| ensure_venv(&target_dir().join("hubsim-venv")))
        .clone()
}

/// Makes sure `venv` holds the pinned client, under an exclusive cross-process lock on
/// `<venv>.lock`. Returns its python.
pub fn ensure_venv(venv: &Path) -> Result<PathBuf, VenvError> {
    let fail = |message: String| VenvError {
        venv: venv.to_path_buf(),
        message,
    };
    let parent = venv.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| fail(format!("create {}: {e}", parent.display())))?;
    let mut lock_path = venv.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| fail(format!("create {}: {e}", Path::new(&lock_path).display())))?;
    // Held until the end of this function: another process may be creating the same venv.
    lock.lock().map_err(|e| fail(format!("lock: {e}")))?;
    let py = venv.join("bin/python");
    if ready(&py) {
        return Ok(py);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), VenvError> {
        let st = cmd
            .status()
            .map_err(|e| fail(format!("{what}: cannot run: {e}")))?;
        if st.success() {
            Ok(())
        } else {
            Err(fail(format!("{what} failed ({st})")))
        }
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(PYTHON_PINS),
        &format!("pip install {}", PYTHON_PINS.join(" ")),
    )?;
    if ready(&py) {
        Ok(py)
    } else {
        Err(fail(
            "the pinned client does not import after install".into(),
        ))
    }
}

/// Whether `py` imports the pinned huggingface_hub and hf_xet.
fn ready(py: &Path) -> bool {
    let check = format!(
        "import huggingface_hub, hf_xet, sys; \
         sys.exit(huggingface_hub.__version__ != '{HUGGINGFACE_HUB_VERSION}')"
    );
    py.exists()
        && Command::new(py)
            .args(["-c", &check])
            .status()
            .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_venv_being_made_by_another_process_is_waited_for_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        // A "ready" venv: its python answers the import check with success.
        let py = venv.join("bin/python");
        std::fs::create_dir_all(py.parent().unwrap()).unwrap();
        std::fs::write(&py, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another process holds the lock while it builds the venv.
        let holder = std::fs::File::create(dir.path().join("venv.lock")).unwrap();
        holder.lock().unwrap();
        let (tx, rx) = mpsc::channel();
        let v = venv.clone();
        let t = std::thread::spawn(move || tx.send(ensure_venv(&v)).unwrap());
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "ensure_venv did not wait for the lock"
        );
        holder.unlock().unwrap();
        let got = rx.recv_timeout(Duration::from_secs(10)).expect("returns");
        t.join().unwrap();
        assert_eq!(got.unwrap(), py, "the ready venv is reused, not rebuilt");
    }
}
