"""Helpers the per-issue bench scripts share (bench/limits, bench/sync, bench/xet/requests.py):
start a release hubsim and wait for its info file, talk to its control routes, and record a
section of bench/RESULTS.md between markers."""
import json
import os
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
REL = os.path.join(ROOT, "target", "release")
RESULTS = os.path.join(ROOT, "bench", "RESULTS.md")


def build_release(*packages):
    """`cargo build --release` of hubsim, hubget and the given plugin packages."""
    cmd = ["cargo", "build", "--release", "-p", "hubsim", "-p", "hubget"]
    for p in packages:
        cmd += ["-p", p]
    subprocess.run(cmd, cwd=ROOT, check=True)


def start_hubsim(args, info, timeout=900):
    """Starts `hubsim serve --info INFO ARGS...`; returns (process, the info JSON)."""
    cmd = [os.path.join(REL, "hubsim"), "serve", "--info", info] + list(args)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not os.path.exists(info):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            sys.exit("hubsim did not start")
        time.sleep(0.2)
    with open(info) as f:
        return proc, json.load(f)


def control(sim, route, method="GET"):
    """A hubsim control route (`/counters`, `/reset-counters`, ...); its JSON answer or None."""
    req = urllib.request.Request(sim["control_url"] + route, method=method)
    with urllib.request.urlopen(req) as r:
        body = r.read()
    return json.loads(body) if body else None


def record(begin, end, text):
    """Puts `text` (which starts with `begin` and ends with `end`) into bench/RESULTS.md in place
    of the section between those markers, or at the end."""
    with open(RESULTS) as f:
        old = f.read()
    if begin in old and end in old:
        new = old[: old.index(begin)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(RESULTS, "w") as f:
        f.write(new)
