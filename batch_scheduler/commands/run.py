"""`batch-scheduler run INPUT... --out DIR` and `resume DIR`: one job, until its input is done."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

import orjson

from batch_scheduler.core import errors
from batch_scheduler.core.errors import ExitCode
from batch_scheduler.core.loop import run_loop
from batch_scheduler.core.options import REMEMBERED, flags_of, unkept_headers
from batch_scheduler.core.settings import Settings, load_environment
from batch_scheduler.job.dryrun import dry_run
from batch_scheduler.job.engine import Engine, JobResult
from batch_scheduler.job.input.reader import expand_inputs
from batch_scheduler.job.money.models import unknown_model
from batch_scheduler.providers import build_settings, missing_key_message, spec_of
from batch_scheduler.state.jobdir import results_here, unknown_results
from batch_scheduler.state.ledger import open_ledger
from batch_scheduler.state.objects import is_object_url
from batch_scheduler.state.stores import BucketRunStore, state_dir_for

RESUME_OVERRIDES = ("retry_cancelled", "concurrency", "base_url", "header")  # what `resume DIR` may change


def ledger_flags(job_dir: str, meta_flags: dict[str, Any], given: dict[str, Any], env: dict[str, str], *,
                 trust_url: bool) -> dict[str, Any]:
    """The options a job was started with, as `resume DIR` and `cancel DIR` use them: the ledger's, `given`
    on top. The ledger is a file, not an instruction: its base URL is used only when it is where the key is
    configured to go (the environment, or the provider's public API), when `--base-url` says so, or when
    the user passes `--trust-ledger-url`; otherwise UsageError, and nothing is sent anywhere."""
    flags = {**meta_flags, **given}
    unkept = unkept_headers(meta_flags) if "header" not in given else []
    if unkept:
        raise errors.UsageError(f"{job_dir} was run with the header(s) {', '.join(unkept)}, whose values the ledger "
                                f"does not keep: give them again, e.g. --header '{unkept[0]}: VALUE'")
    url = meta_flags.get("base_url")
    if url and "base_url" not in given and not trust_url:
        configured = build_settings({"provider": flags.get("provider")}, env)
        if str(url).rstrip("/") != configured.base_url:
            where = spec_of(configured.provider).base_url_env[0]
            raise errors.UsageError(
                f"{job_dir} was run against {url}, but the key is configured for {configured.base_url}; it is "
                f"only sent where it is configured to go. If {url} is right, set {where} to it, give "
                f"--base-url {url}, or add --trust-ledger-url")
    return flags

log = logging.getLogger("batch_scheduler.run")


def job_settings(args: argparse.Namespace, env: dict[str, str]) -> tuple[Settings, str, list[str]]:
    """Settings, output dir and inputs for run / resume (resume reads them back from the ledger)."""
    if args.command == "resume":
        path = os.path.join(args.dir, "ledger.db")
        here = results_here(args.dir)
        if not os.path.exists(path) or os.path.getsize(path) == 0:
            raise errors.UsageError(unknown_results(args.dir, here) if here else f"{args.dir}: no job here "
                                    f"(no ledger.db)")
        ledger = open_ledger(path, readonly=True)
        try:
            meta = ledger.read_meta()
        finally:
            ledger.close()
        if not meta.get("inputs"):
            raise errors.UsageError(unknown_results(args.dir, here) if here else f"{args.dir}: its ledger.db knows "
                                    f"no job")
        given = {k: v for k, v in flags_of(args).items() if k in RESUME_OVERRIDES}
        flags = ledger_flags(args.dir, dict(meta.get("flags", {})), given, env, trust_url=args.trust_ledger_url)
        inputs = [p["path"] for p in meta["inputs"]]
        out = args.dir
    else:
        flags = flags_of(args)
        inputs = [p for given in args.inputs for p in ([given] if is_object_url(given) else expand_inputs([given]))]
        out = args.out
    flags["progress"] = sys.stderr.isatty()
    flags["verbose"] = args.verbose
    settings = build_settings(flags, env)
    return settings, out, inputs


def main(args: argparse.Namespace) -> int:
    env = load_environment()
    settings, out, inputs = job_settings(args, env)
    store = None
    if is_object_url(out):
        store = BucketRunStore(out, state_dir_for(out, env))
    try:  # an OUT in a bucket: results there, the ledger on this machine (docs/cluster.md)
        return _run(args, settings, out, inputs, store)
    finally:
        if store is not None:
            store.cleanup()


def _run(args: argparse.Namespace, settings: Settings, out: str, inputs: list[str],
         store: Any) -> int:
    if settings.dry_run:
        return run_loop(dry_run(settings, inputs, store.state_dir if store else out))
    if not settings.api_key:
        raise errors.UsageError(missing_key_message(settings))
    if refused := unknown_model(settings):
        raise errors.UsageError(refused)
    remembered = {k: v for k, v in flags_of(args).items() if k in REMEMBERED} if args.command == "run" else {}
    metrics_file = getattr(args, "metrics_file", None)
    metrics = None
    if metrics_file:
        from batch_scheduler.daemon.metrics import Metrics  # prometheus_client: only for --metrics-file
        metrics = Metrics()
    if metrics_file:
        check_writable_dir(metrics_file)
    engine = Engine(settings, out, inputs, progress_tty=settings.progress, remembered=remembered, observer=metrics,
                    owner=f"batch-scheduler {args.command}", store=store)
    started = time.time()
    outcome = run_loop(until_signalled(engine))
    if isinstance(outcome, signal.Signals):
        code = STOPPED_BY[outcome]
        outcome = JobResult(code, f"stopped by {outcome.name} (exit {int(code)}); nothing is lost: run the same "
                                  f"command again to resume", read_summary(store.state_dir if store else out))
    print_outcome(outcome, json_lines=getattr(args, "log_json", False))
    if metrics is not None and metrics_file:
        try:
            from batch_scheduler.daemon.metrics import run_view
            metrics.write_textfile(metrics_file, run_view(engine, outcome, started))
        except OSError as err:  # the job's work is safe; say why the file is missing
            print(f"batch-scheduler: --metrics-file {metrics_file}: cannot write: {err.strerror or err}",
                  file=sys.stderr)
    return outcome.exit_code


STOPPED_BY = {signal.SIGHUP: ExitCode.HANGUP, signal.SIGINT: ExitCode.INTERRUPTED, signal.SIGTERM: ExitCode.TERMINATED}


async def until_signalled(engine: Engine) -> JobResult | signal.Signals:
    """The engine's run. SIGINT, SIGTERM and SIGHUP each stop it as Ctrl-C does (the engine keeps everything
    and writes the summary): the signal comes back in place of a result. A second signal is ignored."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    got: list[signal.Signals] = []

    def stop(sig: signal.Signals) -> None:
        if not got:
            got.append(sig)
            task.cancel()
    for sig in STOPPED_BY:
        loop.add_signal_handler(sig, stop, sig)
    try:
        return await engine.run()
    except asyncio.CancelledError:
        if not got:
            raise
        task.uncancel()
        return got[0]
    finally:
        for sig in STOPPED_BY:
            loop.remove_signal_handler(sig)


def read_summary(out: str) -> dict[str, Any]:
    try:
        with open(os.path.join(out, "summary.json"), "rb") as f:
            doc = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def check_writable_dir(path: str) -> None:
    """Refuse at once a --metrics-file that could not be written at the end of a long run."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise errors.UsageError(f"--metrics-file {path}: no directory {folder}")
    if not os.access(folder, os.W_OK):
        raise errors.UsageError(f"--metrics-file {path}: the directory {folder} is not writable")


def outcome_line(result: JobResult) -> str | None:
    """The counts of a run in one line; None for a run refused before it ran (its reason says it all)."""
    s = result.summary
    if not s:
        return None
    req = s.get("requests", {})
    res = s.get("results", {})
    again = int(s.get("attempts", {}).get("requests_retried", 0)) + int(req.get("missing_from_results", 0))
    return (f"{req.get('finished', 0):,} of {req.get('accepted', 0):,} requests finished "
            f"({res.get('succeeded', 0):,} succeeded, {res.get('errored', 0):,} errored, "
            f"{res.get('expired', 0):,} expired), {req.get('rejected', 0):,} rejected; "
            f"{s.get('throughput_rps') or 0:,.0f} req/s; cost ${s.get('cost_usd', 0):,.4f}"
            + (f"; {again:,} sent again (transient answers, missing from results)" if again else ""))


def print_outcome(result: JobResult, *, json_lines: bool = False) -> None:
    """The run's outcome on stderr: two plain lines, or with --log-json one log record (nothing else on
    stderr is then not JSON)."""
    if json_lines:
        s = result.summary
        if result.exit_code == ExitCode.USAGE:
            log.error("%s", result.message, extra={"exit_code": int(result.exit_code)})
            return
        level = logging.INFO if result.exit_code == ExitCode.OK else logging.ERROR
        log.log(level, "%s%s", outcome_line(result) or result.message,
                "" if result.exit_code == ExitCode.OK or not s else f"; {result.message}",
                extra={"state": s.get("state"), "exit_code": int(result.exit_code), "requests": s.get("requests", {}),
                       "results": s.get("results", {}), "cost_usd": s.get("cost_usd")})
        return
    if result.exit_code == ExitCode.USAGE:  # refused before anything was sent: no counts worth a line
        print(f"batch-scheduler: {result.message}", file=sys.stderr)
        return
    line = outcome_line(result)
    if line is not None:
        print(line, file=sys.stderr)
    if result.exit_code != ExitCode.OK or line is None:
        print(f"batch-scheduler: {result.message}", file=sys.stderr)
