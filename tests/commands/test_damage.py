"""What goes wrong on disk or in an input is one line saying what happened and what to do, never a traceback,
and nothing is lost: a full disk (shards or ledger), an --out that is not a directory, a damaged ledger, a cut
.gz, bytes that are not UTF-8 in a CSV."""

from __future__ import annotations

import ctypes
import gzip
import os
import re
import resource
import signal
import subprocess
import sys
import zlib
from collections import Counter

import orjson
import pytest

from batch_scheduler.commands.main import main
from batch_scheduler.job.input import reader
from batch_scheduler.simulator.process import SimulatorProcess

from ..helpers import ids_of, read_results, write_requests

KEY = "sk-damage-key-0042"
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def sim():
    with SimulatorProcess() as s:
        yield s


@pytest.fixture
def env(monkeypatch, tmp_path, sim):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.url)
    monkeypatch.delenv("CLAUDE_API_KEY", raising=False)
    return tmp_path


def run_args(env, inp="in.jsonl", *extra):
    return ["run", str(env / inp), "--out", str(env / "out"), "--poll-min", "0.02", "--poll-max", "0.1",
            "--batch-size", "100", "--shards", "1", *extra]


PR_CAPBSET_DROP = 24  # linux/prctl.h


def file_size_limit(n: int):
    """In the child: writes past n bytes of a file fail with EFBIG, as on a full disk."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.RLIM_INFINITY))
    return limit


@pytest.mark.parametrize("limit, where", [(100_000, "ledger.db"), (300_000, "results/shard-00000.jsonl")],
                         ids=["ledger", "shards"])
def test_a_full_disk_stops_the_run_with_one_line_and_the_next_run_finishes_exactly_once(env, limit, where):
    ids = write_requests(env / "in.jsonl", 2000)
    proc = subprocess.run([sys.executable, "-m", "batch_scheduler", *run_args(env)], capture_output=True, text=True,
                          preexec_fn=file_size_limit(limit), timeout=50)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"batch-scheduler: stopped: no room left to write {re.escape(str(env / 'out' / where))} "
                        r"\((File too large|disk I/O error|database or disk is full)\): free some space, then run "
                        r"the same command again; nothing is lost", last), last
    assert main(run_args(env)) == 0
    got = ids_of(read_results(str(env / "out")))
    assert sorted(got) == ids and max(Counter(got).values()) == 1


def test_an_out_that_is_not_a_directory_is_one_line(env, capsys):
    write_requests(env / "in.jsonl", 3)
    (env / "out").write_text("a file")
    assert main(run_args(env)) == 2
    assert capsys.readouterr().err.strip() == f"batch-scheduler: --out {env / 'out'}: not a directory"


def without_root_override() -> None:
    """In the child: drop the capabilities that let root write where permissions say no (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) from the bounding set, so the program it runs has them no more."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_out_that_cannot_be_written_is_one_line(env, capsys):
    write_requests(env / "in.jsonl", 3)
    (env / "out").mkdir(mode=0o500)
    expected = f"batch-scheduler: --out {env / 'out'}: cannot write there (Permission denied)"
    if os.geteuid() != 0:
        assert main(run_args(env)) == 2
        assert capsys.readouterr().err.strip() == expected
        return
    # root (CI) writes into a read-only directory unless its override is dropped: the program runs without it
    proc = subprocess.run([sys.executable, "-m", "batch_scheduler", *run_args(env)], capture_output=True, text=True,
                          preexec_fn=without_root_override, timeout=50)
    assert (proc.returncode, proc.stderr.strip()) == (2, expected)


def test_a_damaged_ledger_is_one_line_and_left_as_it_is(env, capsys):
    write_requests(env / "in.jsonl", 3)
    (env / "out").mkdir()
    garbage = b"this is no SQLite database at all" * 200
    (env / "out" / "ledger.db").write_bytes(garbage)
    for command in (run_args(env), ["status", str(env / "out")], ["resume", str(env / "out")]):
        assert main(command) == 2
        assert capsys.readouterr().err.strip() == (
            f"batch-scheduler: {env / 'out' / 'ledger.db'} cannot be read as a ledger (file is not a database): it "
            f"is damaged; restore it from a copy, or start the job afresh in another directory")
    assert (env / "out" / "ledger.db").read_bytes() == garbage


def test_a_cut_gz_says_where_it_ends_and_what_to_do(env, capsys, monkeypatch):
    monkeypatch.setattr(reader, "BLOCK_BYTES", 16 << 10)
    write_requests(env / "plain.jsonl", 600)
    data = (env / "plain.jsonl").read_bytes()
    packed = gzip.compress(data)
    (env / "in.jsonl.gz").write_bytes(packed[: len(packed) * 2 // 3])
    got = zlib.decompressobj(31).decompress(packed[: len(packed) * 2 // 3])  # all that unpacks before the cut
    line = got.count(b"\n") + 1
    assert main(run_args(env, "in.jsonl.gz")) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"batch-scheduler: {env / 'in.jsonl.gz'}:{line}: the compressed data ends early (a truncated or partly "
        f"copied file?): start afresh with a complete copy in another --out; the requests before it were sent and "
        f"their results collected")
    assert len(read_results(str(env / "out"))) == line - 1  # every request before the line it cut


def test_bytes_that_are_not_utf8_in_a_csv_reject_their_row_with_its_line(env, capsys):
    (env / "rows.csv").write_bytes(b"id,body\na,first\nb,caf\xe9 latin-1\nc,third\n")
    args = run_args(env, "rows.csv", "--template", "Say {body}", "--max-tokens", "8", "--model", "claude-sonnet-4-5",
                    "--id-field", "id")
    assert main(args) == 0
    assert sorted(ids_of(read_results(str(env / "out")))) == ["a", "c"]
    rejected = [orjson.loads(x) for x in (env / "out" / "rejected.jsonl").read_bytes().splitlines()]
    assert rejected == [{"file": str(env / "rows.csv"), "line": 3,
                         "error": "bytes that are not UTF-8 in field 'body'; save the file as UTF-8"}]
