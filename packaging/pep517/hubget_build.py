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
import shlex
import shutil
import subprocess
import sys

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


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _stage_plugins(config_settings)
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_sdist(sdist_directory, config_settings=None):
    return maturin.build_sdist(sdist_directory, config_settings)


def get_requires_for_build_wheel(config_settings=None):
    return maturin.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_sdist(config_settings=None):
    return maturin.get_requires_for_build_sdist(config_settings)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    return maturin.prepare_metadata_for_build_wheel(metadata_directory, config_settings)
