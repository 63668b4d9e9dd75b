"""The cluster's commands as a user types them: submit, status, cancel, and daemon --ledger's start."""

from __future__ import annotations

import json
import subprocess
import sys

from batch_scheduler.commands.main import main

from ..helpers import write_requests
from .servers import free_port


def test_submit_queues_a_job_that_status_lists(pg_url, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    write_requests(str(inp), 5)
    out = tmp_path / "out"
    assert main(["submit", str(inp), "--ledger", pg_url, "--name", "nightly", "--out", str(out),
                 "--batch-size", "500"]) == 0
    assert capsys.readouterr().err == f"job nightly: queued in {pg_url}; results will be in {out}\n"
    assert main(["status", "--ledger", pg_url, "--json"]) == 0
    jobs = json.loads(capsys.readouterr().out)["jobs"]
    assert [(j["name"], j["state"], j["out"], j["inputs"]) for j in jobs] == [("nightly", "queued", str(out),
                                                                              [str(inp)])]
    assert main(["status", "--ledger", pg_url, "nightly"]) == 0
    assert capsys.readouterr().out.startswith("nightly: queued; 0 of ? requests finished; $0.0000; out ")


def test_a_second_job_with_the_same_name_or_the_same_out_is_refused(pg_url, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    write_requests(str(inp), 1)
    base = ["submit", str(inp), "--ledger", pg_url]
    assert main([*base, "--name", "a", "--out", str(tmp_path / "o1")]) == 0
    assert main([*base, "--name", "a", "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err.endswith("batch-scheduler: a job named 'a' exists already; choose another --name\n")
    assert main([*base, "--name", "b", "--out", str(tmp_path / "o1")]) == 2
    assert capsys.readouterr().err.endswith(f"batch-scheduler: --out {tmp_path / 'o1'} belongs to job 'a', "
                                            f"which is not finished\n")


def test_cancel_of_a_queued_job_cancels_it_at_once(pg_url, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    write_requests(str(inp), 1)
    assert main(["submit", str(inp), "--ledger", pg_url, "--name", "j", "--out", str(tmp_path / "o")]) == 0
    assert main(["cancel", "--ledger", pg_url, "j"]) == 0
    assert capsys.readouterr().out == "job j: cancelled\n"
    assert main(["status", "--ledger", pg_url, "j", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"][0]["state"] == "cancelled"
    assert main(["cancel", "--ledger", pg_url, "nope"]) == 2
    assert capsys.readouterr().err == "batch-scheduler: no job named 'nope'\n"


def test_a_bad_url_is_a_usage_error_and_a_refused_connection_names_host_and_port_not_the_password(tmp_path,
                                                                                                  capsys):
    assert main(["status", "--ledger", "mysql://u@h/db"]) == 2
    assert capsys.readouterr().err == "batch-scheduler: --ledger mysql://u@h/db: expected postgresql://USER@HOST:PORT/DB\n"
    assert main(["status", "--ledger", "postgresql://u:pw@h:99999/db"]) == 2
    assert capsys.readouterr().err == ("batch-scheduler: --ledger postgresql://u:***@h:99999/db: the port is not a "
                                       "number from 1 to 65535\n")
    port = free_port()  # nothing listens there
    assert main(["status", "--ledger", f"postgresql://bob:s3cret-pw@127.0.0.1:{port}/jobs"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"batch-scheduler: PostgreSQL at 127.0.0.1:{port} cannot be reached: ")
    assert "s3cret-pw" not in err


def test_daemon_with_an_unreachable_ledger_exits_1_naming_host_and_port(tmp_path):
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "batch_scheduler", "daemon", "--ledger",
                           f"postgresql://bob:s3cret-pw@127.0.0.1:{port}/jobs"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 1
    assert f"not starting: PostgreSQL at 127.0.0.1:{port} cannot be reached: " in done.stderr
    assert "s3cret-pw" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "batch_scheduler", "daemon", "--ledger", "postgres://h:x/db"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr == ("batch-scheduler: --ledger postgres://h:x/db: the port is not a number from 1 to "
                           "65535\n")
    done = subprocess.run([sys.executable, "-m", "batch_scheduler", "daemon"], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr == ("batch-scheduler: daemon: --spool DIR (one machine) or --ledger "
                           "postgresql://USER@HOST:PORT/DB (a cluster node) is required\n")
