"""A file's new content put in place whole and durable by name (`core/durable.py`): after a crash it is the old
file or the new one, never an empty or a cut one, and not the old one come back once the new one was there.
Each test watches the fsyncs (of files and of directories) and the renames, in order."""

from __future__ import annotations

import os
import stat

import orjson
import pytest

from batch_scheduler.core import durable
from batch_scheduler.state.jobdir import write_summary


@pytest.fixture
def events(monkeypatch):
    """What was fsync'd (a file's or a directory's path) and renamed, in order."""
    seen: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        seen.append((f"fsync {kind}", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        seen.append(("replace", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_a_file_written_whole_is_fsyncd_then_renamed_then_its_directory_synced(tmp_path, events):
    path = str(tmp_path / "summary.json")
    durable.write_file(path, b"one")
    durable.write_file(path, b"two")
    assert (tmp_path / os.path.basename(path)).read_bytes() == b"two" and os.listdir(tmp_path) == ["summary.json"]
    assert events[3:] == [("fsync file", path + ".tmp"), ("replace", f"{path}.tmp -> {path}"),
                          ("fsync dir", str(tmp_path))]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_write_that_fails_leaves_the_old_file_as_it_was_and_no_temporary_behind(tmp_path, events):
    path = str(tmp_path / "export.csv")
    durable.write_file(path, b"old")
    events.clear()
    with pytest.raises(OSError, match="disk full"), durable.replacing(path) as f:
        f.write(b"half of the new")
        raise OSError(28, "disk full")
    assert (tmp_path / os.path.basename(path)).read_bytes() == b"old" and os.listdir(tmp_path) == ["export.csv"]
    assert events == []  # nothing renamed, nothing said durable


def test_a_jobs_summary_is_put_in_place_durably(tmp_path, events):
    write_summary(str(tmp_path), {"state": "done"})
    summary = str(tmp_path / "summary.json")
    assert orjson.loads((tmp_path / "summary.json").read_bytes()) == {"state": "done"}
    assert events == [("fsync file", summary + ".tmp"), ("replace", f"{summary}.tmp -> {summary}"),
                      ("fsync dir", str(tmp_path))]
