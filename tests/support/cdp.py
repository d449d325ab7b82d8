#!/usr/bin/env python3
"""Loads one page in a real headless Chromium and reports what a person would see.

Drives Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: fd 3
carries commands in, fd 4 answers out, each message JSON ending in a NUL byte), with
the Python standard library only. Usage:

    cdp.py CHROMIUM URL WIDTH HEIGHT SCREENSHOT.png WAIT_MS [EXPRESSION...]

Prints one JSON object: the load time (navigation start to the load event, from the
page's own Navigation Timing), every console message, uncaught exception and browser
log entry of level warning or error (CSP violations and failed requests are log
entries), the value of each EXPRESSION evaluated after the load and WAIT_MS more
milliseconds, and the size of the screenshot of the whole page. Exit 0 when the page
loaded, 1 otherwise (with the reason on stderr).
"""
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, binary, width, height):
        self.profile = tempfile.mkdtemp(prefix="autobump-chromium-")
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()

        def wire():
            # Copies first, so that a pipe end already numbered 3 or 4 is not lost;
            # dup2 makes 3 and 4 inheritable (every other descriptor is close-on-exec).
            cmd, out = os.dup(cmd_r), os.dup(out_w)
            os.dup2(cmd, 3)
            os.dup2(out, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox",
             "--disable-gpu", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking",
             "--hide-scrollbars", "--user-data-dir=" + self.profile,
             "--window-size=%d,%d" % (width, height), "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=wire, close_fds=False)
        os.close(cmd_r)
        os.close(out_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline):
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self.out_r], [], [], left)
            if ready:
                chunk = os.read(self.out_r, 1 << 20)
                if not chunk:
                    raise EOFError("Chromium closed its DevTools pipe (did it start?)")
                self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=None, timeout=30):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError("%s: %s" % (method, answer["error"]))
                return answer.get("result", {})
            self.events.append(answer)

    def wait_event(self, method, timeout):
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._read_message(deadline)
            if e.get("method") == method:
                return e
            self.events.append(e)

    def drain(self, seconds):
        deadline = time.monotonic() + seconds
        try:
            while True:
                self.events.append(self._read_message(deadline))
        except TimeoutError:
            pass


def main():
    binary, url, width, height, shot, wait_ms = sys.argv[1:7]
    expressions = sys.argv[7:]
    width, height, wait_ms = int(width), int(height), int(wait_ms)
    b = Browser(binary, width, height)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            b.send(domain + ".enable", session=s)
        b.send("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": height, "deviceScaleFactor": 1,
                "mobile": width < 500}, session=s)
        nav = b.send("Page.navigate", {"url": url}, session=s)
        if nav.get("errorText"):
            raise RuntimeError("navigating to %s: %s" % (url, nav["errorText"]))
        b.wait_event("Page.loadEventFired", 30)
        b.drain(wait_ms / 1000.0)

        def evaluate(expression):
            r = b.send("Runtime.evaluate",
                       {"expression": expression, "returnByValue": True}, session=s)
            if "exceptionDetails" in r:
                return {"exception": r["exceptionDetails"].get("text")}
            return r["result"].get("value")

        load_ms = evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return n ? n.loadEventEnd - n.startTime : null; })()")
        values = [evaluate(e) for e in expressions]
        png = base64.b64decode(b.send("Page.captureScreenshot",
                                      {"format": "png", "captureBeyondViewport": True},
                                      session=s)["data"])
        with open(shot, "wb") as f:
            f.write(png)
        problems = []
        for e in b.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
                problems.append("console.%s: %s" % (p["type"], " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", []))))
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                problems.append("exception: %s %s" % (d.get("text"), d.get("exception", {}).get("description", "")))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                entry = p["entry"]
                problems.append("%s %s: %s %s" % (entry.get("source"), entry["level"], entry.get("text"), entry.get("url", "")))
        print(json.dumps({"loadMs": load_ms, "console": problems, "values": values,
                          "screenshotBytes": len(png)}))
    finally:
        b.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the test prints it, naming scripts/setup
        print("cdp.py: %s" % e, file=sys.stderr)
        sys.exit(1)
