"""What each `anthropic-version` accepts, checked on a request line before it joins a batch."""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import orjson
import pytest

from batch_scheduler.core.options import BY_NAME
from batch_scheduler.core.settings import Settings
from batch_scheduler.providers.anthropic.provider import AnthropicProvider
from batch_scheduler.providers.anthropic.versions import CURRENT_VERSION, LEGACY_VERSION


def check(version: str, params: dict, *, model: str | None = None) -> str | None:
    provider = AnthropicProvider(Settings(anthropic_version=version, model=model), http=None)
    obj = {"custom_id": "c1", "params": params}
    problem, line = provider.check_request(obj, orjson.dumps(obj))
    assert (problem is None) == (line is not None)
    return problem


BASE = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}


def test_the_default_version_is_what_the_official_sdk_sends():
    # the dev extra installs the SDK; its constants file is read, not imported (the package takes seconds)
    spec = importlib.util.find_spec("anthropic")
    assert spec is not None and spec.submodule_search_locations
    text = (Path(spec.submodule_search_locations[0]) / "_constants.py").read_text()
    sent = re.search(r'^ANTHROPIC_API_VERSION = "([^"]+)"', text, re.M)
    assert sent is not None
    assert BY_NAME["anthropic_version"].default == CURRENT_VERSION == sent.group(1)


@pytest.mark.parametrize("name", ["temperature", "top_p", "top_k"])
@pytest.mark.parametrize("model", [None, "claude-sonnet-4-5"], ids=["model-in-line", "model-filled"])
def test_2026_10_21_refuses_the_sampling_params_it_removed(name, model):
    params = {**BASE, name: 0.5}
    if model:
        params.pop("model")
    assert check(CURRENT_VERSION, params, model=model) == (
        f"params.{name} is not accepted under anthropic-version 2026-10-21, which removed temperature, top_p and "
        f"top_k; remove it, or run the job with --anthropic-version 2023-06-01")


def test_2026_10_21_refuses_a_field_outside_the_sdks_params_and_accepts_every_one_inside():
    assert check(CURRENT_VERSION, {**BASE, "colour": "blue"}) == (
        "params.colour is not a Messages parameter under anthropic-version 2026-10-21")
    full = {**BASE, "system": "be brief", "metadata": {"user_id": "u"}, "stop_sequences": ["x"],
            "thinking": {"type": "enabled", "budget_tokens": 1024}, "tools": [], "tool_choice": {"type": "auto"},
            "service_tier": "auto", "cache_control": {"type": "ephemeral"}, "max_tokens": 0}
    assert check(CURRENT_VERSION, full) is None


@pytest.mark.parametrize("params, problem", [
    ({"temperature": 0.2, "top_p": 0.9, "top_k": 5}, None),
    ({"temperature": 1.5}, "params.temperature 1.5 is out of range (0 to 1)"),
    ({"top_p": -0.1}, "params.top_p -0.1 is out of range (0 to 1)"),
    ({"top_k": -1}, "params.top_k -1 must be at least 0"),
    ({"temperature": "hot"}, "params.temperature must be a number"),
    ({"max_tokens": 0}, "params.max_tokens must be a whole number of at least 1 (got 0)"),
    ({"colour": "blue"}, None),  # 2023-06-01 leaves other fields to the API
])
def test_2023_06_01_keeps_working_with_its_own_ranges(params, problem):
    assert check(LEGACY_VERSION, {**BASE, **params}) == problem


def test_a_version_this_program_does_not_know_is_sent_with_the_common_checks_only(caplog):
    with caplog.at_level(logging.WARNING, logger="batch_scheduler.providers"):
        assert check("2031-01-01", {**BASE, "temperature": 7}) is None
    assert caplog.messages == ["anthropic-version 2031-01-01 is not one this program knows (2023-01-01, 2023-06-01, "
                               "2026-10-21): its lines are checked only for what every version requires"]


def test_the_header_carries_the_jobs_version():
    assert AnthropicProvider.headers(Settings(anthropic_version=LEGACY_VERSION))["anthropic-version"] == "2023-06-01"
    assert AnthropicProvider.headers(Settings())["anthropic-version"] == "2026-10-21"
