"""Where a cluster job may read and write on the node that runs it: object URLs (s3://, gs://, az://), or
paths under the roots the node was told to allow (`daemon --ledger URL --allow-root DIR`, repeatable;
none by default). A submitted job is untrusted: it must not make a node read, overwrite or delete
files the node can reach but its submitter should not (another run's output, the node's .env)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from batch_scheduler.core.errors import UsageError
from batch_scheduler.state.objects import is_object_url


def allowed_roots(dirs: Iterable[str]) -> tuple[str, ...]:
    """The node's --allow-root directories, resolved (links followed) as the paths they are compared with."""
    return tuple(os.path.realpath(d) for d in dirs)


def check_places(spec: Mapping[str, Any], roots: tuple[str, ...]) -> None:
    """UsageError naming the first input or output of the job that is neither an object URL nor under a root."""
    inputs = spec.get("inputs")
    out = spec.get("out")
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs) or not isinstance(out, str):
        raise UsageError("spec: expected inputs (a list of strings) and out (a string)")
    for what, place in [*(("input", i) for i in inputs), ("--out", out)]:
        if is_object_url(place) or _under(place, roots):
            continue
        allowed = ", ".join(roots) if roots else "none (the node has no --allow-root)"
        raise UsageError(f"{what} {place}: a cluster job reads and writes object URLs (s3://, gs://, az://) or "
                         f"paths under the node's --allow-root directories ({allowed})")


def _under(path: str, roots: tuple[str, ...]) -> bool:
    if not os.path.isabs(path):
        return False
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, root]) == root for root in roots)
