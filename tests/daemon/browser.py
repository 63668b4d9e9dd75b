"""Headless Chromium for the status page tests: the DOM a browser builds from a URL, and a screenshot."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from html.parser import HTMLParser

import pytest

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium() -> str:
    """The browser's path; under CI (CI=true) a missing browser fails the test, elsewhere it skips it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


async def _run(*args: str, timeout_s: float = 90.0) -> bytes:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(chromium(), *FLAGS, f"--user-data-dir={profile}", *args,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}"
    return out


async def dump_dom(url: str) -> str:
    """The DOM as the browser has it once the page has loaded (serialised by the browser, not our HTML)."""
    return (await _run("--dump-dom", url)).decode()


async def screenshot(url: str, path: str, size: str = "1200,900") -> None:
    """PATH: absolute (chromium writes relative paths into its own working directory)."""
    await _run(f"--screenshot={path}", f"--window-size={size}", url)


class Elements(HTMLParser):
    """Every element with its attributes and the text inside it, in document order."""

    def __init__(self, text: str):
        super().__init__()
        self.found: list[dict] = []
        self._open: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        el = {"tag": tag, **{k: v or "" for k, v in attrs}, "text": ""}
        self.found.append(el)
        if tag not in ("meta", "link", "br", "img", "input", "line", "polyline"):
            self._open.append(el)

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for el in self._open:
            el["text"] += data

    def select(self, tag: str, **attrs: str) -> list[dict]:
        return [e for e in self.found if e["tag"] == tag and all(e.get(k.rstrip("_")) == v for k, v in attrs.items())]
