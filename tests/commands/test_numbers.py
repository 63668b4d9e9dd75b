"""Numbers and header values are checked before anything runs: a usage error (exit 2) with one line, never a
hang or a traceback."""

from __future__ import annotations

import pytest

from batch_scheduler.commands.main import main

from ..helpers import write_requests

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def inp(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-numbers-key-0042")
    write_requests(tmp_path / "in.jsonl", 3)
    return str(tmp_path / "in.jsonl")


@pytest.mark.parametrize("flags, message", [
    (["--http-timeout", "-1"], "batch-scheduler: --http-timeout -1.0: must be at least 0.001"),
    (["--http-timeout", "0"], "batch-scheduler: --http-timeout 0.0: must be at least 0.001"),
    (["--poll-min", "0"], "batch-scheduler: --poll-min 0.0: must be at least 0.001"),
    (["--header", "X-Proxy: a\r\nInjected: b"],
     "batch-scheduler: --header: the value of header X-Proxy holds a line break (CR or LF)"),
    (["--header", "Bad Name: x"], "batch-scheduler: --header: 'Bad Name' is not a header name (letters, digits and "
                                  "!#$%&'*+-.^_`|~ only)"),
    (["--anthropic-version", "2023-06-01\nX-Injected: 1"],
     "batch-scheduler: --anthropic-version: the value holds a line break or another control character"),
    (["--provider", "inline", "--inline-create-path", "/v1/batches\r\nX: y"],
     "batch-scheduler: --inline-create-path: the value holds a line break or another control character"),
    (["--base-url", "ftp://example.com"],
     "batch-scheduler: --base-url 'ftp://example.com': expected http:// or https:// and a host, e.g. "
     "https://api.anthropic.com"),
    (["--base-url", "http://127.0.0.1:1\n"],
     "batch-scheduler: --base-url 'http://127.0.0.1:1\\n': expected http:// or https:// and a host, e.g. "
     "https://api.anthropic.com"),
])
def test_a_bad_number_or_header_value_is_a_usage_error(inp, tmp_path, capsys, flags, message):
    assert main(["run", inp, "--out", str(tmp_path / "out"), *flags]) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--poll-min", "nan"], "argument --poll-min: invalid finite number value: 'nan'"),
    (["--http-timeout", "inf"], "argument --http-timeout: invalid finite number value: 'inf'"),
    (["--max-cost=-inf"], "argument --max-cost: invalid finite number value: '-inf'"),
    (["--batch-bytes", "lots"], "argument --batch-bytes: cannot read size 'lots': use a number of bytes or e.g. "
                                "200MB, 256MiB"),
])
def test_what_cannot_be_a_number_is_refused_by_the_parser(inp, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as stop:
        main(["run", inp, "--out", str(tmp_path / "out"), *flags])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"batch-scheduler run: error: {message}"
