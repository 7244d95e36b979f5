"""hubget's in-tree PEP 517 build backend: `pip install .`, `pip wheel .`, `uv tool install .`
and `uv build` work from a checkout with nothing run beforehand.

A wheel of hubget holds the `hubget` binary (maturin builds it, `bindings = "bin"`) and the
first-party plugins as data files under `<prefix>/lib/hubget/`, where the binary looks for them.
maturin does not know about the plugins (they are other crates of the workspace, not
dependencies of the binary), so this backend builds them with cargo first, stages them where
pyproject's `[tool.maturin] data` points (`target/wheel-data`), then hands every hook over to
maturin's own backend. The profile follows maturin's: `--profile NAME` in `MATURIN_PEP517_ARGS`
or in the `build-args` config setting (release otherwise).
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile

import maturin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = ["lfs", "xet", "mirror", "s3"]
STAGE = os.path.join(ROOT, "target", "wheel-data")


def _profile(config_settings):
    args = maturin.get_maturin_pep517_args(config_settings)
    for i, arg in enumerate(args):
        if arg == "--profile" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--profile="):
            return arg.split("=", 1)[1]
    return "release"


def _stage_plugins(config_settings):
    profile = _profile(config_settings)
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [cargo, "build", "--profile", profile]
    for p in PLUGINS:
        cmd += ["-p", f"hubget-{p}"]
    print(f"hubget: building the plugins: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=sys.stderr)
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    built = os.path.join(target, "debug" if profile == "dev" else profile)
    lib = os.path.join(STAGE, "data", "lib", "hubget")
    shutil.rmtree(STAGE, ignore_errors=True)
    os.makedirs(lib)
    for p in PLUGINS:
        name = f"libhubget_{p}.so"
        shutil.copy2(os.path.join(built, name), os.path.join(lib, name))
        os.chmod(os.path.join(lib, name), 0o755)


def _ensure_data_dir():
    """maturin refuses to run without pyproject's `data` directory (even for metadata only)."""
    os.makedirs(STAGE, exist_ok=True)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _stage_plugins(config_settings)
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


# What maturin's sdist lacks for a wheel with plugins: the plugin crates (workspace members
# it does not know), hubsim (the plugins' tests' dev-dependency: cargo reads its manifest) and
# this backend.
SDIST_EXTRA = ["packaging/pep517", "plugins/lfs", "plugins/xet", "plugins/mirror", "plugins/s3",
               "plugins/hub-http", "tests/hubsim"]


def build_sdist(sdist_directory, config_settings=None):
    """maturin's sdist (the binary's crates), completed with the plugins' crates (added to the
    workspace's members) and this backend, so that a wheel built from it is the same wheel."""
    _ensure_data_dir()
    name = maturin.build_sdist(sdist_directory, config_settings)
    path = os.path.join(sdist_directory, name)
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(path) as t:
            t.extractall(tmp, filter="data")
        (top,) = os.listdir(tmp)
        root = os.path.join(tmp, top)
        for extra in SDIST_EXTRA:
            src = os.path.join(ROOT, extra)
            for dirpath, dirnames, files in os.walk(src):
                dirnames[:] = [d for d in dirnames if d not in ("target", "__pycache__", ".venv")]
                for f in files:
                    rel = os.path.relpath(os.path.join(dirpath, f), ROOT)
                    os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
                    shutil.copy2(os.path.join(ROOT, rel), os.path.join(root, rel))
        manifest = os.path.join(root, "Cargo.toml")
        with open(manifest) as f:
            text = f.read()
        members = re.search(r"^members = \[(.*?)\]", text, re.M | re.S)
        have = re.findall(r'"([^"]+)"', members.group(1)) if members else []
        wanted = have + [m for m in SDIST_EXTRA[1:] if m not in have]
        listed = ", ".join(f'"{m}"' for m in wanted)
        text = text.replace(members.group(0), f"members = [{listed}]") if members else text
        with open(manifest, "w") as f:
            f.write(text)
        with tarfile.open(path, "w:gz") as t:
            t.add(root, arcname=top)
    return name


def get_requires_for_build_wheel(config_settings=None):
    return maturin.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    return maturin.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _ensure_data_dir()
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
