"""HTTP headers a user gives: `--header 'Name: value'`, and the SDKs' `*_CUSTOM_HEADERS` variables.

`ANTHROPIC_CUSTOM_HEADERS` (and OpenAI's `OPENAI_CUSTOM_HEADERS`) hold newline-separated
`Name: value` lines, read by the official SDKs; they are the twin of `--header`, and unlike it they
show in neither `ps` nor the ledger, so a header that carries a secret belongs there. A line
break inside a value would split one header into two (header injection): it is a usage error, as
is a name that is not an HTTP token. Header names are case-insensitive: `merge_headers` keeps one
entry per name, the later one winning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from batch_scheduler.core.errors import UsageError

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name


def check_header(name: str, value: str, where: str) -> tuple[str, str]:
    """(name, value) stripped, or a UsageError naming `where` (never echoing the value)."""
    name, value = name.strip(), value.strip()
    if not _TOKEN.fullmatch(name):
        raise UsageError(f"{where}: {name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)")
    if "\r" in value or "\n" in value:
        raise UsageError(f"{where}: the value of header {name} holds a line break (CR or LF)")
    return name, value


def parse_header(text: str) -> tuple[str, str]:
    """One `--header 'Name: value'`."""
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise UsageError(f"--header {text!r}: expected 'Name: value'")
    return check_header(name, value, "--header")


def parse_header_lines(text: str, variable: str) -> list[tuple[str, str]]:
    """Newline-separated `Name: value` lines (CRLF too; blank lines skipped), as the SDKs read them."""
    out = []
    for no, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"{variable} line {no}: expected 'Name: value'")
        out.append(check_header(name, value, f"{variable} line {no}"))
    return out


def merge_headers(*sources: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """One dict of headers from several sources, later ones winning, names compared without case."""
    merged: dict[str, str] = {}
    lower: dict[str, str] = {}  # lower-case name -> the spelling kept in `merged`
    for source in sources:
        pairs = source.items() if isinstance(source, Mapping) else source
        for name, value in pairs:
            old = lower.get(name.lower())
            if old is not None:
                del merged[old]
            lower[name.lower()] = name
            merged[name] = value
    return merged
