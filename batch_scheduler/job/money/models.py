"""Costly typos caught before anything is sent: a model name no price table knows, an option misspelt.

`unknown_model(settings)` says why a job's `--model` is refused (with the closest known names), or
None; `--allow-unknown-model` sends it anyway (a proxy's own model, one newer than the price table).
`did_you_mean(word, names)` is the suffix the CLI and the library add to an unknown option's message.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from batch_scheduler.core.settings import Settings
from batch_scheduler.job.money.pricing import PriceTable


def did_you_mean(word: str, names: Iterable[str], quote: str = "'") -> str:
    """'; did you mean 'batch_size'?' (up to three close names), or '' when none is close."""
    close = difflib.get_close_matches(word, sorted(set(names)), n=3, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(f"{quote}{name}{quote}" for name in close) + "?"


def unknown_model(settings: Settings, prices: PriceTable | None = None) -> str | None:
    """Why `settings.model` is refused (no price table knows it), or None when it is known or allowed."""
    model = settings.model
    if not model or settings.allow_unknown_model:
        return None
    prices = prices or PriceTable.load(settings.prices_file)
    if prices.price(model) is not None:
        return None
    hint = did_you_mean(model, prices.models) or "."
    return (f"--model {model!r}: no price table knows this model{hint} Give --allow-unknown-model to send it "
            f"anyway (or its price with --prices FILE); nothing was sent")
