"""Rows + a prompt template: what each row becomes, what a bad row says, and where it is."""

from __future__ import annotations

import gzip
from contextlib import aclosing

import orjson
import pytest

from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.settings import Settings
from batch_scheduler.job.engine import Engine, ExitCode
from batch_scheduler.job.input.batcher import cut_chunks
from batch_scheduler.job.input.reader import span_blocks
from batch_scheduler.job.input.sources import ROWS_PER_BLOCK, make_sources, template_sources
from batch_scheduler.job.input.template import safe_id
from batch_scheduler.job.input.validate import Rejects, Validator
from batch_scheduler.providers import make_provider
from batch_scheduler.simulator import SimConfig

from ..conftest import fast_settings
from ..helpers import ids_of, read_results

MODEL = "claude-sonnet-4-5"


def settings(**changes) -> Settings:
    return Settings(**{"template": "Summarise {title}:\n{content}", "max_tokens": 300, "model": MODEL, **changes})


async def run_rows(s: Settings, paths: list, tmp_path) -> tuple[list[dict], list[dict]]:
    """(accepted request lines, rejected records) exactly as a run cuts them."""
    inputs = [str(p) for p in paths]
    sources = make_sources(inputs, s)
    rejects = Rejects(str(tmp_path / "rejected.jsonl"), inputs)
    validator = Validator(make_provider(s, None), 1 << 20)
    accepted = []
    chunks = cut_chunks(span_blocks(sources, (0, 0, 1), None), validator, rejects, batch_size=1000,
                        batch_bytes=1 << 24, overhead=lambda n: 1, unit_of=lambda fi: sources[fi].unit)
    async with aclosing(chunks):
        async for chunk in chunks:
            accepted += [orjson.loads(line) for line in chunk.lines]
    rejects.close()
    rejected = [orjson.loads(line) for line in (tmp_path / "rejected.jsonl").read_bytes().splitlines()]
    return accepted, rejected


def write_csv(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


async def test_csv_rows_render_through_the_template_into_message_requests(tmp_path):
    csv_path = write_csv(tmp_path / "news articles.csv", 'title,content\nRain,"It rained, a lot."\nSun,Hot\n')
    accepted, rejected = await run_rows(settings(system="Be brief."), [csv_path], tmp_path)
    assert rejected == []
    assert accepted == [
        {"custom_id": "news_articles-1", "params": {"model": MODEL, "max_tokens": 300, "system": "Be brief.",
                                                    "messages": [{"role": "user",
                                                                  "content": "Summarise Rain:\nIt rained, a lot."}]}},
        {"custom_id": "news_articles-2", "params": {"model": MODEL, "max_tokens": 300, "system": "Be brief.",
                                                    "messages": [{"role": "user", "content": "Summarise Sun:\nHot"}]}},
    ]


async def test_a_row_without_a_template_field_is_rejected_naming_the_field_and_its_line(tmp_path):
    csv_path = write_csv(tmp_path / "a.csv", 'title,content\nOne,"first\nsecond line"\nTwo\nThree,ok\n')
    accepted, rejected = await run_rows(settings(), [csv_path], tmp_path)
    assert [a["custom_id"] for a in accepted] == ["a-1", "a-3"]
    assert rejected == [{"file": str(csv_path), "line": 4, "error": "missing field 'content' for the template"}]


async def test_line_numbers_stay_exact_after_multi_line_fields_and_blank_lines(tmp_path):
    csv_path = write_csv(tmp_path / "a.csv", 'title,content\n"T\n1","a\nb\nc"\n\nT2,"x"\n"T3",y,extra\n')
    accepted, rejected = await run_rows(settings(), [csv_path], tmp_path)
    assert [a["params"]["messages"][0]["content"] for a in accepted] == ["Summarise T\n1:\na\nb\nc",
                                                                        "Summarise T2:\nx"]
    assert rejected == [{"file": str(csv_path), "line": 8,
                         "error": "row has 3 fields, the header has 2 (a quote missing?)"}]


async def test_gzipped_jsonl_rows_work_and_non_string_values_render_as_json(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b'{"title": "A", "content": 42}\n\n{"title": "B", "content": {"k": [1]}}\n[1]\n{"title": "C"}\n')
    accepted, rejected = await run_rows(settings(), [path], tmp_path)
    assert [(a["custom_id"], a["params"]["messages"][0]["content"]) for a in accepted] == [
        ("rows-1", "Summarise A:\n42"), ("rows-2", 'Summarise B:\n{"k":[1]}')]
    assert [(r["line"], r["error"]) for r in rejected] == [
        (4, "row is not a JSON object (got list)"), (5, "missing field 'content' for the template")]


async def test_id_field_gives_the_custom_id_and_a_bad_one_is_rejected_by_the_custom_id_rules(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"id": "art-1", "title": "A", "content": "x"}\n{"id": 7, "title": "B", "content": "y"}\n'
                     b'{"id": "no spaces", "title": "C", "content": "z"}\n{"title": "D", "content": "w"}\n')
    accepted, rejected = await run_rows(settings(id_field="id"), [path], tmp_path)
    assert [a["custom_id"] for a in accepted] == ["art-1", "7"]
    assert [(r["line"], r["error"]) for r in rejected] == [
        (3, "custom_id 'no spaces' must be 1-64 characters of a-z A-Z 0-9 _ -"), (4, "missing id field 'id'")]


async def test_for_openai_a_row_becomes_a_chat_completions_line_with_the_system_first(tmp_path):
    csv_path = write_csv(tmp_path / "a.csv", "title,content\nT,C\n")
    s = settings(provider="openai", model="gpt-4o-mini", system="Be brief.", template="{title}: {content}")
    accepted, _ = await run_rows(s, [csv_path], tmp_path)
    assert accepted == [{"custom_id": "a-1", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": "gpt-4o-mini", "max_tokens": 300,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "T: C"}]}}]


async def test_reading_from_a_position_gives_the_same_rows_and_line_numbers_as_reading_through(tmp_path):
    text = "title,content\n" + "".join(f'T{i},"line\n{i}"\n' if i % 3 == 0 else f"T{i},c{i}\n" for i in range(50))
    csv_path = write_csv(tmp_path / "a.csv", text)
    source = template_sources([str(csv_path)], settings())[0]
    whole = [(b.start_pos + i, b.first_line + i, item) async for b in source.blocks() for i, item in
             enumerate(b.lines)]
    for pos, line, item in whole[17:20]:
        again = [b async for b in source.blocks(pos, line)][0]
        assert (again.start_pos, again.first_line, again.lines[0]) == (pos, line, item)


async def test_many_rows_come_in_few_blocks(tmp_path):
    csv_path = write_csv(tmp_path / "a.csv", "title,content\n" + "T,C\n" * (2 * ROWS_PER_BLOCK + 1))
    blocks = [b async for b in template_sources([str(csv_path)], settings())[0].blocks()]
    assert [len(b.lines) for b in blocks] == [ROWS_PER_BLOCK, ROWS_PER_BLOCK, 1]


@pytest.mark.parametrize("changes, message", [
    ({"max_tokens": None}, "--max-tokens is required with --template"),
    ({"model": None}, "--model (or CLAUDE_MODEL / OPENAI_MODEL) is required with --template"),
    ({"template": "Summarise {title"}, "--template: expected '}' before end of string"),
    ({"template": "Summarise {}"}, "--template: placeholders need a field name"),
])
def test_options_that_cannot_make_requests_are_a_usage_error(changes, message):
    with pytest.raises(UsageError) as info:
        template_sources(["a.csv"], settings(**changes))
    assert str(info.value).startswith(message)


def test_rows_must_be_csv_or_jsonl():
    with pytest.raises(UsageError, match=r"a\.xlsx: rows for --template must be \.csv"):
        template_sources(["a.xlsx"], settings())


def test_the_default_custom_id_is_safe_and_keeps_its_row_number():
    assert safe_id("my file (v2)", 12) == "my_file__v2_-12"
    long = safe_id("x" * 100, 123456)
    assert len(long) == 64 and long.endswith("-123456")


async def test_a_templated_job_through_the_simulator_answers_each_row_once(sim, tmp_path):
    sim.config = SimConfig.all_faults(seed=9)  # retries read rows again through positions
    rows = "".join(f'{i},"para one\npara {i}"\n' for i in range(600))
    csv_path = write_csv(tmp_path / "arts.csv", "id,content\n" + rows)
    s = fast_settings(sim.url, template="Summarise: {content}", max_tokens=50, model=MODEL, id_field="id",
                      batch_size=100, max_attempts=6)
    result = await Engine(s, str(tmp_path / "out"), [str(csv_path)], quiet=True).run()
    assert result.exit_code == ExitCode.OK, result.message
    got = ids_of(read_results(str(tmp_path / "out")))
    assert len(got) == len(set(got)) and set(got) == {str(i) for i in range(600)}


@pytest.mark.parametrize("template, field, name", [
    ("{title:>1000000000}", "{title:>1000000000}", "title"),  # a 16-byte template took 3.95 GB for 2 rows
    ("Summarise {content!r}", "{content!r}", "content"),
    ("{title.__class__}", "{title.__class__}", "title"),
    ("{title[0]}", "{title[0]}", "title"),
    ("{title:{content}}", "{title:{content}}", "title"),
])
def test_a_template_takes_field_names_only(template, field, name):
    with pytest.raises(UsageError) as info:
        template_sources(["a.csv"], settings(template=template))
    assert str(info.value) == (f"--template {template!r}: {field}: a placeholder is a field name only, e.g. "
                               f"{{{name}}} (no format spec, conversion, attribute or index)")


async def test_a_row_rendered_past_the_size_cap_is_rejected_naming_the_cap(tmp_path):
    big = "x" * 3000
    csv_path = write_csv(tmp_path / "rows.csv", f"title,content\nshort,fine\nlong,{big}\n")
    s = settings(template="{content}{content}{content}{content}", batch_bytes=10_000)
    accepted, rejected = await run_rows(s, [csv_path], tmp_path)
    assert [a["params"]["messages"][0]["content"] for a in accepted] == ["finefinefinefine"]
    assert rejected == [{"file": str(csv_path), "line": 3, "error": (
        "the template renders 12,000 bytes for this row, over the cap of 10,000 bytes for one request "
        "(--batch-bytes)")}]
