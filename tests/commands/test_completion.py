"""`batch-scheduler completion SHELL`: scripts generated from the parser complete what a user types.

bash and fish are asked for real completions of a partial command line; zsh's script is checked by
zsh itself (syntax) and for every option of every sub-command. The Makefile installs zsh and fish.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from batch_scheduler.commands.completion import script
from batch_scheduler.commands.parser import build_parser
from batch_scheduler.core.options import JOB_OPTIONS
from batch_scheduler.providers import REGISTRY


def need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        pytest.fail(f"{shell} is not installed (make test installs it)")
    return path


def cli_script(shell: str) -> str:
    done = subprocess.run([sys.executable, "-m", "batch_scheduler", "completion", shell],
                          capture_output=True, text=True, check=True)
    return done.stdout


def bash_complete(tmp_path, words: list[str]) -> list[str]:
    path = tmp_path / "c.bash"
    path.write_text(cli_script("bash"))
    words_sh = " ".join(f"'{w}'" for w in words)
    out = subprocess.run([need("bash"), "-c", f"source {path}; COMP_WORDS=({words_sh}); "
                          f"COMP_CWORD={len(words) - 1}; _batch_scheduler; printf '%s\\n' \"${{COMPREPLY[@]}}\""],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


def fish_complete(tmp_path, line: str) -> list[str]:
    path = tmp_path / "c.fish"
    path.write_text(cli_script("fish"))
    out = subprocess.run([need("fish"), "-c", f"source {path}; complete -C'{line}'"],
                         capture_output=True, text=True, check=True)
    return [row.split("\t")[0] for row in out.stdout.splitlines()]


def test_bash_completes_commands_options_and_choices(tmp_path):
    assert bash_complete(tmp_path, ["batch-scheduler", "ex"]) == ["export"]
    assert bash_complete(tmp_path, ["batch-scheduler", "run", "in.jsonl", "--ou"]) == ["--out"]
    assert set(bash_complete(tmp_path, ["batch-scheduler", "run", "x", "--provider", ""])) == set(REGISTRY)
    assert "--format" in bash_complete(tmp_path, ["batch-scheduler", "export", "DIR", "--f"])
    assert bash_complete(tmp_path, ["batch-scheduler", "export", "DIR", "--format", "p"]) == ["parquet"]


def test_bash_offers_every_job_option_of_run(tmp_path):
    offered = set(bash_complete(tmp_path, ["batch-scheduler", "run", "x", "--"]))
    for option in JOB_OPTIONS:
        assert option.flag in offered, option.flag


def test_fish_completes_commands_options_and_choices(tmp_path):
    assert fish_complete(tmp_path, "batch-scheduler st") == ["status"]
    assert fish_complete(tmp_path, "batch-scheduler run in.jsonl --ou") == ["--out"]
    assert fish_complete(tmp_path, "batch-scheduler export DIR --format ") == ["csv", "jsonl", "parquet"]


def test_zsh_script_is_valid_and_names_every_option(tmp_path):
    text = cli_script("zsh")
    path = tmp_path / "_batch-scheduler"
    path.write_text(text)
    subprocess.run([need("zsh"), "-n", str(path)], check=True)
    assert text.startswith("#compdef batch-scheduler")
    for option in JOB_OPTIONS:
        assert option.flag in text, option.flag
    for name in ("run", "resume", "submit", "status", "cancel", "export", "daemon", "completion"):
        assert f"'{name}:" in text


def test_a_new_subcommand_is_completed_without_touching_the_generator():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    extra = sub.add_parser("frobnicate", help="a command added later")
    extra.add_argument("--level", choices=("low", "high"))
    text = script("bash", parser)
    assert "frobnicate" in text and "'low high'" in text
