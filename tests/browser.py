"""Headless Chromium driven over the Chrome DevTools protocol (websockets, already a Prefect dependency).

Enough for the report and dashboard tests: open a page, collect JavaScript errors (uncaught
exceptions, ``console.error``, error log entries), evaluate expressions, take a screenshot. The
browser runs in its own process group and is stopped by its PID; its profile is a temporary folder.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--remote-debugging-port=0", "--window-size=1400,2400"]


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian's ``chromium``, or another build's usual names)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def install_chromium(timeout_s: float = 900.0) -> tuple[str | None, str]:
    """Find Chromium, else install Debian's package when we are root with apt-get; (path, what happened)."""
    path = find_chromium()
    if path:
        return path, "found"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "chromium is not installed and this is not a root Debian machine (apt-get install chromium)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        proc = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                              timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return None, f"apt-get install chromium took over {timeout_s:.0f} s"
    return find_chromium(), (proc.stdout + proc.stderr)[-600:]


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, startup_timeout_s: float = 60.0) -> None:
        from websockets.sync.client import connect

        self.profile = Path(tempfile.mkdtemp(prefix="xlstm-chromium-"))
        self.proc = subprocess.Popen([executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            port = self._devtools_port(startup_timeout_s)
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            page = next(t for t in targets if t.get("type") == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=20)
        except BaseException:
            self.close()
            raise
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def _devtools_port(self, timeout_s: float) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.proc.returncode} while starting")
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            time.sleep(0.1)
        raise TimeoutError(f"chromium did not open its DevTools port within {timeout_s:.0f} s")

    def send(self, method: str, params: dict[str, Any] | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
        """Call a DevTools method and return its result; events that arrive meanwhile are kept."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout_s
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression!r} raised: {res['exceptionDetails']}")
        return res["result"].get("value")

    def open(self, url: str, ready: str, timeout_s: float = 60.0) -> None:
        """Navigate to ``url`` and wait until the JavaScript expression ``ready`` is truthy."""
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout_s
        guarded = (f"(() => {{ try {{ return document.readyState === 'complete' && !!({ready}); }}"
                   " catch (e) { return false; } })()")
        while not self.evaluate(guarded):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: {ready!r} still false after {timeout_s:.0f} s; errors: {self.errors()}")
            time.sleep(0.2)

    def errors(self) -> list[str]:
        """JavaScript errors seen so far: uncaught exceptions, console.error calls, error log entries."""
        self.send("Runtime.evaluate", {"expression": "0"})  # drain pending events
        out = []
        for ev in self.events:
            method, p = ev.get("method"), ev.get("params", {})
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} ({p['entry'].get('url', '')})")
        return out

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1}})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        """Stop the browser (SIGTERM to its PID, then SIGKILL to its own process group) and drop its profile."""
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:  # helper processes (renderer, zygote) of our own session that outlived the browser
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
