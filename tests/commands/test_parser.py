"""The command line is the same everywhere: -v and --log-json before or after the sub-command, help for
every argument, `daemon --help` lists only what the daemon accepts, and --log-json makes every line
a `run` writes on stderr JSON."""

from __future__ import annotations

import argparse
import json

import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.commands.parser import build_parser
from batch_scheduler.core.options import BY_NAME
from batch_scheduler.daemon.server import config_from
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import write_requests

KEY = "sk-parser-test-key-5"


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def arguments(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


def test_every_positional_and_option_of_every_command_has_help():
    parser = build_parser()
    missing = [f"{name}: {a.option_strings or a.dest}" for name, sub in subparsers(parser).items()
               for a in arguments(sub) if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    missing += [str(a.option_strings) for a in arguments(parser) if not (a.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("argv", [
    ["-v", "--log-json", "status", "DIR"], ["status", "-v", "--log-json", "DIR"], ["-v", "status", "DIR", "--log-json"],
    ["--log-json", "daemon", "--spool", "S", "-v"], ["daemon", "--spool", "S", "-v", "--log-json"],
    ["run", "in.jsonl", "--out", "o", "--log-json", "-v"], ["-v", "--log-json", "run", "in.jsonl", "--out", "o"],
])
def test_verbose_and_log_json_work_before_and_after_the_command(argv):
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.log_json) == (True, True)


def test_without_the_flags_they_are_off():
    args = build_parser().parse_args(["daemon", "--spool", "S"])
    assert (args.verbose, args.log_json) == (False, False)


def sample_value(action: argparse.Action, tmp_path) -> list[str]:
    """A valid value for one option, as a user would type it."""
    if action.nargs == 0:
        return []
    if action.choices:
        return [list(action.choices)[-1]]
    by_flag = {"--spool": str(tmp_path / "spool"), "--listen": "127.0.0.1:0", "--base-url": "http://127.0.0.1:9",
               "--header": "X-Team: ml", "--prices": str(tmp_path / "prices.json"), "--template": "Say {x}",
               "--webhook": "http://127.0.0.1:9/hook", "--on-done": "true", "--token": "tok-0123456789",
               "--batch-bytes": "100MB", "--poll-max": "90", "--params": str(tmp_path / "params.json"),
               "--model-field": "model", "--params-field": "opts"}
    flag = action.option_strings[-1]
    if flag in by_flag:
        return [by_flag[flag]]
    option = BY_NAME.get(action.dest)
    if action.type is int or (option is not None and option.type is int):
        return ["3"]
    if action.type is not None:
        return ["2.5"]
    return ["x"]


TEMPLATE_ONLY = {"--params", "--cache-system", "--model-field", "--params-field"}
PROVIDER_ONLY = {"--max-enqueued-tokens": "openai"}  # what only one provider's queue counts


def test_every_option_daemon_help_lists_is_one_the_daemon_accepts(tmp_path, capsys):
    (tmp_path / "params.json").write_text('{"temperature": 0.2}')
    (tmp_path / "prices.json").write_text('{"models": {}}')
    daemon = subparsers(build_parser())["daemon"]
    listed = [a for a in arguments(daemon) if a.option_strings]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["daemon", "--help"])
    help_text = capsys.readouterr().out
    flags = {f for a in listed for f in a.option_strings}
    assert {"--dry-run", "--out", "--metrics-file"}.isdisjoint(flags)
    env = {"BATCH_WEBHOOK_SECRET": "whsec-0123456789"}
    for action in listed:
        flag = action.option_strings[-1]
        assert flag in help_text
        argv = ["daemon", "--spool", str(tmp_path / "spool")] if flag != "--spool" else ["daemon"]
        if flag in TEMPLATE_ONLY:  # shapes the requests of a template job: given with a template
            argv += ["--template", "Say {x}"]
        if flag in PROVIDER_ONLY:
            argv += ["--provider", PROVIDER_ONLY[flag]]
        args = build_parser().parse_args([*argv, flag, *sample_value(action, tmp_path)])
        config = config_from(args, env)  # raises UsageError for an option the daemon refuses
        assert config.spool == str(tmp_path / "spool")


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess(["--keys", KEY]) as s:
        yield s


def test_run_with_log_json_writes_only_json_on_stderr_outcome_included(sim, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    write_requests(tmp_path / "in.jsonl", 60)
    argv = ["run", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "out"), "--base-url", sim.url,
            "--poll-min", "0.02", "--poll-max", "0.1", "--batch-size", "20", "--log-json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.err.splitlines()]  # every line is JSON
    outcome = records[-1]
    assert outcome["msg"].startswith("60 of 60 requests finished (60 succeeded, 0 errored, 0 expired), 0 rejected;")
    assert (outcome["level"], outcome["exit_code"], outcome["state"]) == ("info", 0, "done")
    assert outcome["results"]["succeeded"] == 60
    assert KEY not in captured.err


def test_a_usage_error_under_log_json_is_a_json_record(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["status", str(tmp_path / "nothing"), "--log-json"]) == 2
    record = json.loads(capsys.readouterr().err.strip())
    assert (record["level"], record["exit_code"]) == ("error", 2)
    assert record["msg"] == f"{tmp_path / 'nothing'}: no job here (no ledger.db)"
