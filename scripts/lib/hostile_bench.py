#!/usr/bin/env python3
"""What hostile peers cost autobump: prints figures, asserts nothing.

Usage: hostile_bench.py BIN registry|webhooks|all [--cap SECONDS]

registry  A registry whose tag pages repeat one tag and always link to a new
          `last=` (F3), one that answers 429 with `Retry-After: 3600`, and one that
          sends its body at 1 byte/s (W4). For each: `autobump resolve` wall time,
          registry requests and peak RSS; then `autobump run --once` with the
          hostile policy next to a well-behaved one (did the good one reconcile, how
          long the run took), and `autobump run` sent SIGTERM mid-request (seconds
          from the signal to the exit). Runs that do not end are stopped after --cap
          seconds (default 60) and reported as such.
webhooks  `autobump run --listen` under 300 unauthenticated clients each sending a
          1.9 MB body slowly, then 300 connections that never finish their headers
          (F4): the controller's RSS before, during and after, /healthz latency
          during, how long stalled connections are kept; then the same controller
          under `ulimit -n 256` with 300 idle connections (does it stay up).

Everything runs on 127.0.0.1; the registries are small servers in this script, the
git repository a local bare one.
"""
import http.server
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from idle_bench import free_port  # scripts/lib, next to this file


# ---------------------------------------------------------------------------
# Registries


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = 0

    def bump(self):
        with self.lock:
            self.n += 1
            return self.n


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up mid-answer are expected here


def start_registry(mode):
    """A tiny registry on 127.0.0.1. Modes: good (tags v1.0.0, v1.1.0), repeat
    (F3), retry-after (429, Retry-After: 3600), slow-body (1 byte/s)."""
    counter = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            n = counter.bump()
            if "/tags/list" not in self.path:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if mode == "retry-after":
                self.send_response(429)
                self.send_header("Retry-After", "3600")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            tags = ["v1.0.0", "v1.1.0"] if mode != "repeat" else ["v1.0.0"]
            body = json.dumps({"name": "app", "tags": tags}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if mode == "repeat":
                name = self.path.split("/v2/")[1].split("/tags/list")[0]
                self.send_header("Link", f'</v2/{name}/tags/list?n=1000&last=v1.0.0-{n}>; rel="next"')
            self.end_headers()
            if mode == "slow-body":
                try:
                    for b in body:
                        self.wfile.write(bytes([b]))
                        self.wfile.flush()
                        time.sleep(1)
                except OSError:
                    pass
            else:
                self.wfile.write(body)

    server = QuietServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, counter


def git(*args, cwd=None):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(root, refs):
    """A bare repository with deploy/app.yaml holding `refs`; returns its file:// URL."""
    bare = os.path.join(root, "repo.git")
    work = os.path.join(root, "work")
    git("init", "--quiet", "--bare", "--initial-branch=main", bare)
    git("init", "--quiet", "--initial-branch=main", work)
    os.makedirs(os.path.join(work, "deploy"))
    with open(os.path.join(work, "deploy/app.yaml"), "w") as f:
        for i, ref in enumerate(refs):
            f.write(f"---\nkind: Deployment\nmetadata: {{name: app{i}}}\nimage: {ref}\n")
    git("-c", "user.name=b", "-c", "user.email=b@x", "add", ".", cwd=work)
    git("-c", "user.name=b", "-c", "user.email=b@x", "commit", "--quiet", "-m", "init", cwd=work)
    git("push", "--quiet", bare, "main", cwd=work)
    return "file://" + bare, work


def policy(name, registry, repo_url):
    return (
        "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\n"
        f"metadata: {{name: {name}}}\nspec:\n  images:\n"
        f"    - prefix: {registry}/{name}/\n      tags: {{semver: {{}}}}\n"
        f"  source:\n    repo: {repo_url}\n    include: [\"deploy/**\"]\n  directPush: {{}}\n"
    )


def wait_child(proc, timeout):
    """Waits up to `timeout` s for `proc`; returns (exit code or None, peak RSS MiB of
    that child alone, from wait4)."""
    end = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss / 1024
        if time.monotonic() >= end:
            return None, None
        time.sleep(0.05)


def run_measured(cmd, cap, cwd=None, env=None, sigterm_after=None):
    """Runs `cmd`; returns (wall s, exit code or None if stopped at the cap, peak
    RSS MiB, seconds from SIGTERM to exit or None, stdout)."""
    start = time.monotonic()
    out_file = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out_file, stderr=subprocess.DEVNULL)
    term_wait = None
    if sigterm_after is not None:
        time.sleep(sigterm_after)
        proc.send_signal(signal.SIGTERM)
        t = time.monotonic()
        code, peak = wait_child(proc, cap)
        term_wait = time.monotonic() - t if code is not None else float("inf")
    else:
        code, peak = wait_child(proc, cap)
    if code is None:
        proc.kill()
        _, peak = wait_child(proc, 30)
    wall = time.monotonic() - start
    out_file.seek(0)
    out = out_file.read().decode(errors="replace")
    return wall, code, peak or 0.0, term_wait, out


def bench_registry(binary, cap):
    good, good_count = start_registry("good")
    good_host = f"127.0.0.1:{good.server_address[1]}"
    for mode in ["repeat", "retry-after", "slow-body"]:
        server, count = start_registry(mode)
        host = f"127.0.0.1:{server.server_address[1]}"
        with tempfile.TemporaryDirectory() as root:
            repo_url, work = make_repo(root, [f"{host}/bad/app:v1.0.0", f"{good_host}/good/app:v1.0.0"])
            pdir = os.path.join(root, "policies")
            os.makedirs(pdir)
            with open(os.path.join(pdir, "bad.yaml"), "w") as f:
                f.write(policy("bad", host, repo_url))
            env = dict(os.environ, DOCKER_CONFIG="/nonexistent")
            env.pop("GITHUB_TOKEN", None)

            wall, code, peak, _, _ = run_measured(
                [binary, "resolve", "--policy", os.path.join(pdir, "bad.yaml"), "--repo-dir", work],
                cap, env=env)
            ended = f"exit {code}" if code is not None else f"still running at the {cap} s cap"
            print(f"{mode:12} resolve: {wall:6.1f} s, {count.n:6d} requests, peak {peak:4.0f} MiB, {ended}")

            with open(os.path.join(pdir, "good.yaml"), "w") as f:
                f.write(policy("good", good_host, repo_url))
            count.n = 0
            good_count.n = 0
            wall, code, peak, _, out = run_measured(
                [binary, "run", "--once", "--policies", pdir, "--state", os.path.join(root, "state.json"),
                 "--cache-dir", os.path.join(root, "cache")], cap, env=env)
            ended = f"exit {code}" if code is not None else f"still running at the {cap} s cap"
            bumped = subprocess.run(
                ["git", "--git-dir", repo_url[len("file://"):], "show", "main:deploy/app.yaml"],
                capture_output=True, text=True).stdout
            good_done = "bumped" if f"{good_host}/good/app:v1.1.0" in bumped else "NOT bumped"
            print(f"{mode:12} run --once: {wall:6.1f} s, {count.n:6d} requests to it, "
                  f"peak {peak:4.0f} MiB, {ended}; the other policy: {good_done}")

            count.n = 0
            wall, code, peak, term, _ = run_measured(
                [binary, "run", "--policies", pdir, "--state", os.path.join(root, "state2.json"),
                 "--cache-dir", os.path.join(root, "cache2"), "--interval", "1h"],
                cap, env=env, sigterm_after=3)
            stopped = f"{term:.1f} s (exit {code})" if term != float("inf") else f"not within {cap} s (SIGKILL needed)"
            print(f"{mode:12} run + SIGTERM after 3 s: exits {stopped}, peak {peak:4.0f} MiB")
        server.shutdown()


# ---------------------------------------------------------------------------
# Webhook listener


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def healthz_ms(port, timeout=10):
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as r:
            r.read()
        return (time.monotonic() - start) * 1000
    except OSError:
        return float("inf")


def start_controller(binary, root, nofile=None):
    good, _ = start_registry("good")
    host = f"127.0.0.1:{good.server_address[1]}"
    repo_url, _ = make_repo(os.path.join(root, "r"), [f"{host}/good/app:v1.1.0"])
    pdir = os.path.join(root, "policies")
    os.makedirs(pdir, exist_ok=True)
    with open(os.path.join(pdir, "good.yaml"), "w") as f:
        f.write(policy("good", host, repo_url))
    port = free_port()
    env = dict(os.environ, AUTOBUMP_REGISTRY_WEBHOOK_TOKEN="s3cret", DOCKER_CONFIG="/nonexistent")
    env.pop("GITHUB_TOKEN", None)

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [binary, "run", "--policies", pdir, "--state", os.path.join(root, "state.json"),
         "--cache-dir", os.path.join(root, "cache"), "--interval", "1h", "--listen", f"127.0.0.1:{port}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "log"), "w"), preexec_fn=limit)
    for _ in range(200):
        if healthz_ms(port, 1) != float("inf"):
            break
        time.sleep(0.1)
    time.sleep(1)
    return proc, port, good


def slow_client(port, body_size, stop, results):
    """POST /webhooks/registry without a token, a 1.9 MB body at 64 KiB per 0.25 s."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(
            f"POST /webhooks/registry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {body_size}\r\n\r\n".encode())
        sent = 0
        chunk = b"x" * 65536
        while sent < body_size and not stop.is_set():
            s.sendall(chunk[: body_size - sent])
            sent += len(chunk)
            time.sleep(0.25)
        results.append(("sent", sent))
    except OSError as e:
        results.append(("closed", type(e).__name__))
    finally:
        try:
            s.close()
        except Exception:
            pass


def stalled_header(port, cap, held, lock):
    """Opens a connection, sends half a request head, records how long the server
    keeps it (None: still open when this client gives up after `cap` s)."""
    start = time.monotonic()
    closed = None
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=cap)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        while s.recv(4096):
            pass
        closed = time.monotonic() - start
    except socket.timeout:
        pass
    except OSError:
        closed = time.monotonic() - start
    with lock:
        held.append(closed)


def bench_webhooks(binary, cap):
    with tempfile.TemporaryDirectory() as root:
        proc, port, _good = start_controller(binary, root)
        base = rss_mib(proc.pid)
        print(f"baseline: RSS {base:.0f} MiB, /healthz {healthz_ms(port):.0f} ms")
        stop = threading.Event()
        results = []
        threads = [threading.Thread(target=slow_client, args=(port, 1_900_000, stop, results), daemon=True)
                   for _ in range(300)]
        for t in threads:
            t.start()
        peak, worst = base, 0.0
        t_end = time.monotonic() + min(cap, 20)
        while time.monotonic() < t_end and any(t.is_alive() for t in threads):
            peak = max(peak, rss_mib(proc.pid))
            worst = max(worst, healthz_ms(port))
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(5)
        closed = sum(1 for r in results if r[0] == "closed")
        time.sleep(5)
        after = rss_mib(proc.pid)
        alive = proc.poll() is None
        print(f"300 slow unauthenticated 1.9 MB bodies: RSS peak {peak:.0f} MiB, after {after:.0f} MiB; "
              f"/healthz worst {worst:.0f} ms; {closed} clients cut off by the server; controller "
              f"{'up' if alive else 'EXITED'}")

        held, lock = [], threading.Lock()
        threads = [threading.Thread(target=stalled_header, args=(port, cap, held, lock), daemon=True)
                   for _ in range(300)]
        for t in threads:
            t.start()
        time.sleep(1)
        during = healthz_ms(port)
        for t in threads:
            t.join(cap + 5)
        closed = [h for h in held if h is not None]
        span = f"{min(closed):.1f}-{max(closed):.1f} s" if closed else "-"
        print(f"300 stalled headers: {len(closed)} closed by the server (after {span}), "
              f"{len(held) - len(closed)} still open when the client gave up at {cap} s; "
              f"/healthz meanwhile {during:.0f} ms")
        proc.terminate()
        proc.wait(10)

    with tempfile.TemporaryDirectory() as root:
        proc, port, _good = start_controller(binary, root, nofile=256)
        socks = []
        for _ in range(300):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                break
        time.sleep(5)
        alive = proc.poll() is None
        during = healthz_ms(port, 5)
        for s in socks:
            s.close()
        time.sleep(2)
        after = healthz_ms(port, 5)
        print(f"ulimit -n 256, {len(socks)} idle connections: controller {'up' if alive else f'EXITED ({proc.returncode})'}; "
              f"/healthz during {during:.0f} ms, after closing them {after:.0f} ms")
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, what = sys.argv[1], sys.argv[2]
    cap = 60
    if "--cap" in sys.argv:
        cap = int(sys.argv[sys.argv.index("--cap") + 1])
    if what in ("registry", "all"):
        bench_registry(binary, cap)
    if what in ("webhooks", "all"):
        bench_webhooks(binary, cap)


if __name__ == "__main__":
    main()
