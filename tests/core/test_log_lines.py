"""One record, one line: a job name (or anything else from outside) with CR, LF or other control
characters cannot forge a log line of its own."""

from __future__ import annotations

import io
import logging

from batch_scheduler.core.logs import RedactFilter
from batch_scheduler.daemon.spool import Spool

FORGED = "nightly\n12:00:00 INFO batch_scheduler.daemon: job payroll: done\r\x1b[2K"


def written(message: str, *args) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(RedactFilter())
    logger = logging.getLogger("test.one_line")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_a_job_name_with_cr_lf_and_escapes_is_written_on_one_line_escaped():
    line = written("job %s: done", FORGED)
    assert line == ("WARNING job nightly\\n12:00:00 INFO batch_scheduler.daemon: job payroll: done\\r\\x1b[2K: "
                    "done\n")


def test_a_tab_and_plain_text_are_left_as_they_are():
    assert written("job %s: done", "a\tb c") == "WARNING job a\tb c: done\n"


def test_an_inbox_file_named_with_control_characters_is_not_claimed_and_said_on_one_line(tmp_path, caplog):
    spool = Spool(str(tmp_path))
    spool.ensure()
    (tmp_path / "inbox" / "ok.jsonl").write_text("{}\n")
    (tmp_path / "inbox" / f"{FORGED}.jsonl").write_text("{}\n")
    with caplog.at_level(logging.WARNING):
        assert spool.arrivals() == ["ok.jsonl"]
    assert [r.getMessage() for r in caplog.records] == [
        f"inbox/{FORGED}.jsonl is named with control characters: not claimed (rename the file itself into the "
        f"inbox)"]
    assert "\n" not in written(caplog.records[0].msg, *caplog.records[0].args).rstrip("\n")
