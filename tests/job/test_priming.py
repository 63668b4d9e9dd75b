"""Prompt caches that hit: one priming request per cached prefix goes first, the rest reads its cache.

Against the simulator with its cache as measured (`cache_as_measured`): a write is readable only once
its request completed, and the requests of one batch never read each other's writes."""

from __future__ import annotations

import orjson
import pytest

from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.prefix import job_lane_of, line_prefix, mark_one_hour, prefix_key, priming_via
from batch_scheduler.simulator import SimConfig

from ..conftest import fast_settings
from ..helpers import ids_of, read_results

SYSTEM = "You label support tickets by topic. Answer with one word. " * 40


def write_cached(path, n: int, systems: tuple[str, ...] = (SYSTEM,)) -> list[str]:
    ids = []
    with open(path, "wb") as f:
        for i in range(n):
            system = [{"type": "text", "text": systems[i % len(systems)], "cache_control": {"type": "ephemeral"}}]
            params = {"model": "claude-sonnet-4-5", "max_tokens": 16, "system": system,
                      "messages": [{"role": "user", "content": f"ticket {i}"}]}
            f.write(orjson.dumps({"custom_id": f"t{i}", "params": params}) + b"\n")
            ids.append(f"t{i}")
    return ids


async def run_job(settings, out, inp):
    return await Engine(settings, str(out), [str(inp)], quiet=True).run()


def cached_share(out) -> tuple[float, dict]:
    """Cache reads over every cached-prefix token (reads + writes), and the summary's cache section."""
    cache = orjson.loads((out / "summary.json").read_bytes())["cache"]
    cached = cache["read_tokens"] + cache["write_tokens"]
    return (cache["read_tokens"] / cached if cached else 0.0), cache


@pytest.mark.parametrize("via", ["realtime", "batch"])
async def test_priming_makes_the_rest_of_the_job_read_the_cache(sim, tmp_path, via):
    sim.config = SimConfig(seed=3, processing_s=0.2, cache_as_measured=True)
    ids = write_cached(tmp_path / "in.jsonl", 120)
    settings = fast_settings(sim.url, batch_size=40, prime_via=via)
    result = await run_job(settings, tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    got = ids_of(read_results(str(tmp_path / "out")))
    assert sorted(got) == sorted(ids) and len(got) == len(set(got))
    share, cache = cached_share(tmp_path / "out")
    assert share >= 0.95 and cache["primed_prefixes"] == 1 and cache["saved_usd"] > 0
    assert cache["write_1h_tokens"] == cache["write_tokens"] > 0  # the one write: the priming request's, 1 hour
    assert sim.stats["realtime_calls"] == (1 if via == "realtime" else 0)
    assert sim.stats["requests_created"] == (119 if via == "realtime" else 120)  # nothing sent twice


async def test_without_priming_a_cold_batch_reads_nothing(sim, tmp_path):
    sim.config = SimConfig(seed=3, processing_s=0.2, cache_as_measured=True)
    write_cached(tmp_path / "in.jsonl", 120)
    settings = fast_settings(sim.url, batch_size=120, prime_via="off")
    result = await run_job(settings, tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    share, cache = cached_share(tmp_path / "out")
    assert share == 0.0 and cache["primed_prefixes"] == 0 and cache["saved_usd"] < 0


async def test_each_distinct_prefix_is_primed_once_and_its_requests_share_batches(sim, tmp_path):
    sim.config = SimConfig(seed=3, processing_s=0.2, cache_as_measured=True)
    write_cached(tmp_path / "in.jsonl", 90, systems=(SYSTEM, SYSTEM + " Be terse.", SYSTEM + " Be kind."))
    settings = fast_settings(sim.url, batch_size=50)
    result = await run_job(settings, tmp_path / "out", tmp_path / "in.jsonl")
    assert result.exit_code == ExitCode.OK, result.message
    share, cache = cached_share(tmp_path / "out")
    assert cache["primed_prefixes"] == 3 and sim.stats["realtime_calls"] == 3 and share >= 0.9
    assert sim.stats["creates"] == 3  # one batch per prefix: 29 requests each, read the cache together


# -- units: the prefix and the lanes ------------------------------------------------------------------


def _params(system_mark: dict | None, text: str = "q") -> dict:
    block = {"type": "text", "text": SYSTEM, **({"cache_control": system_mark} if system_mark else {})}
    return {"model": "m", "max_tokens": 5, "system": [block], "messages": [{"role": "user", "content": text}]}


def test_the_prefix_is_the_content_up_to_the_last_mark_whatever_its_ttl():
    five, hour = _params({"type": "ephemeral"}, "a"), _params({"type": "ephemeral", "ttl": "1h"}, "b")
    assert prefix_key(five) == prefix_key(hour) is not None
    assert prefix_key(_params(None)) is None
    assert prefix_key({**_params({"type": "ephemeral"}), "model": "other"}) != prefix_key(five)
    assert prefix_key("not an object") is None


def test_the_one_hour_mark_is_set_on_every_cache_control():
    line = orjson.dumps({"custom_id": "a", "params": _params({"type": "ephemeral"})})
    marked = orjson.loads(mark_one_hour(line))
    assert marked["params"]["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    plain = orjson.dumps({"custom_id": "a", "params": _params(None)})
    assert mark_one_hour(plain) == plain and line_prefix(plain, "params") is None


class _Provider:
    def __init__(self, prime_via: str, *, realtime: bool = True, floor: int = 1, lane_of=None):
        self.settings = type("S", (), {"prime_via": prime_via})()
        self.realtime_api = "messages" if realtime else None
        self.spec = type("Spec", (), {"min_batch_requests": floor})()
        self.lane_of = lane_of
        self.body_field = "params"


def test_requests_are_laned_by_prefix_only_when_the_job_primes():
    assert job_lane_of(_Provider("off")) is None
    lane_of = job_lane_of(_Provider("realtime", lane_of=lambda obj: "model-a"))
    assert lane_of is not None
    one, other = _params({"type": "ephemeral"}, "x"), {**_params({"type": "ephemeral"}), "model": "n"}
    assert lane_of({"params": one}) == lane_of({"params": _params({"type": "ephemeral"}, "y")})
    assert lane_of({"params": one}) != lane_of({"params": other})
    assert lane_of({"params": _params(None)}) == "model-a"


def test_priming_goes_by_batch_without_a_realtime_endpoint_and_not_at_all_under_a_batch_floor():
    assert priming_via(_Provider("realtime")) == "realtime"
    assert priming_via(_Provider("realtime", realtime=False)) == "batch"
    assert priming_via(_Provider("batch", realtime=False, floor=100)) is None
    assert priming_via(_Provider("off")) is None


def test_a_job_from_before_priming_resumes_cut_as_it_was():
    """A ledger written before --prime-via existed records no prime_via: the job resumes with priming off, so
    its chunks are cut (and digested) as they were, never refused as changed."""
    from batch_scheduler.job.job import as_started

    settings = fast_settings("http://127.0.0.1:9")
    assert settings.prime_via == "realtime"
    old = {"shaping": {k: v for k, v in settings.shaping().items() if k != "prime_via"}, "job_name": settings.job_name}
    assert as_started(settings, old).prime_via == "off"
    new = {"shaping": settings.shaping(), "job_name": settings.job_name}
    assert as_started(settings, new).prime_via == "realtime"
