"""The library API behind `batch_scheduler.run` and `batch_scheduler.arun` (the package re-exports them).

    result = batch_scheduler.run(inputs, out, **options)          # blocking
    result = await batch_scheduler.arun(inputs, out, **options)   # inside a running loop (Jupyter, apps)
    again = batch_scheduler.rerun(out, where="status=errored|invalid")   # a subset again, in OUT.rerun-N

`inputs`: a path, a list of paths and globs (as `run` takes them; a .parquet file holds rows), a table
(a pandas or polars DataFrame, a polars LazyFrame, a pyarrow Table or RecordBatchReader, a Hugging
Face `Dataset`: read a record batch at a time, see `input/tables.py`), or an iterable of dicts: request
lines in the provider's form, or rows when `template=` is given. A row's custom id is its position
(`input-1` is the first row), or its `id_field=`. Anything else is a TypeError naming what was given. An iterable is consumed once, as it
comes, into OUT/input.jsonl (never held whole; OUT's lock is taken first, so a second caller on the
same OUT is refused, exit 2, as a second `run` is, before it writes anything), and that file is the job's input from then on; a
resumed run must be given the same iterable again: one that yields anything else is refused (exit 2)
and OUT/input.jsonl is left as it was.

`options`: the `run` command's long options with dashes as underscores (core.options, the one table),
plus `api_key=`; what is not given comes from the environment and `.env`, as for the CLI. An unknown
option is a TypeError naming it; a bad value is the CLI's UsageError, raised before anything runs.
What the job itself meets comes back as a `JobResult` (the CLI's exit status and last line).

Nothing process-wide changes: no GC thresholds, umask, event-loop policy, logging configuration or
signal handler (`run` runs on a fresh loop of its own; while it runs, asyncio's own Ctrl-C handler
stands in the main thread, put back after). The job's files are written owner-only by their modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from batch_scheduler.core import errors
from batch_scheduler.core.durable import replace
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.joblock import JobLock
from batch_scheduler.core.loop import new_event_loop
from batch_scheduler.core.options import JOB_OPTION_NAMES, REMEMBERED
from batch_scheduler.core.settings import Settings, load_environment
from batch_scheduler.job.dryrun import estimate, nothing_to_send, rejects_path
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.job.input.output_schema import job_params
from batch_scheduler.job.input.reader import expand_inputs
from batch_scheduler.job.input.sources import make_sources
from batch_scheduler.job.input.tables import data_object_name, dumps_row, table_kind, table_rows
from batch_scheduler.job.input.validate import Rejects
from batch_scheduler.job.money.models import did_you_mean, unknown_model
from batch_scheduler.job.money.pricing import PriceTable, cost_range
from batch_scheduler.job.view.live import NotebookBar, ProgressFn, in_notebook, resolve
from batch_scheduler.job.view.rerun import Where, plan_rerun
from batch_scheduler.job.view.structured import Judge, remember_model
from batch_scheduler.providers import build_settings, missing_key_message
from batch_scheduler.state.jobdir import lock_dir
from batch_scheduler.state.stores import LocalStore

SPOOL = "input.jsonl"  # where an iterable of dicts is written, in OUT
PYTHON_ONLY = ("api_key", "response_model", "progress")  # keywords of run/arun that are no CLI option
OWNER = "batch-scheduler run"  # who holds OUT's lock, as a refused caller is told (the engine's default)
_COMPARE_BYTES = 1 << 20

Inputs = str | os.PathLike | Iterable[Any]


def run(inputs: Inputs, out: str | os.PathLike, **options: Any) -> JobResult:
    """Run (or resume) the job until its input is done; blocking. See the module docstring.

    Inside a running event loop (a notebook's cell, an async app) the job runs on a loop of its own in a
    worker thread, and the caller's thread waits for it: the caller's loop is blocked meanwhile (await
    `arun` to keep it going). Ctrl-C (a notebook's "interrupt kernel") while it waits cancels the job as
    Ctrl-C stops the CLI's run (what was sent stays in the ledger; the same call resumes it), then raises
    KeyboardInterrupt."""
    if options.get("progress", "auto") in ("auto", None) and in_notebook():
        options["progress"] = NotebookBar()  # made in the cell's own thread, whichever thread runs the job
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(arun(inputs, out, **options))
    return in_worker_thread(arun(inputs, out, **options))


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """In the main thread, Ctrl-C raises KeyboardInterrupt while the caller waits, whatever handler its loop put
    there (asyncio's only cancels a task the blocked loop never runs); the handler is put back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def in_worker_thread(job: Coroutine[Any, Any, JobResult]) -> JobResult:
    """Run `job` on a fresh loop in a worker thread and wait for it; KeyboardInterrupt cancels it first."""
    outcome: dict[str, Any] = {}
    started, done = threading.Event(), threading.Event()

    def work() -> None:
        async def main() -> JobResult:
            outcome["loop"], outcome["task"] = asyncio.get_running_loop(), asyncio.current_task()
            started.set()
            return await job

        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                outcome["result"] = runner.run(main())
        except BaseException as exc:  # handed to the caller's thread, raised there
            outcome["error"] = exc
        finally:
            started.set()
            done.set()

    worker = threading.Thread(target=work, name="batch-scheduler-run", daemon=True)
    worker.start()
    try:
        with _interruptible():
            while not done.wait(0.2):  # a timed wait: the main thread stays interruptible (Ctrl-C, interrupt
                pass  # kernel); never Thread.join, whose state an interrupt can break (it then returns at once)
    except KeyboardInterrupt:
        started.wait()
        if "task" in outcome:
            outcome["loop"].call_soon_threadsafe(outcome["task"].cancel)
        done.wait()
        worker.join()
        raise
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def rerun(out: str | os.PathLike, where: Where = "status=errored|invalid", params: dict | None = None,
          **options: Any) -> JobResult:
    """Run the rows of the finished job in `out` that `where` picks (by their latest answer) again, as a new
    job in OUT.rerun-N with `out`'s options, `params` merged over its own, `options` over them all (e.g.
    response_model=, model=); `to_pandas(out)` then shows each row's latest answer (view/rerun.py)."""
    plan = plan_rerun(os.fspath(out), where, params)
    if not plan.rows:
        return JobResult(ExitCode.OK, f"no row of {os.fspath(out)} matches {where!r}: nothing to re-run")
    return run(plan.rows, plan.out, **{**plan.options, **options})


async def arerun(out: str | os.PathLike, where: Where = "status=errored|invalid", params: dict | None = None,
                 **options: Any) -> JobResult:
    """`rerun`, awaited in the caller's event loop."""
    plan = await asyncio.to_thread(plan_rerun, os.fspath(out), where, params)
    if not plan.rows:
        return JobResult(ExitCode.OK, f"no row of {os.fspath(out)} matches {where!r}: nothing to re-run")
    return await arun(plan.rows, plan.out, **{**plan.options, **options})


async def arun(inputs: Inputs, out: str | os.PathLike, **options: Any) -> JobResult:
    """`run`, awaited in the caller's event loop."""
    out_dir = os.fspath(out)
    model = options.pop("response_model", None)
    report, quiet = resolve(options.pop("progress", "auto"))
    flags = job_flags(options)
    env = load_environment()
    settings = build_settings(flags, env)
    if model is not None:  # its schema goes into every templated request's params
        if not settings.template:
            raise errors.UsageError("response_model= shapes templated rows: give template= too (a ready request "
                                    "carries its own output schema or tool; its answers' JSON is the `json` column)")
        flags["params"] = job_params(settings.params, model, settings.provider, settings.anthropic_version)
        settings = build_settings(flags, env)
    judged = Judged(Judge(model) if model is not None else None, report, quiet)
    paths = input_paths(inputs)
    make_sources(paths or [], settings)  # option problems (a template without max_tokens, ...) raise here
    if not settings.dry_run and not settings.api_key:
        raise errors.UsageError(missing_key_message(settings))
    if not settings.dry_run and (refused := unknown_model(settings)):
        raise errors.UsageError(refused)
    if paths is not None:
        return await _run_files(settings, flags, paths, out_dir, None, judged)
    # an iterable is written into OUT: the job's lock first, so a second caller on OUT writes nothing
    try:
        held = lock_dir(out_dir, OWNER, "out")
    except errors.JobBusy as err:  # the refusal a second `run` on a held --out gets
        return JobResult(ExitCode.USAGE, str(err), busy=True)
    rows = table_rows(inputs) if table_kind(inputs) is not None else inputs
    try:
        try:
            paths = [await asyncio.to_thread(spool_iterable, rows, out_dir)]  # type: ignore[arg-type]
        except errors.JobMismatch as err:
            return JobResult(ExitCode.USAGE, str(err))
        return await _run_files(settings, flags, paths, out_dir, held, judged)
    finally:
        held.release()  # the engine released it already when it ran (a second release does nothing)


class Judged(NamedTuple):
    """What the Python API adds to a run: the answers' judge (response_model=) and the progress reporter."""

    judge: Judge | None
    report: ProgressFn | None
    quiet: bool


async def _run_files(settings: Settings, flags: dict[str, Any], paths: list[str], out_dir: str,
                     held: JobLock | None, judged: Judged) -> JobResult:
    """The job over input files; `held`: OUT's lock, taken by the caller (the engine keeps it)."""
    if settings.dry_run:
        return await _dry_run(settings, paths, out_dir)
    remembered = {k: v for k, v in flags.items() if k in REMEMBERED}
    if judged.judge is not None:
        remember_model(out_dir, judged.judge.model)
    engine = Engine(settings, out_dir, paths, remembered=remembered, owner=OWNER,
                    store=HeldStore(out_dir, held) if held is not None else None, judge=judged.judge,
                    report=judged.report, quiet=judged.quiet)
    try:
        return accepted_something(await engine.run())
    except errors.UsageError:
        raise
    except errors.SchedulerError as err:  # what the CLI prints with exit 1 (an unreadable input, ...)
        return JobResult(ExitCode.FAILED, str(err))


def accepted_something(result: JobResult) -> JobResult:
    """A job that ended without accepting a single request is not `ok`: its input held none (an empty
    table, or every line rejected), which is never what the caller meant."""
    requests = result.summary.get("requests") or {}
    if result.exit_code != ExitCode.OK or requests.get("accepted", 1):
        return result
    rejected = requests.get("rejected") or 0
    why = f"all {rejected:,} were rejected (see rejected.jsonl)" if rejected else "the input holds none"
    return JobResult(ExitCode.FAILED, f"no request was accepted: {why}", result.summary)


class HeldStore(LocalStore):
    """OUT, whose lock the caller took before writing the iterable there: the job keeps that lock."""

    def __init__(self, out_dir: str, held: JobLock):
        super().__init__(out_dir)
        self._held = held

    def lock(self, owner: str) -> JobLock:
        return self._held


def job_flags(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options given (None: not given), by the option table's names; TypeError for any other."""
    unknown = sorted(set(options) - JOB_OPTION_NAMES - {"api_key"})
    if unknown:
        hints = {n: did_you_mean(n, {*JOB_OPTION_NAMES, *PYTHON_ONLY}).removeprefix("; ") for n in unknown}
        names = ", ".join(repr(n) + (f" ({hints[n]})" if hints[n] else "") for n in unknown)
        raise TypeError(f"run() got unexpected keyword argument{'s' if len(unknown) > 1 else ''} {names}: the options "
                        f"are the `run` command's long options with dashes as underscores (e.g. batch_size), "
                        f"and api_key")
    return {k: v for k, v in options.items() if v is not None}


def input_paths(inputs: Inputs) -> list[str] | None:
    """The input files of a path or a list of paths and globs; None for an iterable of dicts."""
    if isinstance(inputs, str | os.PathLike):
        return expand_inputs([os.fspath(inputs)])
    if table_kind(inputs) is not None:
        return None
    if (name := data_object_name(inputs)) is not None:
        raise TypeError(f"inputs: expected a table (a DataFrame, an Arrow table, a Dataset), a path, a list of "
                        f"paths, or an iterable of dicts, not {name}")
    if isinstance(inputs, bytes | Mapping):
        raise TypeError(f"inputs: expected a path, a list of paths, or an iterable of dicts, not a "
                        f"{type(inputs).__name__} (a single request goes in a list: [request])")
    if isinstance(inputs, list | tuple) and inputs and all(isinstance(i, str | os.PathLike) for i in inputs):
        return expand_inputs([os.fspath(i) for i in inputs])
    try:
        iter(inputs)
    except TypeError:
        raise TypeError(f"inputs: expected a path, a list of paths, or an iterable of dicts, not a "
                        f"{type(inputs).__name__}") from None
    return None


def spool_iterable(items: Iterable[Any], out_dir: str) -> str:
    """Write `items` to OUT/input.jsonl, one JSON line each, as they come; its path.

    A job already in OUT keeps its input.jsonl: the new items must be the same bytes (the job is resumed
    over them), or JobMismatch says so and nothing changes."""
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    path = os.path.join(out_dir, SPOOL)
    new = path + ".new"
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            for i, item in enumerate(items):
                try:
                    f.write(dumps_row(item) + b"\n")
                except TypeError as exc:
                    raise errors.UsageError(f"inputs item {i} cannot be written as JSON: {exc}") from None
            f.flush()
            os.fsync(f.fileno())
        if not os.path.exists(path) or not os.path.exists(os.path.join(out_dir, "ledger.db")):
            replace(new, path)
            return path
        if not same_bytes(path, new):
            raise errors.JobMismatch(f"{out_dir} holds a job over other requests: the iterable given yields "
                                     f"something else than the one the job started with ({path}); give that "
                                     f"one again to resume the job, or use another out")
    finally:
        if os.path.exists(new):
            os.unlink(new)
    return path


def same_bytes(a: str, b: str) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while block := fa.read(_COMPARE_BYTES):
            if block != fb.read(_COMPARE_BYTES):
                return False
    return True


async def _dry_run(settings: Settings, paths: list[str], out_dir: str) -> JobResult:
    """`dry_run=True`: what a run would send and may cost, as the summary (nothing is printed)."""
    prices = PriceTable.load(settings.prices_file)
    rejects = Rejects(rejects_path(out_dir), paths)
    try:
        est = await estimate(settings, paths, rejects)
    finally:
        rejects.close()
    models = {}
    for model, totals in est.by_model.items():
        cost = cost_range(prices, model, totals)
        models[model or "(no model)"] = {"requests": totals.requests, "input_tokens": totals.input_tokens,
                                         "max_output_tokens": totals.max_output_tokens,
                                         "cost_usd": None if cost is None else {"low": cost[0], "high": cost[1]}}
    summary = {"dry_run": True, "requests": est.requests, "batches": est.batches, "rejected": est.rejected,
               "input_tokens": est.input_tokens, "models": models}
    if settings.strict and est.rejected:
        return JobResult(ExitCode.USAGE, f"--strict: {est.rejected:,} bad line(s); a run would refuse the whole "
                                         f"job and submit nothing", summary)
    if not est.requests:
        return JobResult(ExitCode.FAILED, f"dry run: a run would send nothing ({nothing_to_send(est.rejected)})",
                         summary)
    return JobResult(ExitCode.OK, "dry run: nothing was submitted", summary)
