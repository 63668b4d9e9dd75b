"""`batch-scheduler export`: its exit codes and the one line it says."""

from __future__ import annotations

import sys

from batch_scheduler.commands.main import main


def test_parquet_without_pyarrow_is_one_line_saying_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # what an install without the extra meets
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.parquet")]) == 2
    assert capsys.readouterr().err == ("batch-scheduler: --format parquet needs pyarrow: "
                                       "pip install 'batch-scheduler[parquet]'\n")
    assert not (tmp_path / "x.parquet").exists()


def test_export_refuses_what_it_cannot_do_with_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.csv")]) == 2
    assert capsys.readouterr().err == f"batch-scheduler: {tmp_path}: no job here (no ledger.db)\n"
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.txt")]) == 2
    assert capsys.readouterr().err == (f"batch-scheduler: -o {tmp_path / 'x.txt'}: say which format with --format "
                                       f"{{jsonl,csv,parquet}} (or name the file .jsonl, .csv or .parquet)\n")
