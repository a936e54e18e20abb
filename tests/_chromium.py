"""Open a page in a real headless Chromium and read it through the DevTools protocol.

Chromium is Debian's ``chromium`` package (``make chromium`` installs it). The page's console
errors and uncaught exceptions are collected while it loads; then a script is evaluated in
it and a screenshot taken.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("NASOA_CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--remote-debugging-port=0", "--window-size=1300,2400", "about:blank",
)


def ensure_chromium() -> str:
    """The Chromium binary; installed from Debian when missing and we are root."""
    if not os.path.exists(CHROMIUM) and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=False,
                       capture_output=True, timeout=900)
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"Chromium not found at {CHROMIUM}: install it with `make chromium` "
                           "(apt-get install chromium chromium-driver)")
    return CHROMIUM


@dataclass
class PageReport:
    console_errors: list[str] = field(default_factory=list)
    value: Any = None
    screenshot: Path | None = None


class _DevTools:
    def __init__(self, websocket_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(websocket_url, timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e.get("method") == method for e in self.events):
                return
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(f"no {method} within {timeout:.0f}s")

    def close(self) -> None:
        self.ws.close()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        params = e.get("params", {})
        if e.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            out.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif e.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif e.get("method") == "Log.entryAdded" and params["entry"].get("level") == "error":
            out.append(params["entry"].get("text", ""))
    return out


def open_page(path: Path, script: str, screenshot: Path, settle_seconds: float = 1.0) -> PageReport:
    """Load ``path``, evaluate ``script`` (its value returned), save a PNG screenshot."""
    binary = ensure_chromium()
    with tempfile.TemporaryDirectory(prefix="nasoa-chromium-") as profile:
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium did not start (status {proc.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as reply:
                page = next(t for t in json.load(reply) if t["type"] == "page")
            tools = _DevTools(page["webSocketDebuggerUrl"])
            try:
                for domain in ("Page", "Runtime", "Log"):
                    tools.call(f"{domain}.enable")
                tools.call("Page.navigate", url=path.resolve().as_uri())
                tools.wait_for("Page.loadEventFired", timeout=60)
                time.sleep(settle_seconds)  # plotly draws after load
                value = tools.call("Runtime.evaluate", expression=script, returnByValue=True)
                if "exceptionDetails" in value:
                    raise RuntimeError(f"the check script failed: {value['exceptionDetails']}")
                shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                return PageReport(_errors(tools.events), value["result"].get("value"), screenshot)
            finally:
                tools.close()
        finally:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
