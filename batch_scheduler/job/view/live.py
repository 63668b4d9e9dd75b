"""Progress where the user is: `progress=` of `run`/`arun` ("auto", False, or a callable).

    progress="auto"   in a notebook (an IPython kernel), a live bar in the cell's output: tqdm's notebook
                      widget (with ipywidgets), else tqdm's text bar, else a line updated in place;
                      anywhere else, what a run always did (the plain log line every few seconds)
    progress=False    nothing (not the log line either)
    progress=fn       fn(Progress) about once a second while the job runs, and once at its end
                      (`final=True`), from the thread the job runs on

`Progress` holds the counters the terminal bar draws (view/progress.py, unchanged): requests done of the
total (an estimate while the input is read), the ETA, the spend so far and what the same answers would cost
at standard prices, hence the saving. tqdm is the optional extra `notebook`, imported only here.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batch_scheduler.job.observe import JobStats
from batch_scheduler.job.view.progress import clock_text, money

EVERY_S = 1.0


@dataclass(frozen=True)
class Progress:
    done: int  # requests with a final answer (earlier runs' included)
    total: int | None  # accepted requests once the input is read, an estimate before (None: unknown yet)
    estimated: bool  # whether `total` is an estimate
    eta_s: float | None  # seconds until every request is done (None: nothing tells yet)
    spent_usd: float  # the job's spend so far, at batch prices
    standard_usd: float  # the same answers at standard prices
    saving_usd: float  # standard_usd - spent_usd
    final: bool = False  # the last report: the job's run ended (done or not)

    def text(self) -> str:
        total = "?" if self.total is None else f"{'~' if self.estimated else ''}{self.total:,}"
        eta = f", eta {clock_text(self.eta_s)}" if self.eta_s is not None else ""
        return (f"{self.done:,}/{total} requests{eta} | {money(self.spent_usd)} spent, "
                f"{money(self.saving_usd)} saved against standard prices")


ProgressFn = Callable[[Progress], None]


def progress_of(stats: JobStats, spent_usd: float, batch_discount: float, *, final: bool = False,
                now: float | None = None) -> Progress:
    total, estimated = stats.total()
    standard = spent_usd / batch_discount if batch_discount > 0 else spent_usd
    return Progress(stats.finished + stats.finished_before, total, estimated, None if final else stats.eta_s(now),
                    spent_usd, standard, standard - spent_usd, final)


async def report_progress(stats: JobStats, report: ProgressFn, spent: Callable[[], float], batch_discount: float,
                          every_s: float = EVERY_S) -> None:
    """Runs until cancelled: `report` every `every_s`; the final report is the caller's (`progress_of(final=True)`)."""
    while True:
        await asyncio.sleep(every_s)
        report(progress_of(stats, spent(), batch_discount))


def in_notebook() -> bool:
    """Whether this process is an IPython kernel (Jupyter, VS Code's notebooks), where a cell shows output."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def resolve(progress: Any) -> tuple[ProgressFn | None, bool]:
    """(the reporter, quiet) for a `progress=` value; TypeError for anything else."""
    if progress is False:
        return None, True
    if progress is None or progress == "auto":
        return (NotebookBar() if in_notebook() else None), False
    if callable(progress):
        return progress, False
    raise TypeError(f"progress= must be \"auto\", False or a callable taking a Progress, not {progress!r}"[:200])


def _tqdm_bar() -> Any:
    """tqdm's notebook widget (where ipywidgets is installed), else its text bar on the cell's stdout."""
    options = dict(total=None, unit="req", desc="batch-scheduler")
    try:
        import ipywidgets  # noqa: F401 - tqdm's widget needs it (without it, it fails once made)
        from tqdm.notebook import tqdm as widget
    except ImportError:
        from tqdm import tqdm as text
        return text(file=sys.stdout, ncols=100, **options)
    return widget(**options)


class NotebookBar:
    """A live bar in the notebook cell that runs the job (see the module docstring), drawn at the first
    report: a job refused before it starts shows none."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._handle: Any = None

    def _draw(self, p: Progress) -> None:
        try:
            self._bar = _tqdm_bar()
        except ImportError:  # no tqdm: a line of text, updated in place
            from IPython.display import display
            self._handle = display(p.text(), display_id=True)

    def __call__(self, p: Progress) -> None:
        if self._bar is None and self._handle is None:
            self._draw(p)
        if self._bar is None:
            self._handle.update(p.text())
            return
        bar = self._bar
        if p.total is not None and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        eta = f"eta {clock_text(p.eta_s)} | " if p.eta_s is not None else ""
        bar.set_postfix_str(f"{eta}{money(p.spent_usd)} spent, {money(p.saving_usd)} saved", refresh=False)
        bar.refresh()
        if p.final:
            bar.close()
