"""A chunk sent as several batches, so that each fits what the provider's queue should hold in one.

The input is cut at --batch-size / --batch-bytes, the same way on every run (a resumed run matches
its chunks to the ledger by number). A chunk that weighs more than a batch should (`queues.part_limit`:
about an eighth of what the queue holds, once that is known) is recorded as split into parts
(`Ledger.record_split`, as a 413's halves are), and each part goes as its own batch.

Parts of an input chunk cover whole ranges of its root chunk's lines, refused lines included (they
stay refused), so that every line of the root belongs to exactly one part.
"""

from __future__ import annotations

import math

SplitSpec = tuple[int, int, int, list[str]]  # (skip, take, nbytes, custom_ids): what record_split takes


def bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """[a, b) ranges cutting n items into `parts` runs of nearly equal length (none empty)."""
    parts = max(1, min(n, parts))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


def parts_needed(units: int, limit: int) -> int:
    return max(1, math.ceil(units / max(1, limit)))


def split_specs(ranges: list[tuple[int, int]], index: list[int], ids: list[str], nbytes: list[int], *,
                skip: int, take: int, from_input: bool) -> list[SplitSpec]:
    """record_split's specs for the parts `ranges` of a chunk's sent lines.

    index: each sent line's index in the root chunk (input chunks); nbytes: each part's body bytes.
    """
    specs: list[SplitSpec] = []
    end = skip + take
    for i, (a, b) in enumerate(ranges):
        if from_input:
            start = skip if i == 0 else index[a]
            stop = end if i == len(ranges) - 1 else index[b]
            specs.append((start, stop - start, nbytes[i], ids[a:b]))
        else:
            specs.append((0, b - a, nbytes[i], ids[a:b]))
    return specs
