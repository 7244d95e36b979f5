#!/usr/bin/env python3
"""Issue 29 benchmark: hubget xet's peak memory on highly compressible data.

hubsim (release) serves one --size-mib Xet file of hubsim's `sparse` content (zeros with a
seeded 8-byte value every 4 KiB: every chunk distinct, about 100x compressible, so a small wire
feed decodes to many bytes), uploaded through hf-xet into the real CAS; unshaped loopback, so
the decoder, not the link, sets the pace. hubget (release) downloads it with `--backend xet
--no-fallback` --runs times into fresh caches under GNU time: peak RSS (goal: at most 150 MiB),
wall time, bytes on the wire from hubsim's counters, and the sha256 check.

Usage: bench/xet/compressible.py [--runs 3] [--size-mib 512] [--no-build] [--no-record]
"""
import argparse
import datetime
import hashlib
import os
import shutil
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
from benchlib import REL, build_release, control, record, start_hubsim  # noqa: E402
from run import timed  # noqa: E402  (GNU time: wall, peak RSS KiB, CPU s)

BEGIN, END = "<!-- xet-compressible:begin -->", "<!-- xet-compressible:end -->"
REPO, PATH = "bench/sparse", "weights.bin"
GOAL_MIB = 150


def log(msg):
    print(f"[bench/xet/compressible] {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        build_release("hubget-xet")
    tmp = tempfile.mkdtemp(prefix="bench-xet-sparse-")
    spec = os.path.join(tmp, "spec.toml")
    with open(spec, "w") as f:
        f.write(f'[[repos]]\nid = "{REPO}"\ntype = "model"\n\n[[repos.commits]]\nmessage = "weights"\n'
                f'files = [{{ path = "{PATH}", storage = "xet", content = {{ kind = "sparse", '
                f'size = {args.size_mib * 1024 * 1024}, seed = 7 }} }}]\n')
    log("starting hubsim (uploading through hf-xet)")
    proc, sim = start_hubsim(["--spec", spec], os.path.join(tmp, "info.json"))
    expected = next(f for r in sim["repos"] for f in r["files"] if f["path"] == PATH)
    runs = []
    try:
        for i in range(args.runs):
            home = tempfile.mkdtemp(dir=tmp)
            env = dict(os.environ, HOME=home, HF_HOME=os.path.join(home, "hf"))
            env.pop("HF_TOKEN", None)
            control(sim, "/reset-counters", "POST")
            cmd = [os.path.join(REL, "hubget"), "download", REPO, PATH, "--endpoint", sim["hub_url"],
                   "--backend", "xet", "--no-fallback", "--quiet", "--cache-dir", os.path.join(home, "cache")]
            wall, rss_kib, cpu = timed(cmd, env)
            wire = control(sim, "/counters")["bytes"].get("cas", 0)
            path = next(os.path.join(d, PATH) for d, _, fs in os.walk(os.path.join(home, "cache")) if PATH in fs)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != expected["sha256"]:
                sys.exit("hubget produced a wrong file")
            runs.append((wall, rss_kib / 1024, cpu, wire))
            log(f"run {i + 1}: {wall:.2f} s, peak RSS {rss_kib / 1024:.0f} MiB, CPU {cpu:.2f} s, "
                f"{wire} bytes from the CAS")
            shutil.rmtree(home)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    med = lambda k: statistics.median(r[k] for r in runs)
    size = expected["size"]
    rss_max = max(r[1] for r in runs)
    text = "\n".join([
        BEGIN,
        f"### xet on highly compressible data (`bench/xet/compressible.py`, {datetime.date.today()}, "
        f"{args.runs} runs, medians)",
        "",
        f"One {args.size_mib} MiB Xet file of hubsim's `sparse` content (every chunk distinct, about 100x "
        "compressible), real CAS, unshaped loopback, hubget `--backend xet --no-fallback`.",
        "",
        "| wall (s) | peak RSS (MiB), median / max | CPU (s) | bytes from the CAS / file size |",
        "| --- | --- | --- | --- |",
        f"| {med(0):.2f} | {med(1):.0f} / {rss_max:.0f} | {med(2):.2f} | {med(3) / size:.4f} |",
        "",
        f"Goal: peak RSS at most {GOAL_MIB} MiB whatever the compression ratio: "
        f"{'met' if rss_max <= GOAL_MIB else 'MISSED'} (max of the runs).",
        END,
    ])
    print(text)
    if not args.no_record:
        record(BEGIN, END, text)


if __name__ == "__main__":
    main()
