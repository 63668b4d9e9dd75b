"""The one option table: the parser, the settings, the daemon's option files and README come from it."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import pytest

from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.option_docs import markdown_table, settings_fields
from batch_scheduler.core.options import (
    JOB_OPTIONS,
    REMEMBERED,
    SHAPING,
    add_job_options,
    coerce_option_file,
    flags_of,
)
from batch_scheduler.core.settings import Settings
from batch_scheduler.providers import build_settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SETTINGS_SOURCE = ROOT / "batch_scheduler" / "core" / "settings.py"


def test_readme_option_table_is_the_generated_one():
    assert markdown_table() in README.read_text(encoding="utf-8"), "run `make readme`"


def test_settings_fields_are_the_generated_ones():
    assert "\n" + settings_fields() + "\n    # settings:end\n" in SETTINGS_SOURCE.read_text(encoding="utf-8"), \
        "run `make settings`"


def test_settings_fields_follow_the_table_type_and_default():
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    assert fields["batch_bytes"].type == "int" and fields["max_cost_usd"].type == "float | None"
    assert fields["headers"].type == "tuple[tuple[str, str], ...]" and fields["params"].type == "dict[str, Any] | None"
    assert not fields["api_key"].repr


def test_every_option_is_a_settings_field_with_the_table_default():
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    for o in JOB_OPTIONS:
        assert o.attr in fields, o.name
    assert Settings().concurrency == 128 and Settings().poll_min_s == 5.0


def test_parser_takes_every_option_and_leaves_absent_ones_none():
    p = argparse.ArgumentParser()
    add_job_options(p)
    args = p.parse_args(["--batch-size", "7", "--header", "A: b", "--header", "C: d", "--strict"])
    assert flags_of(args) == {"batch_size": 7, "header": ["A: b", "C: d"], "strict": True}


def test_remembered_and_shaping_sets_come_from_the_table():
    assert "batch_size" in SHAPING and "concurrency" not in SHAPING
    assert "concurrency" in REMEMBERED and "dry_run" not in REMEMBERED and "strict" not in REMEMBERED
    assert set(Settings(model="m").shaping()) == SHAPING


def test_a_value_reaches_settings_through_the_table():
    s = build_settings({"poll_min": 0.5, "poll_max": 2.0, "max_cost": 3}, {"ANTHROPIC_API_KEY": "k"})
    assert (s.poll_min_s, s.poll_max_s, s.max_cost_usd, s.api_key) == (0.5, 2.0, 3.0, "k")


@pytest.mark.parametrize(("doc", "message"), [
    ({"batchsize": 5}, "NAME.options.json: unknown option(s) batchsize; use the names of the command-line flags "
                       "in snake_case (e.g. batch_size)"),
    ({"header": [5]}, "NAME.options.json: header may not be set by a job's options file: where the daemon sends "
                      "its key, which files it reads and how it polls are set on the daemon's command line or in its "
                      ".env; a job's options shape its batches and prompts only"),
    ({"batch_size": "many"}, "NAME.options.json: --batch-size: expected a whole number, got 'many'"),
    ({"batch_size": 2.5}, "NAME.options.json: --batch-size: expected a whole number, got 2.5"),
    ({"concurrency": 0}, "NAME.options.json: --concurrency 0: must be at least 1"),
    ({"max_cost": "nan"}, "NAME.options.json: --max-cost: expected a number, got 'nan'"),
    ({"strict": "yes"}, "NAME.options.json: --strict: expected true or false, got 'yes'"),
    ({"dry_run": True}, "NAME.options.json: unknown option(s) dry_run; use the names of the command-line flags "
                        "in snake_case (e.g. batch_size)"),
])
def test_option_file_values_are_checked_by_name(doc, message):
    with pytest.raises(UsageError) as err:
        coerce_option_file(doc, "NAME.options.json")
    assert str(err.value) == message


def test_option_file_drops_nulls():
    assert coerce_option_file({"model": None, "batch_size": 10}, "x") == {"batch_size": 10}


@pytest.mark.parametrize("flag", ["--poll-min", "--http-timeout", "--max-cost"])
def test_non_finite_numbers_are_usage_errors(flag):
    p = argparse.ArgumentParser(exit_on_error=False)
    add_job_options(p)
    with pytest.raises(argparse.ArgumentError):
        p.parse_args([flag, "nan"])
