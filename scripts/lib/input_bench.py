#!/usr/bin/env python3
"""Feeds hostile and careless policy folders to `autobump check` and prints, per case,
the exit status, wall time, peak RSS and the first line of output (issue 14: F1, W1,
W2, W3, W9). Each run is killed after --timeout seconds and limited to --max-mib of
address space, so a build without the bounds cannot take the machine down.

Usage: input_bench.py BINARY [--timeout S] [--max-mib N] [--only NAME,...]
"""
import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HEAD = "apiVersion: autobump.dev/v1alpha1\nkind: Autobump\nmetadata:\n  name: {name}\n"
SPEC = (
    "spec:\n  images:\n{images}  source:\n    repo: https://github.com/example/infra.git\n"
    "  directPush: {{}}\n"
)


def policy(name, images="    - {prefix: registry.example.com/team/, tags: {dateSha: {}}}\n", labels=""):
    return HEAD.format(name=name) + labels + SPEC.format(images=images)


def alias_bomb(levels):
    """levels of ten aliases each to the level below: 10**levels scalars once expanded."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return HEAD.format(name="bomb") + "\n".join(lines) + "\n"


def many_keys(n):
    labels = "  labels:\n" + "".join(f"    k{i}: v\n" for i in range(n))
    return policy("keys", labels=labels)


def many_images(n):
    images = "".join(f"    - {{name: registry.example.com/team/app{i}, tags: {{dateSha: {{}}}}}}\n" for i in range(n))
    return policy("images", images=images)


def cases():
    """(name, what, builder(dir)) — each builder fills a fresh policies folder."""

    def files(**named):
        def build(d):
            for fname, text in named.items():
                with open(os.path.join(d, fname.replace("_", ".")), "wb") as f:
                    f.write(text if isinstance(text, bytes) else text.encode())

        return build

    def fifo(d):
        files(good_yaml=policy("good"))(d)
        os.mkfifo(os.path.join(d, "fifo.yaml"))

    def devzero(d):
        files(good_yaml=policy("good"))(d)
        os.symlink("/dev/zero", os.path.join(d, "zero.yaml"))

    return [
        ("F1-alias-6", "alias bomb, 6 levels", files(bomb_yaml=alias_bomb(6))),
        ("F1-alias-7", "alias bomb, 7 levels", files(bomb_yaml=alias_bomb(7))),
        ("F1-alias-9", "alias bomb, 9 levels", files(bomb_yaml=alias_bomb(9))),
        ("W1-fifo", "a FIFO named *.yaml", fifo),
        ("W2-devzero", "a symlink *.yaml -> /dev/zero", devzero),
        ("W3-keys-160k", "160,000 label keys (2.1 MB)", files(keys_yaml=many_keys(160_000))),
        ("W3-keys-60k", "60,000 label keys, one duplicate (under 1 MiB)",
         files(keys_yaml=many_keys(60_000).replace("    k7: v\n", "    k59999: v\n"))),
        ("W3-images-80k", "80,000 images (4.6 MB)", files(images_yaml=many_images(80_000))),
        ("W3-images-15k", "15,000 images (under 1 MiB)", files(images_yaml=many_images(15_000))),
        ("W9-empty", "an empty file and one with only ---", files(a_yaml="", b_yaml="---\n# nothing\n")),
        ("F2-non-utf8", "a policy file that is not UTF-8", files(bad_yaml=b"metadata:\n  name: \xff\xfe\n")),
    ]


def run(binary, d, timeout, max_mib):
    """Runs `binary check d` under /usr/bin/time (its own peak RSS: the kernel carries a
    process's high-water mark across exec, so measuring from this Python process would
    count Python's memory), in its own process group so a timeout kills it whole."""

    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (max_mib << 20, max_mib << 20))

    with tempfile.NamedTemporaryFile("r", suffix=".time") as times:
        start = time.monotonic()
        proc = subprocess.Popen(
            ["/usr/bin/time", "-o", times.name, "-f", "%e %M %x", binary, "check", d],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=limits,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        wall = time.monotonic() - start
        lines = times.read().strip().splitlines()
    if timed_out:
        code, rss = "killed (timeout)", float("nan")
    else:
        _, rss_kib, status = lines[-1].split()
        rss = int(rss_kib) / 1024
        signalled = [l for l in lines if l.startswith("Command terminated by signal")]
        code = f"signal {signal.Signals(int(signalled[0].split()[-1])).name}" if signalled else f"exit {status}"
    text = out.decode(errors="replace").strip().splitlines()
    first = text[0] if text else ""
    for line in text:
        if "error" in line or ".yaml" in line:
            first = line
            break
    return code, wall, rss, first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--max-mib", type=int, default=3072)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    for name, what, build in cases():
        if only and name not in only:
            continue
        d = tempfile.mkdtemp(prefix="autobump-input-")
        try:
            build(d)
            code, wall, rss, first = run(os.path.abspath(args.binary), d, args.timeout, args.max_mib)
        finally:
            shutil.rmtree(d, ignore_errors=True)
        first = first.replace(d + "/", "")
        if len(first) > 150:
            first = first[:147] + "..."
        print(f"{name:<14} {what:<48} {code:<18} {wall:8.3f} s {rss:8.1f} MiB  {first}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
