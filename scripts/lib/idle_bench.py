#!/usr/bin/env python3
"""Idle cost of `autobump run`: N direct-push policies (default 100), each watching
its own image in a local docker-registry and its own manifest in one local GitOps
repository, with nothing new to deploy. Prints the start-up time to ready (/readyz:
every policy reconciled once), resident memory, and CPU time per idle hour
(extrapolated from a measured idle period of several ticks).

Usage: idle_bench.py AUTOBUMP_BINARY [--policies N] [--idle SECONDS] [--interval 10s]
"""
import argparse
import concurrent.futures
import sqlite3
import gzip
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


def push(reg, repo, tag):
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2026-11-20T10:00:00Z",
                         "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = gzip.compress(f"{repo} {tag}\n".encode(), mtime=0)
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        _, headers, _ = http("POST", f"http://{reg}/v2/{repo}/blobs/uploads/")
        location = headers["Location"]
        if not location.startswith("http"):
            location = f"http://{reg}{location}"
        sep = "&" if "?" in location else "?"
        http("PUT", f"{location}{sep}digest={digest}", blob, {"Content-Type": "application/octet-stream"})
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(), "size": len(layer)}],
    }).encode()
    http("PUT", f"http://{reg}/v2/{repo}/manifests/{tag}", manifest,
         {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return cpu, memory(pid)["VmRSS"]


def memory(pid):
    """Resident memory in MiB: the whole (VmRSS), and its anonymous (heap, stacks) and
    file-backed (the mapped binary and libraries) parts."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "RssAnon", "RssFile", "Threads"):
                value = int(line.split()[1])
                out[key] = value if key == "Threads" else value / 1024
    return out


def preload(binary, work, n, entries):
    """Gives every policy `entries` history entries in the state database (as weeks
    of real use would), through the schema autobump creates."""
    db = f"{work}/state.db"
    subprocess.run([binary, "hold", "app0", "--reason", "schema", "--state", db],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([binary, "unhold", "app0", "--state", db], check=True, stdout=subprocess.DEVNULL)
    con = sqlite3.connect(db)
    with con:
        con.execute("DELETE FROM history")
        con.execute("DELETE FROM policy")
        reasons = ["Deployed", "Pushed", "Promoted", "Held", "Unheld"]
        for i in range(n):
            name = f"app{i}"
            con.executemany(
                "INSERT INTO history (policy, seq, at, reason, message) VALUES (?, ?, ?, ?, ?)",
                ((name, k, f"2026-{1 + k % 11:02d}-{1 + k % 27:02d}T10:00:00.000000000Z",
                  reasons[k % len(reasons)], f"{name}: decision {k} of the pre-loaded history")
                 for k in range(1, entries + 1)))
            con.execute("INSERT INTO policy (name, state, last_seq) VALUES (?, '{}', ?)", (name, entries))
    con.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--interval", default="10s")
    ap.add_argument("--history", type=int, default=0,
                    help="history entries pre-loaded per policy into the state database")
    ap.add_argument("--perf", metavar="FILE",
                    help="record a CPU profile of the idle period with `perf record` into FILE")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="autobump-idle.")
    procs = []
    try:
        port = free_port()
        reg = f"127.0.0.1:{port}"
        with open(f"{work}/registry.yml", "w") as f:
            f.write(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {work}/reg}}}}\n"
                    f"http: {{addr: {reg}}}\n")
        procs.append(subprocess.Popen(["docker-registry", "serve", f"{work}/registry.yml"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for _ in range(100):
            try:
                http("GET", f"http://{reg}/v2/")
                break
            except Exception:
                time.sleep(0.05)
        n = args.policies
        # Eight pushes at once: 10,000 images one by one take longer than the run.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: push(reg, f"bench/app{i}", "1.0.0"), range(n)))
        checkout = f"{work}/checkout"
        os.makedirs(f"{checkout}/apps")
        os.makedirs(f"{work}/policies")
        for i in range(n):
            with open(f"{checkout}/apps/app{i}.yaml", "w") as f:
                f.write(f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app{i}}}\nspec:\n"
                        f"  template:\n    spec:\n      containers:\n        - name: app\n"
                        f"          image: {reg}/bench/app{i}:1.0.0\n")
            with open(f"{work}/policies/app{i}.yaml", "w") as f:
                f.write(f"apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata: {{name: app{i}}}\n"
                        f"spec:\n  images:\n    - name: {reg}/bench/app{i}\n      tags: {{semver: {{}}}}\n"
                        f"  source:\n    repo: file://{work}/infra.git\n    include: [\"apps/app{i}.yaml\"]\n"
                        f"  directPush: {{}}\n")
        git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
        subprocess.run(["git", "init", "-q", "-b", "main", checkout], check=True)
        subprocess.run(git + ["-C", checkout, "add", "-A"], check=True)
        subprocess.run(git + ["-C", checkout, "commit", "-qm", "apps"], check=True)
        subprocess.run(["git", "clone", "-q", "--bare", checkout, f"{work}/infra.git"], check=True)

        if args.history:
            preload(os.path.abspath(args.binary), work, n, args.history)

        listen = f"127.0.0.1:{free_port()}"
        start = time.monotonic()
        ab = subprocess.Popen(
            [os.path.abspath(args.binary), "run", "--policies", "policies", "--state", "state.db",
             "--cache-dir", "cache", "--interval", args.interval, "--listen", listen],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={k: v for k, v in os.environ.items() if k != "GITHUB_TOKEN"})
        procs.append(ab)
        ready = None
        while time.monotonic() - start < 300:
            try:
                if http("GET", f"http://{listen}/readyz")[0] == 200:
                    ready = time.monotonic() - start
                    break
            except Exception:
                pass
            time.sleep(0.05)
        if ready is None:
            sys.exit("autobump did not become ready within 300 s")
        cpu0, rss0 = proc_stats(ab.pid)
        perf = None
        if args.perf:
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "199", "--call-graph", "dwarf,16384",
                                     "-o", args.perf, "-p", str(ab.pid)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.idle)
        cpu1, rss1 = proc_stats(ab.pid)
        mem = memory(ab.pid)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=120)
        metrics = http("GET", f"http://{listen}/metrics")[2].decode()
        reconciles = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                         if line.startswith("autobump_reconciles_total{") and 'result="ok"' in line)
        errors = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                     if line.startswith("autobump_reconciles_total{") and 'result="error"' in line)
        per_hour = (cpu1 - cpu0) / args.idle * 3600
        seconds = {"s": 1, "m": 60, "h": 3600}[args.interval[-1]] * float(args.interval[:-1])
        due = n * args.idle / seconds
        print(f"{n} policies, --interval {args.interval}: ready after {ready:.2f} s "
              f"(first pass over every policy, {cpu0:.2f} s CPU)")
        print(f"resident memory: {rss0:.1f} MiB at ready, {rss1:.1f} MiB after {args.idle:.0f} s idle "
              f"({mem.get('RssAnon', 0):.1f} MiB anonymous, {mem.get('RssFile', 0):.1f} MiB file-backed; "
              f"{mem.get('Threads', 0)} threads)")
        print(f"idle CPU: {cpu1 - cpu0:.2f} s over {args.idle:.0f} s = {per_hour:.0f} s per hour "
              f"({per_hour / 36:.1f}% of one core); {reconciles:.0f} reconciles ok, {errors:.0f} failed")
        if reconciles:
            print(f"CPU per reconcile: {(cpu1 - cpu0) / reconciles * 1000:.2f} ms; reconciles in "
                  f"{args.idle:.0f} s: {reconciles + errors:.0f} of {due:.0f} due ({(reconciles + errors) / due:.0%} of ticks kept)")
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
