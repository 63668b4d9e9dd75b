"""Re-run a chosen subset of a finished job, and read the pair back as one table.

    rerun(out, where="status=errored|invalid|max_tokens", params={...})   (the Python API, job/api.py)
    batch-scheduler rerun DIR --where 'status=errored|invalid' [--params FILE]

A rerun is a job of its own in `DIR.rerun-N` (the next free N), over the rows of DIR whose latest
answer `where` picks, with DIR's options (its template, model, provider, ...) and `params` merged over
DIR's. Each row keeps its custom_id (in the row field `ID_FIELD`, or DIR's own `--id-field`), so
`to_pandas(DIR)` follows DIR's reruns in order and shows each row's latest answer (`follow`), its
attempts the sum of them all. A job of ready requests (no template) has no rows to re-run.

`where`: `KEY=V1|V2` conditions joined by `,` (all must hold), on the result columns (`status`,
`stop_reason`, `model`, ...); a `status` condition also matches the stop reason, so `status=max_tokens`
(or `length`) picks a cut answer. Or a callable given each row's columns as a dict.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from batch_scheduler.core.errors import UsageError
from batch_scheduler.job.view.export import RESULT_COLUMNS, Columns, rejected_reason
from batch_scheduler.job.view.results import JobView, ResultIndex, in_input_order
from batch_scheduler.state.ledger import open_ledger

ID_FIELD = "_custom_id"  # the row field holding a rerun row's custom_id (unless the job had --id-field)
_CID, _ATTEMPTS = RESULT_COLUMNS.index("custom_id"), RESULT_COLUMNS.index("attempts")
Where = str | Callable[[dict], bool]


def reruns_of(out_dir: str) -> list[str]:
    """DIR.rerun-1, DIR.rerun-2, ... that hold a job, in order (up to the first that does not)."""
    found, n = [], 1
    while os.path.exists(os.path.join(rerun_dir(out_dir, n), "ledger.db")):
        found.append(rerun_dir(out_dir, n))
        n += 1
    return found


def rerun_dir(out_dir: str, n: int) -> str:
    return f"{os.path.normpath(out_dir)}.rerun-{n}"


def parse_where(where: Where) -> Callable[[dict], bool]:
    """A row test from `where` (see the module docstring); UsageError for a condition it cannot read."""
    if callable(where):
        return where
    if not isinstance(where, str) or not where.strip():
        raise UsageError(f"--where: expected KEY=V1|V2[,KEY=V], e.g. status=errored|invalid, not {where!r}")
    tests: list[tuple[str, frozenset[str]]] = []
    for part in where.split(","):
        key, eq, values = part.partition("=")
        key = key.strip()
        if not eq or key not in RESULT_COLUMNS or not values.strip():
            raise UsageError(f"--where {part.strip()!r}: expected KEY=V1|V2 with KEY one of the result columns "
                             f"({', '.join(RESULT_COLUMNS)})")
        tests.append((key, frozenset(v.strip() for v in values.split("|"))))

    def test(row: dict) -> bool:
        for key, wanted in tests:
            seen = {str(row.get(key))} | ({str(row.get("stop_reason"))} if key == "status" else set())
            if not seen & wanted:
                return False
        return True
    return test


class Latest:
    """Each row's latest answer across DIR's reruns: their result indexes, newest first."""

    def __init__(self, out_dir: str):
        self._views = [JobView.open(d) for d in reversed(reruns_of(out_dir))]
        self._indexes = [ResultIndex(v) for v in self._views]
        self._columns = [Columns(v) for v in self._views]

    def __bool__(self) -> bool:
        return bool(self._views)

    def answer(self, values: list[Any], n_row: int) -> list[Any]:
        """A row's values (its own columns, then RESULT_COLUMNS) with the newest rerun's answer, if any."""
        cid = values[n_row + _CID] if len(values) > n_row else None
        if cid is None:
            return values
        for index, columns in zip(self._indexes, self._columns, strict=True):
            found = index.get(cid)
            if found is not None:
                result = columns.of_result(*found)
                result[_ATTEMPTS] += values[n_row + _ATTEMPTS] or 0
                return values[:n_row] + result
        return values

    def close(self) -> None:
        for index in self._indexes:
            index.close()


def follow(out_dir: str, rows: Iterator[tuple[str, list]], n_row: int) -> Iterator[tuple[str, list]]:
    """`export.table_of`'s rows of DIR with each row's latest answer from DIR's reruns."""
    latest = Latest(out_dir)
    try:
        for kind, values in rows:
            newer = latest.answer(values, n_row)
            yield (kind if newer is values else "result"), newer
    finally:
        latest.close()


@dataclass
class Plan:
    """A rerun to make: its directory, its rows (each with its custom_id) and its options."""

    out: str
    rows: list[dict]
    options: dict[str, Any]


def plan_rerun(out_dir: str, where: Where, params: dict | None = None) -> Plan:
    """What `rerun` sends: the rows of DIR `where` picks by their latest answer, and DIR's options."""
    test = parse_where(where)
    view = JobView.open(out_dir)
    if not view.settings.template:
        raise UsageError(f"{out_dir}: a job of ready requests has no rows to re-run (rerun takes a job of rows "
                         f"and a template); pick its lines from read_results() and run them as a new job")
    id_field = view.settings.id_field or ID_FIELD
    columns, latest, rows = Columns(view), Latest(out_dir), []
    try:
        with ResultIndex(view) as index:
            for entry, found in in_input_order(view, index):
                if entry.row is None or entry.cid is None:
                    continue
                if found is not None:
                    result = columns.of_result(*found)
                elif (why := rejected_reason(view, entry)) is not None:
                    result = Columns.of_rejected(entry.cid, *why)
                else:
                    continue  # no final answer yet
                result = latest.answer(result, 0)
                if test({**entry.row, **dict(zip(RESULT_COLUMNS, result, strict=True))}):
                    rows.append({**entry.row, id_field: entry.cid})
    finally:
        latest.close()
    return Plan(rerun_dir(out_dir, len(reruns_of(out_dir)) + 1), rows, _options(out_dir, id_field, params))


def _options(out_dir: str, id_field: str, params: dict | None) -> dict[str, Any]:
    ledger = open_ledger(os.path.join(out_dir, "ledger.db"), readonly=True)
    try:
        meta = ledger.read_meta()
    finally:
        ledger.close()
    options = {k: v for k, v in meta.get("flags", {}).items() if k != "header"}  # header values are not kept
    options.update({k: v for k, v in meta.get("shaping", {}).items() if v is not None})
    options["id_field"] = id_field
    if params:
        options["params"] = {**(options.get("params") or {}), **params}
    return options
