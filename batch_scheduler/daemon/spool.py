"""The spool on disk, and the record of each job in it.

    DIR/inbox/NAME.jsonl (.jsonl.gz, .csv)   a job arrives: renamed in (names starting with `.` are ignored)
    DIR/inbox/NAME.options.json              its options (renamed in first): the flags' names in snake_case
    DIR/jobs/NAME/                           a claimed job: input.*, options.json and what `run --out`
                                             writes (results/, rejected.jsonl, ledger.db, summary.json)

A job's state is the `state` field of its summary.json, which the daemon owns (written atomically);
`jobs.JobRunner` moves it from one state to the next.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.durable import sync_dir, write_file
from batch_scheduler.core.logs import CONTROL
from batch_scheduler.core.options import coerce_option_file
from batch_scheduler.daemon.logs import log
from batch_scheduler.state.host import recorded_since, written_since

if TYPE_CHECKING:
    from batch_scheduler.job.engine import Engine

INPUT_SUFFIXES = (".jsonl.gz", ".jsonl", ".csv")
OPTIONS_SUFFIX = ".options.json"
OPTIONS_FILE = "options.json"
SUMMARY_FILE = "summary.json"
CLAIM_SUFFIX = ".claim"  # jobs/.NAME.claim: a claim in progress (finished or undone at startup)


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


def job_name(filename: str) -> str | None:
    """`big.jsonl.gz` -> `big`; None for anything that is not a job's input."""
    if filename.startswith("."):
        return None
    for suffix in INPUT_SUFFIXES:
        if filename.endswith(suffix) and len(filename) > len(suffix):
            return filename[: -len(suffix)]
    return None


def read_json(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_summary(job_dir: str, fields: Mapping[str, Any]) -> None:
    """Merge the daemon's fields into summary.json (the engine writes the rest), atomically."""
    path = os.path.join(job_dir, SUMMARY_FILE)
    doc = read_json(path)
    doc.update(fields)
    if fields.get("reason") is None:
        doc.pop("reason", None)
    write_file(path, orjson.dumps(doc, option=orjson.OPT_INDENT_2), tmp=path + ".daemon-tmp")


@dataclass(eq=False)
class Job:
    name: str
    dir: str
    input_name: str  # the input's file name inside dir (input.jsonl, input.jsonl.gz, input.csv)
    source: str  # the name it arrived under
    claimed_at: float  # epoch; arrival order
    state: JobState = JobState.QUEUED
    reason: str | None = None
    # while the daemon runs
    task: asyncio.Task | None = None
    engine: Engine | None = None
    key_check: asyncio.Task | None = None
    next_key_check: float = 0.0  # monotonic
    resume_at: float = 0.0  # monotonic: a job paused for want of disk space is queued again then (0: not so)
    not_before: float = 0.0  # monotonic: a run that stopped on an error waits until then
    restarts: int = 0  # runs in a row that stopped on an error
    cancel_requested: bool = False
    env_generation: int = 0  # which reading of .env its last run started with
    version: int = 0  # changes with every state change (cache key)

    @property
    def input(self) -> str:
        return os.path.join(self.dir, self.input_name)

    def fields(self) -> dict[str, Any]:
        return {"job": self.name, "state": self.state.value, "reason": self.reason, "source": self.source,
                "input": self.input_name, "claimed_at": self.claimed_at, "updated_at": time.time()}


class Spool:
    """DIR/inbox and DIR/jobs: arrivals, claims (crash-safe) and the jobs found at startup."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.inbox = os.path.join(self.root, "inbox")
        self.jobs = os.path.join(self.root, "jobs")
        self._passed_over: set[str] = set()  # inbox names not claimed (links, not files), said once each

    def ensure(self) -> None:
        for d in (self.root, self.inbox, self.jobs):
            os.makedirs(d, mode=0o700, exist_ok=True)

    def arrivals(self) -> list[str]:
        """Inputs waiting in the inbox, first arrived first (a rename sets ctime). Regular files only: a symbolic
        link (to another user's file, say) is never claimed, nor followed."""
        found = []
        with os.scandir(self.inbox) as entries:
            for e in entries:
                if job_name(e.name) is None:
                    continue
                if CONTROL.search(e.name):  # the job's name would carry them into log lines and hooks
                    self._pass_over(e.name, "named with control characters")
                    continue
                try:
                    if not e.is_file(follow_symlinks=False):
                        self._pass_over(e.name, "a symbolic link" if e.is_symlink() else "not a regular file")
                        continue
                    found.append((e.stat(follow_symlinks=False).st_ctime_ns, e.name))
                except FileNotFoundError:
                    continue
        return [name for _, name in sorted(found)]

    def _pass_over(self, filename: str, why: str) -> None:
        if filename not in self._passed_over:
            self._passed_over.add(filename)
            log.warning("inbox/%s is %s: not claimed (rename the file itself into the inbox)", filename, why)

    def batches_since(self, job_dir: str, since: float) -> set[str]:
        """Batch ids the ledgers of the spool's other jobs recorded at or after `since` (epoch): what a lost
        create of the job in `job_dir` must never adopt. Blocking; only ledgers written since are opened."""
        held: set[str] = set()
        with os.scandir(self.jobs) as entries:
            dirs = [e.path for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        for d in dirs:
            path = os.path.join(d, "ledger.db")
            if os.path.abspath(d) != job_dir and written_since(path, since):
                held |= recorded_since(path, since)
        return held

    def taken(self, name: str) -> bool:
        return any(os.path.lexists(os.path.join(self.jobs, n)) for n in (name, f".{name}{CLAIM_SUFFIX}"))

    def claim(self, filename: str, name: str) -> Job | None:
        """Move inbox/FILENAME (and its options) into jobs/NAME; None if it vanished meanwhile.

        Staged in jobs/.NAME.claim (summary first, then options, then input), renamed into place last,
        so that a crash at any point leaves something `recover` can finish or undo.
        """
        base = job_name(filename)
        assert base is not None
        suffix = filename[len(base):]
        stage = os.path.join(self.jobs, f".{name}{CLAIM_SUFFIX}")
        arrived = os.path.join(self.inbox, filename)
        try:
            if not stat.S_ISREG(os.lstat(arrived).st_mode):
                return None
        except FileNotFoundError:
            return None
        os.mkdir(stage, 0o700)
        job = Job(name, os.path.join(self.jobs, name), "input" + suffix, filename, time.time())
        staged = os.path.join(stage, job.input_name)
        try:
            write_summary(stage, job.fields())
            options = os.path.join(self.inbox, base + OPTIONS_SUFFIX)
            if os.path.lexists(options):
                os.rename(options, os.path.join(stage, OPTIONS_FILE))
                owner_only(os.path.join(stage, OPTIONS_FILE))  # a link stays one: read_options refuses it
            try:
                os.rename(arrived, staged)
            except FileNotFoundError:
                self._undo(stage)
                return None
            if not owner_only(staged):  # replaced by a link since it was looked at: back where it came from
                os.rename(staged, arrived)
                self._pass_over(filename, "a symbolic link")
                self._undo(stage)
                return None
            os.rename(stage, job.dir)
            sync_dir(self.jobs)  # the claim durable before the job runs: its input gone from the inbox, its
            sync_dir(self.inbox)  # directory under its name (after a crash, not back in the inbox to run twice)
        except OSError:  # a full disk, say: nothing half-claimed stays behind, the next look tries again
            if os.path.lexists(staged) and not os.path.lexists(arrived):
                os.rename(staged, arrived)
            self._undo(stage)
            raise
        return job

    def _undo(self, stage: str) -> None:
        source = read_json(os.path.join(stage, SUMMARY_FILE)).get("source")
        base = job_name(source) if isinstance(source, str) else None
        options = os.path.join(stage, OPTIONS_FILE)
        if base and os.path.lexists(options):
            back = os.path.join(self.inbox, base + OPTIONS_SUFFIX)
            if not os.path.lexists(back):
                os.rename(options, back)
        for leftover in os.listdir(stage):
            os.unlink(os.path.join(stage, leftover))
        os.rmdir(stage)

    def recover(self) -> list[Job]:
        """Every job in jobs/, after finishing (input moved) or undoing (not yet) interrupted claims."""
        for entry in sorted(os.listdir(self.jobs)):
            stage = os.path.join(self.jobs, entry)
            if not (entry.startswith(".") and entry.endswith(CLAIM_SUFFIX) and os.path.isdir(stage)):
                continue
            name = entry[1:-len(CLAIM_SUFFIX)]
            if any(f.startswith("input") for f in os.listdir(stage)) and not os.path.lexists(
                    os.path.join(self.jobs, name)):
                os.rename(stage, os.path.join(self.jobs, name))
                log.info("job %s: finished its interrupted claim", name, extra={"job": name})
            else:
                self._undo(stage)
                log.info("undid an interrupted claim (%s)", entry)
        jobs = []
        for entry in sorted(os.listdir(self.jobs)):
            path = os.path.join(self.jobs, entry)
            if entry.startswith(".") or not os.path.isdir(path):
                continue
            job = self._load(entry, path)
            if job is None:
                log.warning("jobs/%s: no input file in it; left alone", entry)
            else:
                jobs.append(job)
        return sorted(jobs, key=lambda j: (j.claimed_at, j.name))

    @staticmethod
    def _load(name: str, path: str) -> Job | None:
        doc = read_json(os.path.join(path, SUMMARY_FILE))
        input_name = doc.get("input")
        if not isinstance(input_name, str) or not os.path.exists(os.path.join(path, input_name)):
            names = sorted(f for f in os.listdir(path) if f.startswith("input") and job_name(f) == "input")
            if not names:
                return None
            input_name = names[0]
        try:
            state = JobState(doc.get("state", ""))
        except ValueError:  # the engine's own word ("incomplete"), or nothing yet: take it up again
            state = JobState.QUEUED
        claimed = doc.get("claimed_at")
        return Job(name, path, input_name, str(doc.get("source") or input_name),
                   float(claimed) if isinstance(claimed, int | float) else os.stat(path).st_ctime,
                   state=state, reason=doc.get("reason"))


def owner_only(path: str) -> bool:
    """Make the regular file at `path` its owner's only (0600), never following a link; False if it is none."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # a symbolic link (ELOOP), or gone
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.fchmod(fd, 0o600)
        return True
    finally:
        os.close(fd)


def read_options(job_dir: str) -> dict[str, Any]:
    """The job's options.json, option -> value ({} without one); UsageError for one that cannot be used
    (a symbolic link among them: the daemon reads no file a job's options point at)."""
    path = os.path.join(job_dir, OPTIONS_FILE)
    if not os.path.lexists(path):
        return {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise errors.UsageError(f"options: {OPTIONS_FILE} is not a regular file")
            doc = orjson.loads(f.read())
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise errors.UsageError(f"options: {OPTIONS_FILE} is a symbolic link; a job's options must be a file "
                                    f"of its own") from None
        raise errors.UsageError(f"options: cannot read {OPTIONS_FILE}: {err}") from None
    except orjson.JSONDecodeError as err:
        raise errors.UsageError(f"options: cannot read {OPTIONS_FILE}: {err}") from None
    if not isinstance(doc, dict):
        raise errors.UsageError(f'options: expected a JSON object such as {{"model": "...", "batch_size": 500}}, '
                                f"got {type(doc).__name__}")
    return coerce_option_file(doc, "options")
