"""The provider's answers are untrusted input: a run through a proxy that rewrites the simulator's
answers ends with one line naming the batch and the field, never a traceback or an endless loop, and
keeps every answer it collected exactly once."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from batch_scheduler.core.http import HttpClient
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.send.poller import Poller
from batch_scheduler.job.send.submitter import UNKNOWN_RESENDS
from batch_scheduler.providers import headers_for, make_provider
from batch_scheduler.providers.common import LIST_PAGES_MAX
from batch_scheduler.simulator import SimConfig

from ..conftest import PROVIDERS
from ..helpers import ids_of, read_results, request, write_requests
from .rewriting import Call, RewritingProxy

pytestmark = pytest.mark.timeout(60)


async def run_through(proxy_rewrite, sim, provider, tmp_path, n=400, **changes):
    ids = write_requests(tmp_path / "in.jsonl", n)
    async with RewritingProxy(sim.url, proxy_rewrite) as proxy:
        settings = provider.settings(proxy.url, **{"batch_size": 50, "max_attempts": 3, **changes})
        result = await Engine(settings, str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    return ids, result, proxy


def assert_exactly_once(out, ids):
    got = ids_of(read_results(str(out)))
    assert len(got) == len(set(got)), "a custom_id was written twice"
    assert sorted(got) == sorted(ids)


def edit_json(body: bytes, change) -> bytes:
    doc = orjson.loads(body)
    change(doc)
    return orjson.dumps(doc)


async def test_an_extra_non_integer_request_count_is_not_read(sim, tmp_path):
    """Row 14: Anthropic `request_counts` with an extra field that is no integer."""
    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if status == 200 and call.kind in ("create", "retrieve"):
            body = edit_json(body, lambda d: d["request_counts"].update(note="n/a"))
        return status, body

    ids, result, _ = await run_through(rewrite, sim, PROVIDERS["anthropic"], tmp_path)
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)


async def test_a_result_body_sent_as_a_json_string_is_kept(sim, tmp_path):
    """Row 13: an OpenAI-compatible server that sends `response.body` as a JSON string."""
    def stringify(line: bytes) -> bytes:
        doc = orjson.loads(line)
        doc["response"]["body"] = orjson.dumps(doc["response"]["body"]).decode()
        return orjson.dumps(doc)

    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if status == 200 and call.kind == "results":
            body = b"\n".join(stringify(line) for line in body.splitlines() if line.strip()) + b"\n"
        return status, body

    ids, result, _ = await run_through(rewrite, sim, PROVIDERS["openai"], tmp_path)
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert result.summary["results"]["succeeded"] == len(ids)
    assert result.summary["tokens"]["output"] > 0  # the usage inside the string was read


@pytest.mark.parametrize("name", ["anthropic", "openai"])
async def test_a_list_cursor_that_never_advances_stops_the_walk(sim, tmp_path, name, caplog):
    """Row 16: a list answer whose cursor never moves is not walked forever."""
    provider = PROVIDERS[name]
    write_requests(tmp_path / "in.jsonl", 100)
    first = await Engine(provider.settings(sim.url, batch_size=50), str(tmp_path / "out"),
                         [str(tmp_path / "in.jsonl")], quiet=True).run()
    assert first.exit_code == ExitCode.OK

    first_page: list[bytes] = []

    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if call.kind == "list":  # every page is the first, saying there is more after its last batch
            if not first_page:
                first_page.append(edit_json(body, lambda d: d.update(has_more=True, last_id=d["data"][-1]["id"])))
            return 200, first_page[0]
        return status, body

    async with RewritingProxy(sim.url, rewrite) as proxy:
        settings = provider.settings(proxy.url)
        async with HttpClient(headers_for(settings), settings.retry) as http:
            found = [info.id async for info in make_provider(settings, http).recent(0.0)]
    assert proxy.calls["list"] == 2  # the second page named the same cursor: the walk stopped there
    assert len(found) == 2 * 2  # each page's two batches (the repeat is the caller's to ignore)
    assert any("did not advance" in m for m in caplog.messages), caplog.messages


async def test_a_list_walk_is_capped_in_pages(sim, tmp_path, caplog):
    """Row 16: a list that always says there is more ends after LIST_PAGES_MAX pages, with a message."""
    write_requests(tmp_path / "in.jsonl", 10)
    provider = PROVIDERS["anthropic"]
    await Engine(provider.settings(sim.url), str(tmp_path / "out"), [str(tmp_path / "in.jsonl")], quiet=True).run()
    pages = iter(range(10**6))

    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if call.kind == "list":  # an empty page that always has more, after a new cursor each time
            return 200, orjson.dumps({"data": [], "has_more": True, "last_id": f"msgbatch_{next(pages)}"})
        return status, body

    async with RewritingProxy(sim.url, rewrite) as proxy:
        settings = provider.settings(proxy.url)
        async with HttpClient(headers_for(settings), settings.retry) as http:
            async for _ in make_provider(settings, http).recent(0.0):
                pass
    assert proxy.calls["list"] == LIST_PAGES_MAX
    assert any(f"{LIST_PAGES_MAX} pages" in m for m in caplog.messages), caplog.messages


@pytest.mark.parametrize("name", ["anthropic", "openai"])
async def test_a_400_to_the_list_call_falls_back_to_retrieving_each_batch(sim, name):
    """Row 17: the poller lists when several batches are due; a refused list is not the end of the run."""
    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if call.kind == "list":
            return 400, b'{"type":"error","error":{"type":"invalid_request_error","message":"no listing here"}}'
        return status, body

    sim.config.processing_s = 0.2
    ended: list[str] = []
    async with RewritingProxy(sim.url, rewrite) as proxy:
        settings = PROVIDERS[name].settings(proxy.url)
        async with HttpClient(headers_for(settings), settings.retry) as http:
            provider = make_provider(settings, http)

            async def on_ended(payload, info):
                ended.append(payload)
                if len(ended) == 12:
                    poller.stop()

            poller = Poller(provider, on_ended, poll_min_s=0.05, poll_max_s=0.1)
            infos = [await provider.create([provider.check_request(req := request(f"p{i}"), orjson.dumps(req))[1]],
                                           tag=f"job-test-chunk-{i}") for i in range(12)]
            for info in infos:
                poller.track(info.id, info.id, info.created_at, now=True)  # all due at once: one list call
            await asyncio.wait_for(poller.run(), 20)
    assert len(set(ended)) == 12
    assert proxy.calls["list"] == 1  # refused once: every batch retrieved from then on
    assert poller.stats.retrieves >= 12


def reuse_first_id():
    """Create answers from the second on name the first create's batch id."""
    first: list[str] = []

    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if call.kind == "create" and status == 200:
            doc = orjson.loads(body)
            if not first:
                first.append(doc["id"])
            elif len(first) == 1:
                first.append(doc["id"])
                doc["id"] = first[0]
                body = orjson.dumps(doc)
        return status, body

    return rewrite


@pytest.mark.parametrize("name", ["anthropic", "openai"])
async def test_a_create_answer_reusing_a_recorded_id_is_an_unknown_outcome_not_a_crash(sim, tmp_path, name, caplog):
    """Row 15: the ledger already holds the id; the batch the create made is looked for and adopted."""
    sim.config = SimConfig(seed=3)
    ids, result, _ = await run_through(reuse_first_id(), sim, PROVIDERS[name], tmp_path, n=200)
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert result.summary["batches"]["adopted"] == 1
    assert sim.stats["requests_created"] == len(ids)  # nothing paid twice
    assert any("already holds" in m for m in caplog.messages), caplog.messages


def drop_create_ids(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
    if call.kind == "create" and status == 200:
        body = edit_json(body, lambda d: d.pop("id"))
    return status, body


@pytest.mark.parametrize("name", ["anthropic", "openai"])
async def test_a_create_answer_without_id_is_an_unknown_outcome_and_its_batch_is_adopted(sim, tmp_path, name):
    """Row 12: a create answer without `id`: the batch it made is looked for and adopted, never paid twice."""
    ids, result, _ = await run_through(drop_create_ids, sim, PROVIDERS[name], tmp_path, n=100)
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert result.summary["batches"]["adopted"] == 2
    assert sim.stats["requests_created"] == len(ids)


async def test_a_create_answer_without_id_is_sent_again_a_bounded_number_of_times_then_named(sim, tmp_path):
    """Row 12: without a list call (inline) the chunk is sent again, at most UNKNOWN_RESENDS times."""
    _, result, proxy = await run_through(drop_create_ids, sim, PROVIDERS["inline"], tmp_path, n=10)
    assert result.exit_code == ExitCode.FAILED
    assert result.message == ("stopped: create answer: id missing, expected a non-empty string. Nothing is lost: "
                              "run the same command again to resume")
    assert proxy.calls["create"] == 1 + UNKNOWN_RESENDS


@pytest.mark.parametrize("name", ["anthropic", "openai", "inline"])
async def test_a_retrieve_answer_of_another_shape_is_asked_again_then_named(sim, tmp_path, name):
    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if call.kind == "retrieve" and status == 200:
            body = edit_json(body, lambda d: d.update(request_counts=["not", "an", "object"]))
        return status, body

    _, result, proxy = await run_through(rewrite, sim, PROVIDERS[name], tmp_path, n=10)
    assert result.exit_code == ExitCode.FAILED
    assert result.message.startswith("stopped: batch "), result.message
    assert "retrieve answer: request_counts is ['not', 'an', 'object'], expected an object" in result.message
    assert proxy.calls["retrieve"] <= 10


async def test_result_lines_of_another_shape_are_kept_as_errored_and_named(sim, tmp_path, caplog):
    def rewrite(call: Call, status: int, body: bytes) -> tuple[int, bytes]:
        if call.kind == "results" and status == 200:
            lines = body.splitlines()
            lines[0] = edit_json(lines[0], lambda d: d["result"].update(message="a string"))
            body = b"\n".join(lines) + b"\n"
        return status, body

    with caplog.at_level(logging.WARNING):
        ids, result, _ = await run_through(rewrite, sim, PROVIDERS["anthropic"], tmp_path, n=100)
    assert result.exit_code == ExitCode.OK, result.message
    assert_exactly_once(tmp_path / "out", ids)
    assert result.summary["results"]["errored"] == 2  # one line of each of the two batches
    assert any("of an unexpected shape, kept as errored" in m and "result.message is 'a string'" in m
               for m in caplog.messages), caplog.messages
