"""Run one program as a subprocess and measure it: wall time, CPU seconds (user + sys), peak RSS.

Preferred: GNU `/usr/bin/time -v -o FILE`, which reports the child's own getrusage at exit.
Fallback when it is missing (or is not GNU time): `resource.getrusage(RUSAGE_CHILDREN)` deltas for
CPU seconds, and the peak RSS from polling `/proc/PID/status` (VmHWM, the kernel's high-water mark,
so a poll only misses growth in the last interval) together with the children's ru_maxrss when that
rose during the run. `METHOD` names which one is in use; the report prints it.
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

TIME_BIN = "/usr/bin/time"
PROC_POLL_S = 0.02


@dataclass
class Measured:
    argv: list[str]
    returncode: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    method: str
    stdout_path: str
    stderr_path: str

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def tail(self, n_bytes: int = 2000) -> str:
        """The end of the program's stderr, for error messages."""
        try:
            with open(self.stderr_path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - n_bytes))
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def _gnu_time_works() -> bool:
    if not os.access(TIME_BIN, os.X_OK):
        return False
    with tempfile.NamedTemporaryFile("r") as out:
        try:
            done = subprocess.run([TIME_BIN, "-v", "-o", out.name, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0 and "Maximum resident set size" in out.read()


USE_GNU_TIME = _gnu_time_works()
METHOD = "/usr/bin/time -v" if USE_GNU_TIME else "getrusage(RUSAGE_CHILDREN) + /proc/PID/status VmHWM polling"


def run(argv: list[str], *, env: dict[str, str] | None = None, cwd: str | None = None, log_dir: str,
        name: str, timeout_s: float | None = None, force_fallback: bool = False) -> Measured:
    """Run argv to completion; its stdout and stderr go to LOG_DIR/NAME.out / .err."""
    os.makedirs(log_dir, exist_ok=True)
    out_path = os.path.join(log_dir, f"{name}.out")
    err_path = os.path.join(log_dir, f"{name}.err")
    if USE_GNU_TIME and not force_fallback:
        return _run_gnu_time(argv, env, cwd, out_path, err_path, timeout_s)
    return _run_fallback(argv, env, cwd, out_path, err_path, timeout_s)


def _run_gnu_time(argv: list[str], env: dict[str, str] | None, cwd: str | None, out_path: str,
                  err_path: str, timeout_s: float | None) -> Measured:
    time_path = err_path + ".time"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        done = subprocess.run([TIME_BIN, "-v", "-o", time_path, *argv], stdout=out, stderr=err,
                              stdin=subprocess.DEVNULL, env=env, cwd=cwd, timeout=timeout_s)
        wall = time.perf_counter() - t0
    with open(time_path) as f:
        report = f.read()
    return Measured(argv, done.returncode, wall, _field(report, "User time (seconds)"),
                    _field(report, "System time (seconds)"),
                    int(_field(report, "Maximum resident set size (kbytes)")) * 1024,
                    "/usr/bin/time -v", out_path, err_path)


def _field(report: str, label: str) -> float:
    m = re.search(re.escape(label) + r":\s*([0-9.]+)", report)
    if m is None:
        raise RuntimeError(f"/usr/bin/time -v gave no '{label}':\n{report[-1000:]}")
    return float(m.group(1))


def _run_fallback(argv: list[str], env: dict[str, str] | None, cwd: str | None, out_path: str,
                  err_path: str, timeout_s: float | None) -> Measured:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        watcher = HighWaterMark(proc.pid)
        watcher.start()
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            watcher.stop()
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = watcher.peak_bytes
    if after.ru_maxrss > before.ru_maxrss:  # this child set a new maximum: its own peak, exactly
        peak = max(peak, after.ru_maxrss * 1024)
    return Measured(argv, code, wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime, peak,
                    "getrusage + /proc VmHWM", out_path, err_path)


class HighWaterMark:
    """Polls /proc/PID/status for VmHWM (peak RSS so far) on a thread until stopped."""

    def __init__(self, pid: int, interval_s: float = PROC_POLL_S):
        self.pid = pid
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"hwm-{pid}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        path = f"/proc/{self.pid}/status"
        while True:
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_bytes = max(self.peak_bytes, int(line.split()[1]) * 1024)
                            break
            except (OSError, ValueError, IndexError):
                pass  # gone, or a zombie without memory lines
            if self._stop.wait(self.interval_s):
                return
