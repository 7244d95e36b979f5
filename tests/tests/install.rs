//! Installed the way users install tools, from a checkout: `pip install .` into a fresh venv and
//! `uv tool install .`, exactly as typed (the in-tree build backend builds and stages the
//! plugins, then maturin the binary; `MATURIN_PEP517_ARGS="--profile dev"` makes it the suite's
//! debug profile, so little is compiled), then run from there: its plugins are found where the
//! wheel put them, and it downloads from hubsim. And the release archive, unpacked anywhere.
//!
//! Its own test binary, not a module of `e2e`: cargo runs test binaries one at a time, and the
//! builds here re-link `target/debug/hubget` and the plugins, which the `e2e` tests run.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use hubget_tests::venv::{pinned_tool, run};
use hubget_tests::{Run, TestEnv, workspace_root};
use hubsim::{FixtureSpec, HubSim};
use serde_json::Value;

/// The pinned uv.
const UV_PIN: &str = "uv==0.13.9";

/// Builds from the checkout share `target/wheel-data`: one at a time.
static BUILDS: Mutex<()> = Mutex::new(());

/// The debug profile for the builds of this file (a user's `pip install .` builds release).
const DEV: (&str, &str) = ("MATURIN_PEP517_ARGS", "--profile dev");

#[test]
fn pip_install_dot_from_a_checkout_lists_its_plugins_and_downloads() {
    let env = TestEnv::new();
    let venv = env.path("venv");
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )
    .unwrap();
    {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "."])
                .current_dir(workspace_root())
                .env(DEV.0, DEV.1),
            "pip install .",
        )
        .unwrap();
    }
    let hubget = venv.join("bin/hubget");
    assert!(hubget.is_file(), "pip puts hubget on the venv's PATH");

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

#[test]
fn uv_tool_install_dot_from_a_checkout_lists_its_plugins() {
    let env = TestEnv::new();
    let uv = pinned_tool("uv-venv", UV_PIN, "uv", "--version").expect("the pinned uv");
    let (tools, bin) = (env.path("uv-tools"), env.path("uv-bin"));
    {
        let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
        run(
            Command::new(&uv)
                .args(["tool", "install", "."])
                .current_dir(workspace_root())
                .env("UV_TOOL_DIR", &tools)
                .env("UV_TOOL_BIN_DIR", &bin)
                .env("UV_CACHE_DIR", env.path("uv-cache"))
                .env(DEV.0, DEV.1),
            "uv tool install .",
        )
        .unwrap();
    }
    let hubget = bin.join("hubget");
    assert!(hubget.exists(), "uv puts hubget in its bin dir");
    assert_lists_its_plugins(&env, &hubget, &tools);
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
    let prefix = std::fs::canonicalize(prefix).unwrap();
    for plugin in ["lfs", "xet", "mirror", "s3"] {
        let p = doc["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == plugin)
            .unwrap_or_else(|| panic!("{plugin} not listed: {doc:#}"));
        assert_eq!(p["origin"], "install lib dir", "{p}");
        let path = p["path"].as_str().unwrap();
        assert!(Path::new(path).starts_with(&prefix), "{path}");
    }
    assert_eq!(doc["failures"], Value::Array(vec![]), "{doc:#}");
}

#[test]
fn the_release_archive_unpacks_anywhere_and_finds_its_plugins() {
    let env = TestEnv::new();
    // It packs target/debug's plugins, which the builds above may be re-linking.
    let _one = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
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
