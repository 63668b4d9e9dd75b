"""Shared fixtures: an in-process simulator, settings pointing at it, and each provider through it."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from batch_scheduler.core.settings import RetryPolicy, Settings

KEY = "sk-test-key-0123456789"
FAST_RETRY = RetryPolicy(attempts=10, deadline_s=60, initial_wait_s=0.005, max_wait_s=0.05)


# what the process environment may hold on a developer's machine and would change a test's calls
AMBIENT = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
           "no_proxy", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_CUSTOM_HEADERS", "OPENAI_CUSTOM_HEADERS", "OPENAI_ORG_ID",
           "OPENAI_PROJECT_ID")


@pytest.fixture(autouse=True)
def _hermetic_environment(monkeypatch, tmp_path_factory):
    """Every HTTP client trusts the environment (proxies); tests set what they need, nothing else. The jobs'
    machine-wide state (state/host.py) goes to the session's temporary directory, not the user's home."""
    for name in AMBIENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BATCH_STATE_DIR", str(tmp_path_factory.getbasetemp() / "machine-state"))


@pytest.fixture
async def sim():
    from batch_scheduler.simulator import SimConfig, Simulator
    simulator = Simulator(SimConfig(seed=1234))
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


def fast_settings(url: str, **changes) -> Settings:
    base = dict(api_key=KEY, base_url=url, batch_size=100, concurrency=4, poll_min_s=0.01, poll_max_s=0.05,
                shards=4, retry=FAST_RETRY, model=None, retry_wait_s=0.0)
    base.update(changes)
    return Settings(**base)


def _anthropic_answer(line: dict) -> str | None:
    result = line["result"]
    return result["message"]["content"][0]["text"] if result["type"] == "succeeded" else None


def _openai_answer(line: dict) -> str | None:
    response = line.get("response") or {}
    return response["body"]["choices"][0]["message"]["content"] if response.get("status_code") == 200 else None


def _gemini_answer(line: dict) -> str | None:
    response = line.get("response") or {}
    return response["candidates"][0]["content"]["parts"][0]["text"] if "candidates" in response else None


def _gemini_output_tokens(line: dict) -> int:
    usage = line["response"]["usageMetadata"]
    return int(usage.get("candidatesTokenCount", 0)) + int(usage.get("thoughtsTokenCount", 0))


def _openai_batches_are_tagged_for_one_job(sim) -> None:
    assert sim.stats["uploads"] >= 20
    tags = {batch.extra["metadata"]["batch_scheduler"] for batch in sim.store.batches.values()}
    assert all(re.fullmatch(r"job-[0-9a-f]{12}-chunk-\d+", tag) for tag in tags), tags
    assert len({tag.split("-chunk-")[0] for tag in tags}) == 1  # every batch names the same job


def _together_batches_came_from_its_uploads(sim) -> None:
    """Together keeps no metadata: each batch names an input file uploaded as `batch-api`, under its tag."""
    assert sim.stats["uploads"] >= 20
    files = sim.openai.files.records
    names = {files[b.extra["input_file_id"]].filename for b in sim.store.batches.values()}
    assert all(re.fullmatch(r"job-[0-9a-f]{12}-chunk-\d+\.jsonl", name) for name in names), names
    assert {files[b.extra["input_file_id"]].purpose for b in sim.store.batches.values()} == {"batch-api"}
    assert {b.kind for b in sim.store.batches.values()} == {"together"}


def _mistral_jobs_are_tagged_for_one_job(sim) -> None:
    """Mistral's jobs keep their metadata: each names the job's chunk, on a file uploaded under /mistral."""
    _openai_batches_are_tagged_for_one_job(sim)
    assert {b.kind for b in sim.store.batches.values()} == {"mistral"}
    assert all(b.extra["input_file_id"] in sim.mistral.files.records for b in sim.store.batches.values())


def _xai_batches_are_named_for_one_job(sim) -> None:
    """xAI's batches are named by their create's tag and count; their requests came in add calls."""
    names = {b.name for b in sim.xai.batches.values()}
    assert all(re.fullmatch(r"job-[0-9a-f]{12}-chunk-\d+:\d+", name) for name in names), names
    assert len({name.split("-chunk-")[0] for name in names}) == 1
    assert {b.kind for b in sim.store.batches.values()} == {"xai"}


def _inline_batches_are_its_own(sim) -> None:
    assert all(b.id.startswith("ibatch_") for b in sim.store.batches.values())


def _gemini_batches_are_named_for_one_job(sim) -> None:
    names = {batch.extra["display_name"] for batch in sim.store.batches.values()}
    assert all(re.fullmatch(r"job-[0-9a-f]{12}-chunk-\d+", name) for name in names), names
    assert len({name.split("-chunk-")[0] for name in names}) == 1  # every batch names the same job


@dataclass
class ProviderCase:
    """One provider as the pipeline meets it through the simulator."""

    name: str
    url_path: str  # appended to the simulator's URL (the article's inline proxy URL ends in /v1)
    answer: Callable[[dict], str | None]  # the answer text of a succeeded result line, else None
    output_tokens: Callable[[dict], int]
    fault_seed: int
    changes: dict = field(default_factory=dict)
    batches_check: Callable[[object], None] = lambda sim: None  # what only this provider's batches show
    errors_like: str = "anthropic"  # whose error bodies the simulator answers it with: anthropic, openai, google
    # how a create whose answer was lost is found again: "adopted" (the batch is listed and adopted), "settled"
    # (xAI: the requests are added to a batch the job made, and a lost add is settled by reading the batch's
    # count: nothing to adopt, nothing paid twice), "none" (inline: nothing of a batch says whose it is)
    lost_creates: str = "adopted"

    def settings(self, url: str, **changes) -> Settings:
        return fast_settings(url + self.url_path, provider=self.name, **{**self.changes, **changes})


PROVIDERS = {
    "anthropic": ProviderCase("anthropic", "", _anthropic_answer,
                              lambda r: r["result"]["message"]["usage"]["output_tokens"], fault_seed=7),
    "openai": ProviderCase("openai", "", _openai_answer,
                           lambda r: r["response"]["body"]["usage"]["completion_tokens"], fault_seed=11,
                           changes={"auth": "bearer"}, batches_check=_openai_batches_are_tagged_for_one_job,
                           errors_like="openai"),
    "azure": ProviderCase("azure", "", _openai_answer,
                          lambda r: r["response"]["body"]["usage"]["completion_tokens"], fault_seed=13,
                          changes={"auth": "api-key"}, batches_check=_openai_batches_are_tagged_for_one_job,
                          errors_like="openai"),
    "groq": ProviderCase("groq", "/groq", _openai_answer,  # /groq stands for api.groq.com (simulator/openai/groq.py)
                         lambda r: r["response"]["body"]["usage"]["completion_tokens"], fault_seed=17,
                         changes={"auth": "bearer"}, errors_like="openai",
                         batches_check=_openai_batches_are_tagged_for_one_job),
    "together": ProviderCase("together", "", _openai_answer,
                             lambda r: r["response"]["body"]["usage"]["completion_tokens"], fault_seed=19,
                             changes={"auth": "bearer"}, errors_like="openai",
                             batches_check=_together_batches_came_from_its_uploads),
    "mistral": ProviderCase("mistral", "/mistral", _openai_answer,  # /mistral stands for api.mistral.ai
                            lambda r: r["response"]["body"]["usage"]["completion_tokens"], fault_seed=29,
                            changes={"auth": "bearer"}, errors_like="openai",
                            batches_check=_mistral_jobs_are_tagged_for_one_job),
    "xai": ProviderCase("xai", "/xai", _openai_answer,  # /xai stands for api.x.ai (simulator/openai/xai.py)
                        lambda r: r["response"]["body"]["usage"]["completion_tokens"], fault_seed=31,
                        changes={"auth": "bearer"}, errors_like="openai",
                        batches_check=_xai_batches_are_named_for_one_job, lost_creates="settled"),
    "inline": ProviderCase("inline", "/v1", _anthropic_answer,
                           lambda r: r["result"]["message"]["usage"]["output_tokens"], fault_seed=5,
                           changes={"auth": "bearer", "system": None}, batches_check=_inline_batches_are_its_own),
    "gemini": ProviderCase("gemini", "", _gemini_answer, _gemini_output_tokens, fault_seed=23,
                           batches_check=_gemini_batches_are_named_for_one_job, errors_like="google"),
}


@pytest.fixture(params=list(PROVIDERS))
def provider(request) -> ProviderCase:
    """Each provider in turn: a test taking it runs once per provider against the simulator."""
    return PROVIDERS[request.param]
