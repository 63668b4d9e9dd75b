"""The simulator in its own process: `with SimulatorProcess(["--faults"]) as sim: ... sim.url`."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
_READY = "simulator listening on "
_ROOT = Path(__file__).resolve().parents[2]


class SimulatorProcess:
    """Start `python -m batch_scheduler.simulator --port 0 *args`; stop it on exit (sync or async)."""

    def __init__(self, args: list[str] | None = None):
        self.args = list(args or [])
        self.proc: subprocess.Popen[str] | None = None
        self.url: str | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> str:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "batch_scheduler.simulator", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env,
        )
        self.url = self._wait_ready()
        return self.url

    def _wait_ready(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not sel.select(left):
                    break
                line = self.proc.stdout.readline()
                if not line:
                    self.stop()
                    raise RuntimeError(f"simulator exited before listening (exit code {self.proc.returncode})")
                if line.startswith(_READY):
                    return line[len(_READY):].strip()
        self.stop()
        raise RuntimeError(f"simulator did not start within {START_TIMEOUT_S:g} s")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode

    def _call(self, path: str, body: dict | None = None) -> Any:
        assert self.url is not None, "simulator not started"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._call("/_sim/stats")

    def set_config(self, **fields: Any) -> dict[str, Any]:
        if isinstance(fields.get("valid_keys"), set):
            fields["valid_keys"] = sorted(fields["valid_keys"])
        return self._call("/_sim/config", fields)

    def __enter__(self) -> SimulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatorProcess:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)
