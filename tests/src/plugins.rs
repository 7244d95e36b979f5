//! Plugin helpers: building the third-party example plugin (`examples/hello-backend`, its own
//! Cargo workspace) the way a third party would, into a target dir under `target/`.
//!
//! The first build compiles abi_stable and friends and takes a minute or two; later runs are
//! incremental. Builds are serialised within a test process.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::{library_file_name, workspace_root};

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds `examples/hello-backend` and returns `libhubget_hello.so`. With `panic_abort`, builds
/// it with `profile.dev.panic = "abort"` into a separate target dir (a real abort plugin).
pub fn build_example_hello(panic_abort: bool) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let target_dir = root.join("target").join(if panic_abort {
        "examples-hello-abort"
    } else {
        "examples-hello"
    });
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(root.join("examples/hello-backend/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    if panic_abort {
        cmd.arg("--config").arg("profile.dev.panic=\"abort\"");
    }
    // Do not inherit the outer build's settings (RUSTFLAGS of a coverage run, say).
    cmd.env_remove("CARGO_TARGET_DIR");
    let out = cmd
        .output()
        .expect("run cargo build for the example plugin");
    assert!(
        out.status.success(),
        "building examples/hello-backend failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target_dir
        .join("debug")
        .join(library_file_name("hubget_hello"));
    assert!(lib.exists(), "{} was not produced", lib.display());
    lib
}
