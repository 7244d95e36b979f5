//! Plugin helpers: building the third-party example plugins (`examples/hello-backend`,
//! `examples/statichttp-backend`, each its own Cargo workspace) the way a third party would,
//! into a target dir under `target/`, and running their own tests.
//!
//! The first build compiles abi_stable and friends and takes a minute or two; later runs are
//! incremental. Builds are serialised within a test process.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::{library_file_name, workspace_root};

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// `cargo <subcommand>` on `examples/<dir>` into `target/<target>`, outside the workspace.
fn cargo_example(subcommand: &str, dir: &str, target: &str, extra: &[&str]) -> (Output, PathBuf) {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let root = workspace_root();
    let target_dir = root.join("target").join(target);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg(subcommand)
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(root.join("examples").join(dir).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(extra);
    // Do not inherit the outer build's settings (RUSTFLAGS of a coverage run, say).
    cmd.env_remove("CARGO_TARGET_DIR");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("run cargo {subcommand} for examples/{dir}: {e}"));
    (out, target_dir)
}

/// Builds `examples/<dir>` and returns its `lib<stem>.so`.
fn build_example(dir: &str, stem: &str, target: &str, extra: &[&str]) -> PathBuf {
    let (out, target_dir) = cargo_example("build", dir, target, extra);
    assert!(
        out.status.success(),
        "building examples/{dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lib = target_dir.join("debug").join(library_file_name(stem));
    assert!(lib.exists(), "{} was not produced", lib.display());
    lib
}

/// Builds `examples/hello-backend` and returns `libhubget_hello.so`. With `panic_abort`, builds
/// it with `profile.dev.panic = "abort"` into a separate target dir (a real abort plugin).
pub fn build_example_hello(panic_abort: bool) -> PathBuf {
    if panic_abort {
        build_example(
            "hello-backend",
            "hubget_hello",
            "examples-hello-abort",
            &["--config", "profile.dev.panic=\"abort\""],
        )
    } else {
        build_example("hello-backend", "hubget_hello", "examples-hello", &[])
    }
}

/// Builds `examples/statichttp-backend` and returns `libhubget_statichttp.so`.
pub fn build_example_statichttp() -> PathBuf {
    build_example(
        "statichttp-backend",
        "hubget_statichttp",
        "examples-statichttp",
        &[],
    )
}

/// Runs `cargo test` in `examples/<dir>` (its own workspace); the output of a failure.
pub fn test_example(dir: &str) -> Result<(), String> {
    let target = format!("examples-{}", dir.trim_end_matches("-backend"));
    let (out, _) = cargo_example("test", dir, &target, &[]);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A temp env with the faulty test plugin first (its table `faulty_table`, serving `files`)
/// and the example `hello` backend second, serving a directory with the same files. Both are
/// third-party plugins there (a temp plugin dir), so both run isolated by default.
pub fn faulty_then_hello(faulty_table: &str, files: &[(&str, &str)]) -> crate::TestEnv {
    let hello = build_example_hello(false);
    let env = crate::TestEnv::new();
    env.install_plugin(&crate::test_plugin("faulty"), "faulty");
    env.install_plugin(&hello, "hello");
    let root = env.path("served");
    std::fs::create_dir_all(&root).unwrap();
    let mut table = String::new();
    for (name, content) in files {
        std::fs::write(root.join(name), content).unwrap();
        table.push_str(&format!("{name:?} = {content:?}\n"));
    }
    env.write_config(&format!(
        "[backends]\norder = [\"faulty\", \"hello\"]\n\n[plugins.faulty]\n{faulty_table}\n\n\
         [plugins.faulty.files]\n{table}\n[plugins.hello]\nroot = {:?}\n",
        root.to_str().unwrap()
    ));
    env
}
