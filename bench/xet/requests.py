#!/usr/bin/env python3
"""Issue 25 benchmark: how many requests a Xet download costs, hubget against hf_xet.

Uses bench/xet/run.py's set-up (hubsim release, one random Xet file from the real CAS, shaped
like its case; the Python client's venv) and, per client and run, hubsim's counters: the CAS
reconstruction queries (V1 + V2), the xorb range GETs (`fetch_term`), the Hub's xet-read-token
requests, and the CAS bytes served. Goal (issue 25): reconstruction queries and xorb GETs each
no more than hf_xet's on the same file, tokens at most one per repository and run.

Usage: bench/xet/requests.py [--runs 1] [--size-mib 256] [--no-build] [--no-record]
"""
import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from benchlib import control, record  # noqa: E402

spec = importlib.util.spec_from_file_location("xet_run", os.path.join(HERE, "run.py"))
xr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(xr)

def markers(size_mib):
    """The RESULTS.md section of a size: 256 MiB and 1 GiB have their own."""
    name = {256: "xet-requests", 1024: "xet-requests-1g"}.get(size_mib, f"xet-requests-{size_mib}m")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def counted(info):
    c = control(info, "/counters")
    n = lambda key: c["requests"].get(key, 0)
    return {
        "reconstructions": n("cas:reconstructions_v1") + n("cas:reconstructions_v2"),
        "xorb_gets": n("cas:fetch_term"),
        "tokens": n("hub:xet_read_token"),
        "cas_bytes": c["bytes"]["cas"],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        xr.build(os.environ.get("CARGO", "cargo"))
    hf, versions = xr.venv(os.environ.get("BENCH_VENV", os.path.join(xr.ROOT, "target", "bench", "venv")))
    work = tempfile.mkdtemp(prefix="bench-xet-requests-")
    proc, info = xr.start_hubsim(args.size_mib, work)
    rows = []
    try:
        for i in range(args.runs):
            for who in ("hubget", "python"):
                control(info, "/reset-counters", "POST")
                if who == "hubget":
                    wall, _, _, path, home = xr.run_hubget(info, work, i, None)
                else:
                    wall, _, _, path, home = xr.run_python(hf, info, work, i)
                row = dict(tool=who, wall_s=round(wall, 2), **counted(info))
                rows.append(row)
                xr.log(json.dumps(row))
                shutil.rmtree(home, ignore_errors=True)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    BEGIN, END = markers(args.size_mib)
    flag = "" if args.size_mib == 256 else f" --size-mib {args.size_mib}"
    lines = [
        BEGIN,
        f"### Requests per download: one {args.size_mib} MiB random Xet file "
        f"(`bench/xet/requests.py{flag}`, {time.strftime('%Y-%m-%d')}, {args.runs} run(s))",
        "",
        f"hubsim's counters per run; hf_xet {versions[1]} (huggingface_hub {versions[0]}); "
        "shaping as in the xet case above.",
        "",
        "| tool | wall (s) | reconstruction queries | xorb GETs | xet tokens | CAS bytes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['tool']} | {r['wall_s']} | {r['reconstructions']} | {r['xorb_gets']} | "
            f"{r['tokens']} | {r['cas_bytes']} |"
        )
    h = [r for r in rows if r["tool"] == "hubget"][-1]
    p = [r for r in rows if r["tool"] == "python"][-1]
    verdict = lambda a, b: "met" if a <= b else "MISSED"
    lines += [
        "",
        f"Goals: reconstruction queries <= hf_xet's: {verdict(h['reconstructions'], p['reconstructions'])} "
        f"({h['reconstructions']} vs {p['reconstructions']}); xorb GETs <= hf_xet's: "
        f"{verdict(h['xorb_gets'], p['xorb_gets'])} ({h['xorb_gets']} vs {p['xorb_gets']}); "
        f"tokens <= 1: {verdict(h['tokens'], 1)} ({h['tokens']}).",
        END,
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_record:
        record(BEGIN, END, text)


if __name__ == "__main__":
    main()
