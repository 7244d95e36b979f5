#!/usr/bin/env python3
"""Issue 25 benchmark: a dataset of many regular files under the Hub's request quotas.

Setup (one command, nothing from the internet):
  * hubsim (release) with its Hub profile: the resolvers and api buckets metered per fixed
    window (defaults: 300 requests per 20 s window each), the IETF `RateLimit` /
    `RateLimit-Policy` fields on every metered answer, 429s with `r=0` and no `Retry-After`;
  * a dataset of --files regular files (default 2000, a few bytes each);
  * hubget (release, default backends) and the pinned Python client's `hf download` (the
    virtualenv the test suite uses, `target/hubsim-venv`), alternating, each into a fresh cache.

Reported per tool: exit code, files landed, wall time, the floor the quota implies for that
tool's request count (resolves / quota windows), wall / floor, and the requests hubsim answered
429 (its counters). Goals (issue 25): no file fails; at most --max-workers (8) 429s for hubget;
wall <= 1.15x the floor.

Usage: bench/limits/run.py [--runs 1] [--files 2000] [--quota 300] [--window-secs 20]
                           [--no-build] [--no-record]
"""
import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchlib import REL, ROOT, build_release, control, record, start_hubsim  # noqa: E402

BEGIN, END = "<!-- limits:begin -->", "<!-- limits:end -->"
REPO = "bench/rows"


def log(msg):
    print(f"[bench/limits] {msg}", file=sys.stderr, flush=True)


def spec_toml(files):
    rows = ",\n".join(
        f'  {{ path = "data/{i:05}.txt", content = {{ kind = "text", text = "row {i}\\n" }} }}'
        for i in range(files)
    )
    return (
        f'[[repos]]\nid = "{REPO}"\ntype = "dataset"\n\n[[repos.commits]]\n'
        f'message = "rows"\nfiles = [\n{rows}\n]\n'
    )


def start(tmp, args):
    spec = os.path.join(tmp, "spec.toml")
    with open(spec, "w") as f:
        f.write(spec_toml(args.files))
    return start_hubsim(
        ["--spec", spec, "--hub-profile", "--window-secs", str(args.window_secs),
         "--api-quota", str(args.quota), "--resolvers-quota", str(args.quota),
         "--hub-latency-ms", str(args.hub_latency_ms)],
        os.path.join(tmp, "info.json"),
        timeout=300,
    )


def hub_requests(c):
    """(requests to the Hub origin, of them answered 429, resolves)."""
    hub = [r for r in c["log"] if str(r["origin"]).lower() == "hub"]
    limited = sum(1 for r in hub if r["status"] == 429)
    resolves = sum(1 for r in hub if r["route"] == "resolve")
    return len(hub), limited, resolves


def landed(cache):
    snap = os.path.join(cache, "datasets--" + REPO.replace("/", "--"), "snapshots")
    n = 0
    for dirpath, _, names in os.walk(snap):
        n += sum(1 for x in names if x.endswith(".txt"))
    return n


def run_tool(tool, sim, args):
    home = tempfile.mkdtemp(prefix="bench-limits-")
    env = dict(os.environ)
    env.update({
        "HOME": home, "HF_HOME": os.path.join(home, "hf"), "HF_ENDPOINT": sim["hub_url"],
        "HUBGET_PLUGIN_DIR": REL, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    })
    env.pop("HF_TOKEN", None)
    if tool == "hubget":
        cmd = [os.path.join(REL, "hubget"), "download", REPO, "--repo-type", "dataset", "--quiet"]
    else:
        hf = os.path.join(ROOT, "target", "hubsim-venv", "bin", "hf")
        cmd = [hf, "download", REPO, "--repo-type", "dataset"]
    control(sim, "/reset-counters", "POST")
    start = time.monotonic()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    total, limited, resolves = hub_requests(control(sim, "/counters"))
    files = landed(os.path.join(home, "hf", "hub"))
    if p.returncode != 0:
        log(f"{tool} exited {p.returncode}: {p.stderr.strip().splitlines()[-1:]}")
    shutil.rmtree(home, ignore_errors=True)
    # The floor: every resolve the tool needs, at `quota` per window; the last window need not
    # be waited out.
    served = resolves - limited
    floor = max(0, math.ceil(served / args.quota) - 1) * args.window_secs
    return {
        "tool": tool, "exit": p.returncode, "files": files, "wall_s": round(wall, 1),
        "hub_requests": total, "answered_429": limited, "resolves": served,
        "floor_s": floor, "wall_over_floor": round(wall / floor, 2) if floor else None,
    }


def render(rows, args):
    lines = [
        BEGIN,
        f"### Case 12: {args.files} regular files under a quota of {args.quota} resolves and "
        f"{args.quota} api calls per {args.window_secs} s window (hubsim `--hub-profile`)",
        "",
        f"Run {datetime.date.today()}, {len(rows) // 2} run(s) per tool; the floor is the "
        "windows the tool's own resolves need (hubget: one per file; the Python client: a HEAD "
        "and a GET per file).",
        "",
        "| tool | exit | files | wall (s) | floor (s) | wall / floor | Hub requests | answered 429 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['tool']} | {r['exit']} | {r['files']} | {r['wall_s']} | {r['floor_s']} | "
            f"{r['wall_over_floor']} | {r['hub_requests']} | {r['answered_429']} |"
        )
    hub = [r for r in rows if r["tool"] == "hubget"]
    verdicts = []
    if hub:
        h = hub[-1]
        verdicts.append(f"no file fails: {'met' if h['exit'] == 0 and h['files'] == args.files else 'MISSED'}")
        verdicts.append(f"at most 8 answered 429: {'met' if h['answered_429'] <= 8 else 'MISSED'} ({h['answered_429']})")
        ratio = h["wall_over_floor"]
        verdicts.append(f"wall <= 1.15x the floor: {'met' if ratio and ratio <= 1.15 else 'MISSED'} ({ratio})")
    lines += ["", "Goals (hubget): " + "; ".join(verdicts) + ".", END]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--quota", type=int, default=300)
    ap.add_argument("--window-secs", type=int, default=20)
    ap.add_argument("--hub-latency-ms", type=int, default=20)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        log("building hubsim, hubget and its plugins (release)")
        build_release("hubget-lfs", "hubget-xet", "hubget-mirror")
    if not os.path.exists(os.path.join(ROOT, "target", "hubsim-venv", "bin", "hf")):
        sys.exit("the pinned Python client is missing: run the test suite once (it makes "
                 "target/hubsim-venv)")
    with tempfile.TemporaryDirectory() as tmp:
        proc, sim = start(tmp, args)
        rows = []
        try:
            for i in range(args.runs):
                for tool in ("hubget", "python"):
                    log(f"run {i + 1}/{args.runs}: {tool}")
                    # Start each run in a fresh window, so runs are comparable.
                    time.sleep(args.window_secs)
                    rows.append(run_tool(tool, sim, args))
                    log(json.dumps(rows[-1]))
        finally:
            proc.terminate()
            proc.wait()
    text = render(rows, args)
    print(text)
    if not args.no_record:
        record(BEGIN, END, text)


if __name__ == "__main__":
    main()
