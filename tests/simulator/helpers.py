"""Helpers of the simulator's tests: raw HTTP calls in each provider's shape, a fake clock."""

from __future__ import annotations

import io

import aiohttp
import orjson

KEY = "sk-test"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
BEARER = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
BATCHES = "/v1/messages/batches"
MODEL = "claude-sonnet-4-20250514"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def params(text: str = "hello", max_tokens: int = 1000, **extra) -> dict:
    return {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}], **extra}


def requests_for(n: int, prefix: str = "r") -> list[dict]:
    return [{"custom_id": f"{prefix}{i}", "params": params(f"question {i}")} for i in range(n)]


async def create(http, sim, reqs, headers=HEADERS):
    async with http.post(sim.url + BATCHES, data=orjson.dumps({"requests": reqs}), headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def get(http, url, headers=HEADERS):
    async with http.get(url, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def lines(http, url, headers=HEADERS) -> list[dict]:
    async with http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        return [orjson.loads(line) for line in (await r.read()).splitlines()]


def openai_line(cid: str, url: str = "/v1/chat/completions", **body) -> dict:
    body = body or {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {cid}"}],
                    "max_tokens": 500}
    return {"custom_id": cid, "method": "POST", "url": url, "body": body}


async def upload(http, sim, lines: list[dict]) -> str:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", b"\n".join(orjson.dumps(x) for x in lines) + b"\n", filename="in.jsonl")
    async with http.post(sim.url + "/v1/files", data=form, headers={"authorization": f"Bearer {KEY}"}) as r:
        doc = orjson.loads(await r.read())
        assert r.status == 200, doc
    assert doc["id"].startswith("file-") and doc["object"] == "file" and doc["purpose"] == "batch"
    return doc["id"]


async def openai_batch(http, sim, lines: list[dict], **extra) -> dict:
    file_id = await upload(http, sim, lines)
    body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
            "metadata": {"job": "j1"}, **extra}
    async with http.post(sim.url + "/v1/batches", json=body, headers=BEARER) as r:
        doc = orjson.loads(await r.read())
        assert r.status == 200, doc
    return doc


async def file_lines(http, sim, file_id: str) -> list[dict]:
    return await lines(http, f"{sim.url}/v1/files/{file_id}/content", headers=BEARER)


def inline_requests(n: int) -> list[dict]:
    return [{"custom_id": f"i{i}", "method": "POST", "url": "/v1/messages", "body": params(f"q{i}")}
            for i in range(n)]


async def inline_create(http, sim, reqs):
    async with http.post(sim.url + "/v1/batches", data=io.BytesIO(orjson.dumps({"requests": reqs})),
                         headers={**BEARER, "Bypass-Middleware": "true"}) as r:
        return r.status, orjson.loads(await r.read())
