#!/usr/bin/env python3
"""Issue 27 benchmark: what `hubget sync` costs next to `hubget download`.

Setup (one command, nothing from the internet): hubsim (release) with its default set and the
realistic shapes at --size-mib (default 256: `acme/sharded` is 8 shards of 32 MiB plus index,
config and tokenizer), unshaped loopback. Runs, each into a fresh cache:
  * `hubget download acme/sharded` and `hubget sync` of a manifest holding only acme/sharded
    (lock included), alternating: wall time and the bytes hubsim served;
  * a manifest of 10 repositories, synced once, then the no-op `hubget sync` (everything in
    place) --runs times: wall time and the requests it made (goal: under one second, none).

Usage: bench/sync/run.py [--runs 5] [--size-mib 256] [--no-build] [--no-record]
"""
import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchlib import REL, build_release, control, record, start_hubsim  # noqa: E402

BEGIN, END = "<!-- sync:begin -->", "<!-- sync:end -->"
TEN = [
    "acme/tiny", "acme/evolving", "datasets/acme/many-small", "spaces/acme/space", "acme/big",
    "acme/finetune", "acme/shared-base", "acme/shared-derived", "acme/shared-pair",
    "acme/sharded",
]


def log(msg):
    print(f"[bench/sync] {msg}", file=sys.stderr, flush=True)


def served(sim):
    c = control(sim, "/counters")
    return sum(c["bytes"].values()), sum(c["total_requests"].values())


def hubget(args, home, sim, cwd=None):
    env = dict(os.environ, HOME=home, HF_HOME=os.path.join(home, "hf"),
               HF_ENDPOINT=sim["hub_url"], HUBGET_PLUGIN_DIR=REL, HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.pop("HF_TOKEN", None)
    control(sim, "/reset-counters", "POST")
    start = time.monotonic()
    p = subprocess.run([os.path.join(REL, "hubget")] + args, env=env, cwd=cwd,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"hubget {' '.join(args)} failed: {p.stderr[-2000:]}")
    nbytes, requests = served(sim)
    return wall, nbytes, requests


def project(tmp, names):
    d = tempfile.mkdtemp(dir=tmp, prefix="project-")
    with open(os.path.join(d, "hubget.toml"), "w") as f:
        for n in names:
            f.write(f'[repos."{n}"]\n')
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        build_release("hubget-lfs", "hubget-xet", "hubget-mirror")
    tmp = tempfile.mkdtemp(prefix="bench-sync-")
    log("starting hubsim (uploading the fixtures through hf-xet takes a while)")
    proc, sim = start_hubsim(
        ["--big-mib", "8", "--realistic-mib", str(args.size_mib)], os.path.join(tmp, "info.json")
    )
    rows = {"download": [], "sync": [], "noop": []}
    try:
        for i in range(args.runs):
            home = tempfile.mkdtemp(dir=tmp)
            rows["download"].append(hubget(["download", "acme/sharded"], home, sim))
            shutil.rmtree(home)
            home = tempfile.mkdtemp(dir=tmp)
            d = project(tmp, ["acme/sharded"])
            rows["sync"].append(hubget(["sync"], home, sim, cwd=d))
            shutil.rmtree(home)
            log(f"run {i + 1}: download {rows['download'][-1]}, sync {rows['sync'][-1]}")
        home = tempfile.mkdtemp(dir=tmp)
        d = project(tmp, TEN)
        hubget(["sync"], home, sim, cwd=d)
        for _ in range(args.runs):
            rows["noop"].append(hubget(["sync"], home, sim, cwd=d))
        log(f"no-op syncs: {rows['noop']}")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    med = lambda k, i: statistics.median(r[i] for r in rows[k])
    dl_wall, sy_wall, noop = med("download", 0), med("sync", 0), med("noop", 0)
    dl_bytes, sy_bytes = med("download", 1), med("sync", 1)
    noop_requests = max(r[2] for r in rows["noop"])
    verdict = lambda ok: "met" if ok else "MISSED"
    text = "\n".join([
        BEGIN,
        f"### Case 13: `hubget sync` (`bench/sync/run.py`, {datetime.date.today()}, {args.runs} runs, medians)",
        "",
        "| what | wall (s) | bytes served | requests |",
        "| --- | --- | --- | --- |",
        f"| `hubget download acme/sharded` (fresh cache, {args.size_mib} MiB) | {dl_wall:.2f} | {dl_bytes:.0f} | {med('download', 2):.0f} |",
        f"| `hubget sync` of a manifest holding acme/sharded (lock included) | {sy_wall:.2f} | {sy_bytes:.0f} | {med('sync', 2):.0f} |",
        f"| no-op `hubget sync` of a 10-repository manifest | {noop:.3f} | 0 | {noop_requests} (max) |",
        "",
        f"Goals: the sync costs no more than the download: {verdict(sy_bytes <= dl_bytes * 1.01)} in bytes "
        f"({sy_bytes / dl_bytes:.3f}x), wall {sy_wall / dl_wall:.2f}x (lock and the pin's check against the Hub "
        f"included); a no-op sync of 10 repositories under one second: {verdict(noop < 1.0)} ({noop:.3f} s, "
        f"{noop_requests} requests).",
        END,
    ])
    print(text)
    if not args.no_record:
        record(BEGIN, END, text)


if __name__ == "__main__":
    main()
