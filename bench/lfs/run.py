#!/usr/bin/env python3
"""Issue 5 benchmark: hubget `--backend lfs --no-fallback`, parallel ranges vs one connection.

Setup (one command, nothing from the internet):
  * hubsim (release) serves one random LFS file (default 1 GiB) from its CDN origin, shaped to
    C bytes/s per connection and a total cap T >= 4C (defaults 25 MB/s and 100 MB/s);
  * hubget (release) downloads it with `--backend lfs --no-fallback` (default connections, 8)
    and with `--connections 1`, alternating, each into a fresh cache; medians of N runs.

The file is a plain LFS object: the lfs backend fetches LFS and Xet-backed files the same way
(batch API href on the CDN, then ranged GETs), so the Xet fixture (`--big-mib`) would only make
hubsim's start-up slower (a 1 GiB upload through hf-xet). Use `--xet` to bench it anyway.

Reported: wall time of the whole `hubget download` (resolve, batch, transfer, sha256 verify,
rename), throughput = size / wall as a fraction of T, the ratio multi / single, peak RSS (GNU
time "Maximum resident set size"), and CDN bytes served per run (hubsim counters: a resumed or
repeated range would show as more than the file size).

Usage: bench/lfs/run.py [--runs 3] [--size-mib 1024] [--rate-per-conn B] [--rate-total B]
                        [--connections N] [--latency-ms N] [--xet] [--no-build] [--no-record]
Env:   CARGO (default cargo).
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")
BEGIN, END = "<!-- lfs:begin -->", "<!-- lfs:end -->"
REPO, PATH = "bench/lfs-big", "big.bin"


def log(msg):
    print(f"[bench/lfs] {msg}", file=sys.stderr, flush=True)


def build(cargo):
    log("building hubsim, hubget and the lfs plugin (release)")
    subprocess.run(
        [cargo, "build", "--release", "-p", "hubsim", "-p", "hubget", "-p", "hubget-lfs"],
        cwd=ROOT,
        check=True,
    )


def start_hubsim(tmp, args):
    info = os.path.join(tmp, "info.json")
    cmd = [
        os.path.join(ROOT, "target", "release", "hubsim"), "serve", "--info", info,
        "--rate-per-conn", str(args.rate_per_conn), "--rate-total", str(args.rate_total),
        "--latency-ms", str(args.latency_ms),
    ]
    if args.xet:
        cmd += ["--big-mib", str(args.size_mib)]
        repo, path = "acme/big", None
    else:
        spec = os.path.join(tmp, "spec.toml")
        with open(spec, "w") as f:
            f.write(
                f'[[repos]]\nid = "{REPO}"\ntype = "model"\n\n[[repos.commits]]\nmessage = "big"\n'
                f'files = [{{ path = "{PATH}", storage = "lfs", content = {{ kind = "random", '
                f'size = {args.size_mib * 1024 * 1024}, seed = 5 }} }}]\n'
            )
        cmd += ["--spec", spec]
        repo, path = REPO, PATH
    log("starting hubsim: " + " ".join(cmd[1:]))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while not os.path.exists(info):
        if proc.poll() is not None:
            raise SystemExit(f"hubsim exited: {proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            raise SystemExit("hubsim did not start in 15 minutes")
        time.sleep(0.2)
    with open(info) as f:
        sim = json.load(f)
    r = next(r for r in sim["repos"] if r["id"] == repo)
    f = r["files"][0] if path is None else next(f for f in r["files"] if f["path"] == path)
    return proc, sim, repo, f


def control(sim, route, method="GET"):
    req = urllib.request.Request(f"{sim['control_url']}/{route}", method=method)
    with urllib.request.urlopen(req) as resp:
        body = resp.read()
    return json.loads(body) if body else None


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_hubget(sim, repo, file, connections, tmp):
    home = tempfile.mkdtemp(prefix="home-", dir=tmp)
    cache = os.path.join(home, "cache")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": home,
        "HF_HOME": os.path.join(home, "hf"),
        "XDG_CONFIG_HOME": os.path.join(home, "xdg"),
        "XDG_CACHE_HOME": os.path.join(home, "xdg-cache"),
        "HUBGET_PLUGIN_DIR": os.path.join(ROOT, "target", "release"),
    }
    cmd = [
        "/usr/bin/time", "-v",
        os.path.join(ROOT, "target", "release", "hubget"), "download", repo, file["path"],
        "--endpoint", sim["hub_url"], "--cache-dir", cache,
        "--backend", "lfs", "--no-fallback",
    ]
    if connections is not None:
        cmd += ["--connections", str(connections)]
    control(sim, "reset-counters", "POST")
    t0 = time.monotonic()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        raise SystemExit(f"hubget failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-4000:]}")
    counters = control(sim, "counters")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    rss_mb = int(m.group(1)) * 1024 / 1e6 if m else float("nan")
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    target = last if os.path.isfile(last) else os.path.join(last, file["path"])
    ok = os.path.isfile(target) and sha256(target) == file["sha256"]
    shutil.rmtree(home, ignore_errors=True)
    return {
        "wall_s": wall,
        "rss_mb": rss_mb,
        "cdn_bytes": counters["bytes"]["cdn"],
        "cdn_requests": counters["total_requests"]["cdn"],
        "sha256_ok": ok,
    }


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
        if names:
            cpu = f"{names[0]} x{len(names)}"
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return f"{platform.system()} {platform.release()}, {cpu}{mem}"


def record(section):
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# hubget benchmark results\n"
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)
    log(f"recorded in {RESULTS}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--rate-per-conn", type=int, default=25_000_000)
    p.add_argument("--rate-total", type=int, default=100_000_000)
    p.add_argument("--connections", type=int, default=None, help="hubget --connections (default: hubget's)")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--xet", action="store_true", help="bench the Xet fixture (acme/big) instead")
    p.add_argument("--no-build", action="store_true")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args()
    if args.rate_total < 4 * args.rate_per_conn:
        raise SystemExit("the total cap must be at least 4x the per-connection cap")
    if not args.no_build:
        build(os.environ.get("CARGO", "cargo"))
    tmp = tempfile.mkdtemp(prefix="hubget-bench-lfs-")
    proc, sim, repo, file = start_hubsim(tmp, args)
    try:
        runs = {"multi": [], "single": []}
        for i in range(args.runs):
            for name, conns in (("multi", args.connections), ("single", 1)):
                r = run_hubget(sim, repo, file, conns, tmp)
                r["mb_s"] = file["size"] / r["wall_s"] / 1e6
                runs[name].append(r)
                log(f"run {i + 1} {name}: {r['wall_s']:.2f} s, {r['mb_s']:.1f} MB/s, "
                    f"RSS {r['rss_mb']:.1f} MB, CDN {r['cdn_bytes']} B in {r['cdn_requests']} requests, "
                    f"sha256 {'ok' if r['sha256_ok'] else 'WRONG'}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: {f: statistics.median(r[f] for r in v) for f in ("wall_s", "mb_s", "rss_mb", "cdn_bytes")}
           for k, v in runs.items()}
    cap = args.rate_total / 1e6
    frac = med["multi"]["mb_s"] / cap
    ratio = med["multi"]["mb_s"] / med["single"]["mb_s"]
    rss = max(med["multi"]["rss_mb"], med["single"]["rss_mb"])
    all_ok = all(r["sha256_ok"] for v in runs.values() for r in v)
    goal = lambda ok: "met" if ok else "**missed**"
    conns = args.connections if args.connections is not None else "8, the default"
    section = f"""## lfs

`bench/lfs/run.py` (issue 5): hubget `--backend lfs --no-fallback`, one {args.size_mib} MiB
{'Xet-backed' if args.xet else 'LFS'} file from hubsim's CDN origin (batch API href, ranged GETs),
release builds, loopback.

* Date: {datetime.date.today().isoformat()}; machine: {machine()}
* Shape: {args.rate_per_conn / 1e6:g} MB/s per connection, total cap {cap:g} MB/s,
  latency {args.latency_ms} ms; connections: {conns} vs `--connections 1`
* Medians of {args.runs} runs (alternating), wall time of the whole `hubget download`
  (resolve, batch, transfer, sha256 verification, rename); sha256 of every result checked:
  {'all correct' if all_ok else 'SOME WRONG'}

| run | wall (s) | MB/s | fraction of cap | peak RSS (MB) | CDN bytes |
|---|---:|---:|---:|---:|---:|
| multi ({conns}) | {med['multi']['wall_s']:.2f} | {med['multi']['mb_s']:.1f} | {frac:.2f} | {med['multi']['rss_mb']:.1f} | {med['multi']['cdn_bytes']:.0f} |
| single (1) | {med['single']['wall_s']:.2f} | {med['single']['mb_s']:.1f} | {med['single']['mb_s'] / cap:.2f} | {med['single']['rss_mb']:.1f} | {med['single']['cdn_bytes']:.0f} |

Goals: fraction of the cap >= 0.9: {frac:.2f} ({goal(frac >= 0.9)}); ratio to one connection
>= 3x: {ratio:.2f}x ({goal(ratio >= 3)}); peak RSS < 100 MB: {rss:.1f} MB ({goal(rss < 100)}).
"""
    print(section)
    print(json.dumps(runs, indent=1), file=sys.stderr)
    if not args.no_record:
        record(section)


if __name__ == "__main__":
    main()
