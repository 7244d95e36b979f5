#!/usr/bin/env python3
"""hubsim fidelity check: the official Python client must download every fixture correctly.

Usage: check.py --info INFO.json
Runs itself twice in subprocesses (the client reads its env at import time): once with Xet and once
with HF_HUB_DISABLE_XET=1, each with a fresh HF_HOME and HF_TOKEN set. Every downloaded byte is
checked against the fixture's sha256; hubsim's counters prove which path (CAS or CDN) was taken.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

SKIP_REPOS = {"evil/traversal"}  # hostile names: for hubget's own security tests only
EXTRA_REVS = {"acme/tiny": ["dev/feature", "refs/pr/1", "v1.0"], "acme/evolving": ["v1"]}


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def control(info, method, route):
    req = urllib.request.Request(info["control_url"] + route, method=method)
    with urllib.request.urlopen(req) as r:
        body = r.read()
    return json.loads(body) if body else None


def commit_files(repo, rev):
    sha = repo["branches"].get(rev) or repo["tags"].get(rev) or repo["prs"].get(rev) or rev
    return next(c for c in repo["commits"] if c["sha"] == sha)["files"]


def run_mode(info, mode):
    import huggingface_hub as hf
    from huggingface_hub import errors

    failures = []
    checked = 0

    def check(cond, what):
        if not cond:
            failures.append(what)

    def verify(path, f, what):
        nonlocal checked
        got = sha256_file(path)
        check(got == f["sha256"], f"{what}: sha256 {got} != {f['sha256']}")
        checked += 1

    for repo in info["repos"]:
        rid, rtype = repo["id"], repo["type"]
        if rid in SKIP_REPOS:
            continue
        # snapshot of main
        snap = hf.snapshot_download(rid, repo_type=rtype)
        for f in repo["files"]:
            verify(os.path.join(snap, f["path"]), f, f"{mode} snapshot {rid}:{f['path']}")
        # single files at other revisions
        for rev in EXTRA_REVS.get(rid, []):
            for f in commit_files(repo, rev):
                p = hf.hf_hub_download(rid, f["path"], repo_type=rtype, revision=rev)
                verify(p, f, f"{mode} {rid}@{rev}:{f['path']}")
        # local_dir download of one file
        with tempfile.TemporaryDirectory() as d:
            f = repo["files"][-1]
            p = hf.hf_hub_download(rid, f["path"], repo_type=rtype, local_dir=d)
            verify(p, f, f"{mode} local_dir {rid}:{f['path']}")
        # listings
        api = hf.HfApi()
        tree = [e for e in api.list_repo_tree(rid, repo_type=rtype, recursive=True) if isinstance(e, hf.hf_api.RepoFile)]
        check(sorted(e.path for e in tree) == sorted(f["path"] for f in repo["files"]), f"{mode} tree {rid}")
        by_path = {f["path"]: f for f in repo["files"]}
        for e in tree:
            f = by_path.get(e.path)
            if f and f["storage"] != "regular":
                check(e.lfs is not None and e.lfs.sha256 == f["sha256"], f"{mode} tree lfs {rid}:{e.path}")
            if f and f["storage"] == "xet":
                check(getattr(e, "xet_hash", None) == f["xet_hash"], f"{mode} tree xetHash {rid}:{e.path}")
        ri = api.repo_info(rid, repo_type=rtype, files_metadata=True)
        check(ri.sha == repo["head"], f"{mode} repo_info sha {rid}")
        pi = api.get_paths_info(rid, [f["path"] for f in repo["files"][:3]], repo_type=rtype)
        check(len(pi) == min(3, len(repo["files"])), f"{mode} paths_info {rid}")

    # Error classification by X-Error-Code.
    def raises(exc, fn, what):
        # A fresh cache each time: with a cached copy the client falls back to it on errors.
        try:
            with tempfile.TemporaryDirectory() as cache:
                fn(cache)
            failures.append(f"{mode} {what}: no error")
        except exc:
            pass
        except Exception as e:  # noqa: BLE001
            failures.append(f"{mode} {what}: {type(e).__name__}: {e}")

    raises(errors.RepositoryNotFoundError, lambda c: hf.hf_hub_download("acme/private", "config.json", token=False, cache_dir=c), "private without token")
    raises(errors.RepositoryNotFoundError, lambda c: hf.hf_hub_download("acme/missing", "x", token=False, cache_dir=c), "missing repo")
    raises(errors.GatedRepoError, lambda c: hf.hf_hub_download("acme/gated", "config.json", token=False, cache_dir=c), "gated without token")
    raises(errors.RevisionNotFoundError, lambda c: hf.hf_hub_download("acme/tiny", "config.json", revision="nope", cache_dir=c), "bad revision")
    raises(errors.EntryNotFoundError, lambda c: hf.hf_hub_download("acme/tiny", "nope.txt", cache_dir=c), "missing file")
    return checked, failures


def child(info_path, mode):
    with open(info_path) as f:
        info = json.load(f)
    checked, failures = run_mode(info, mode)
    print(json.dumps({"mode": mode, "checked": checked, "failures": failures}))
    return 0


def parent(info_path):
    with open(info_path) as f:
        info = json.load(f)
    import huggingface_hub
    import hf_xet  # noqa: F401

    print(f"huggingface_hub {huggingface_hub.__version__}", file=sys.stderr)
    ok = True
    for mode in ("xet", "noxet"):
        control(info, "POST", "/reset-counters")
        with tempfile.TemporaryDirectory() as home:
            env = dict(os.environ)
            for k in list(env):
                if k.startswith("HF_") or k.startswith("HUGGINGFACE_"):
                    del env[k]
            env.update(
                HF_ENDPOINT=info["hub_url"],
                HF_HOME=home,
                HF_TOKEN=info["token"],
                HF_HUB_DISABLE_TELEMETRY="1",
                HF_HUB_DISABLE_PROGRESS_BARS="1",
                NO_PROXY="127.0.0.1,localhost",
                no_proxy="127.0.0.1,localhost",
            )
            if mode == "noxet":
                env["HF_HUB_DISABLE_XET"] = "1"
            out = subprocess.run(
                [sys.executable, __file__, "--info", info_path, "--mode", mode],
                env=env, capture_output=True, text=True,
            )
        if out.returncode != 0:
            print(f"[{mode}] client crashed:\n{out.stdout}\n{out.stderr}", file=sys.stderr)
            ok = False
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        counters = control(info, "GET", "/counters")
        req = counters["requests"]
        cas_fetch = req.get("cas:fetch_term", 0)
        bridge = req.get("cdn:xet_bridge", 0)
        if mode == "xet" and (cas_fetch == 0 or bridge != 0):
            res["failures"].append(f"xet mode: expected CAS fetches and no bridge use, got fetch_term={cas_fetch} xet_bridge={bridge}")
        if mode == "noxet" and (cas_fetch != 0 or bridge == 0):
            res["failures"].append(f"noxet mode: expected bridge use and no CAS, got fetch_term={cas_fetch} xet_bridge={bridge}")
        if counters["auth_seen"]["cdn"]:
            res["failures"].append(f"{mode}: the token reached the CDN")
        print(f"[{mode}] {res['checked']} files verified, cas fetch_term={cas_fetch}, cdn xet_bridge={bridge}, "
              f"bytes hub={counters['bytes']['hub']} cdn={counters['bytes']['cdn']} cas={counters['bytes']['cas']}")
        for f in res["failures"]:
            print(f"[{mode}] FAIL {f}")
            ok = False
    print("fidelity: OK" if ok else "fidelity: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--info", required=True)
    ap.add_argument("--mode", choices=["xet", "noxet"])
    a = ap.parse_args()
    sys.exit(child(a.info, a.mode) if a.mode else parent(a.info))
