"""What is generated from the option table (core/options.py): README's option table and the typed option
fields of `Settings` (core/settings.py), each written between its markers.

    python -m batch_scheduler.core.option_docs --readme README.md            # make readme
    python -m batch_scheduler.core.option_docs --settings batch_scheduler/core/settings.py   # make settings
"""

from __future__ import annotations

import json
import re

from batch_scheduler.core.options import JOB_OPTIONS, _float, parse_size


def markdown_table() -> str:
    """The option table of README.md."""
    rows = ["| option | default | meaning |", "| --- | --- | --- |"]
    for o in JOB_OPTIONS:
        flag = o.flag
        if o.choices:
            flag += " {" + ",".join(o.choices) + "}"
        elif o.type is not bool:
            flag += f" {o.metavar or o.name.upper()}"
        default = o.default_text if o.default_text is not None else (
            "off" if o.type is bool else "" if o.default in (None, ()) else f"{o.default:,}"
            if isinstance(o.default, int) else f"{o.default:g}" if isinstance(o.default, float) else str(o.default))
        env = f" (env {', '.join('`' + e + '`' for e in o.env)})" if o.env else ""
        notes = [n for n, on in (("remembered", o.remembered), ("shapes batches", o.shapes),
                                 ("daemon-side", o.daemon_side)) if on]
        rows.append(f"| `{flag}` | {default}{env} | {o.help}{'; ' + ', '.join(notes) if notes else ''} |")
    return "\n".join(rows)


def settings_fields() -> str:
    """The option fields of `Settings` as source: one typed line each, in the table's order."""
    names = {bool: "bool", int: "int", str: "str", dict: "dict[str, Any]", _float: "float", parse_size: "int"}
    lines = []
    for o in JOB_OPTIONS:
        annotation = o.settings_type or names[o.type] + (" | None" if o.default is None else "")
        default = json.dumps(o.default) if isinstance(o.default, str) else (
            f"{o.default:_}" if type(o.default) is int else repr(o.default))
        flag = f"  # {o.flag}" if o.attr != o.name else ""
        lines.append(f"    {o.attr}: {annotation} = {default}{flag}")
    return "\n".join(lines)


def _rewrite(path: str, name: str, body: str) -> bool:
    """Put `body` between the lines of `path` that hold `NAME:start` and `NAME:end`; True if it changed."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = re.sub(rf"({name}:start[^\n]*\n).*?([^\n]*{name}:end)",
                 lambda m: m.group(1) + body + "\n" + m.group(2), text, flags=re.S)
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return new != text


def rewrite_readme(path: str) -> bool:
    """Put the current table between README's `<!-- options:start/end -->` markers; True if it changed."""
    return _rewrite(path, "options", markdown_table())


def rewrite_settings(path: str) -> bool:
    """Put the current fields between the `# settings:start/end` lines of core/settings.py; True if changed."""
    return _rewrite(path, "settings", settings_fields())


if __name__ == "__main__":  # pragma: no cover - `python -m batch_scheduler.core.option_docs [--readme|--settings FILE]`
    import sys
    if sys.argv[1:2] == ["--readme"]:
        print("README.md option table " + ("rewritten" if rewrite_readme(sys.argv[2]) else "up to date"))
    elif sys.argv[1:2] == ["--settings"]:
        print("Settings fields " + ("rewritten" if rewrite_settings(sys.argv[2]) else "up to date"))
    else:
        print(markdown_table())
