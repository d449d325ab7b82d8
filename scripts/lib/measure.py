#!/usr/bin/env python3
"""Runs a command, prints `<wall seconds> <peak RSS MiB>` on stderr's last line and
passes its stdout through to a file. Usage: measure.py OUT_FILE -- CMD..."""
import resource
import subprocess
import sys
import time

out_path = sys.argv[1]
cmd = sys.argv[sys.argv.index("--") + 1:]
with open(out_path, "wb") as out:
    start = time.monotonic()
    proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE)
    wall = time.monotonic() - start
peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
if proc.returncode != 0:
    sys.stderr.write(proc.stderr.decode(errors="replace")[-2000:])
    sys.exit(proc.returncode)
print(f"{wall:.3f} {peak_mib:.0f}")
