//! Installed the way users install tools: the Python wheel, built by `packaging/build-wheel`
//! from the suite's own debug build (the workspace is built already, so maturin compiles
//! nothing), installed into a fresh venv, then run from there: its plugins are found where the
//! wheel put them, and it downloads from hubsim. And the release archive, unpacked anywhere.
//!
//! Its own test binary, not a module of `e2e`: cargo runs test binaries one at a time, and
//! maturin's cargo call re-links `target/debug/hubget`, which the `e2e` tests run.

use std::path::Path;
use std::process::Command;

use hubget_tests::venv::{pinned_tool, run};
use hubget_tests::{Run, TestEnv, workspace_root};
use hubsim::{FixtureSpec, HubSim};
use serde_json::Value;

/// The pinned wheel builder.
const MATURIN_PIN: &str = "maturin==1.16.0";

fn build_wheel(out: &Path) -> std::path::PathBuf {
    let maturin = pinned_tool("maturin-venv", MATURIN_PIN, "maturin", "--version")
        .expect("the pinned maturin");
    run(
        Command::new(workspace_root().join("packaging/build-wheel"))
            .args(["--profile", "dev", "--prebuilt", "--out"])
            .arg(out)
            .env("MATURIN", &maturin),
        "packaging/build-wheel",
    )
    .expect("the wheel builds");
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("a .whl")
}

#[test]
fn the_wheel_installs_into_a_fresh_venv_lists_its_plugins_and_downloads() {
    let env = TestEnv::new();
    let wheel = build_wheel(&env.path("wheels"));
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("hubget-"), "{name}");

    let venv = env.path("venv");
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )
    .unwrap();
    run(
        Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--no-index",
            "--disable-pip-version-check",
            wheel.to_str().unwrap(),
        ]),
        "pip install the wheel",
    )
    .unwrap();
    let hubget = venv.join("bin/hubget");
    assert!(hubget.is_file(), "the wheel puts hubget on the venv's PATH");

    // Right after install, with no plugin directory configured, every first-party plugin loads
    // from <venv>/lib/hubget.
    assert_lists_its_plugins(&env, &hubget, &venv);

    // And it downloads.
    let sim =
        HubSim::start_blocking(HubSim::builder().fixtures(FixtureSpec::minimal())).expect("hubsim");
    let got = Run::from_output(
        env.command_for(&hubget)
            .env_remove("HUBGET_PLUGIN_DIR")
            .env("HF_ENDPOINT", sim.hub_url())
            .args(["download", "acme/tiny", "--quiet"])
            .output()
            .unwrap(),
    );
    got.ok();
    let snapshot = Path::new(got.stdout.trim());
    assert!(snapshot.join("config.json").is_file(), "{}", got.stdout);
}

/// `hubget plugins --json`, with no plugin directory configured, lists every first-party plugin
/// from `<prefix>/lib/hubget`, and nothing failed to load.
fn assert_lists_its_plugins(env: &TestEnv, hubget: &Path, prefix: &Path) {
    let listed = Run::from_output(
        env.command_for(hubget)
            .env_remove("HUBGET_PLUGIN_DIR")
            .args(["plugins", "--json"])
            .output()
            .unwrap(),
    );
    listed.ok();
    let doc = listed.json();
    for plugin in ["lfs", "xet", "mirror", "s3"] {
        let p = doc["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == plugin)
            .unwrap_or_else(|| panic!("{plugin} not listed: {doc:#}"));
        assert_eq!(p["origin"], "install lib dir", "{p}");
        let path = p["path"].as_str().unwrap();
        assert!(path.starts_with(prefix.to_str().unwrap()), "{path}");
    }
    assert_eq!(doc["failures"], Value::Array(vec![]), "{doc:#}");
}

#[test]
fn the_release_archive_unpacks_anywhere_and_finds_its_plugins() {
    let env = TestEnv::new();
    let out = Command::new(workspace_root().join("packaging/build-archive"))
        .args(["--profile", "dev", "--prebuilt", "--out"])
        .arg(env.path("dist"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let unpacked = env.path("opt");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked),
        "tar -xzf",
    )
    .unwrap();
    let root = std::fs::read_dir(&unpacked)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for doc in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        assert!(root.join(doc).is_file(), "{doc} in the archive");
    }
    assert_lists_its_plugins(&env, &root.join("bin/hubget"), &root);
}
