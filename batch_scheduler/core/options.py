"""Every job option, declared once.

`JOB_OPTIONS` is the one table of what a job can be told: its flag, type, default, environment
variables, help, whether the ledger remembers it (so `resume DIR` needs no flags) and whether it
shapes batches (a different value under an existing `--out` is refused). From it come:
- the argparse options of `run`, `resume` and `daemon` (`add_job_options`);
- the remembered set (`REMEMBERED`) and the batch-shaping set (`SHAPING`);
- the keys a job may set wherever it comes from (a daemon's `NAME.options.json`, `submit`, a spec a
  cluster node claims), with their types checked (`job_options`, the one trust rule): what shapes a
  job's batches and prompts, never what decides where the daemon's key goes or which files it reads
  (`daemon_side`: provider, base URL, auth, headers, version, paths, prices, polling);
- the option table in README.md (`markdown_table`; `python -m batch_scheduler.core.options` prints it);
- the typed fields of `Settings` (`settings_fields`), committed as source in core/settings.py so a type
  checker reads them (`python -m batch_scheduler.core.options --settings FILE`, `make settings`).

Adding a job option is one entry here and `make settings readme`; the new value reaches the job as
`settings.<field>` with no other change (a test fails while the committed fields differ from the table).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from batch_scheduler.core.errors import UsageError


@dataclass(frozen=True)
class Option:
    name: str  # argparse dest, snake_case; the flag is --name-with-dashes
    type: Callable[[Any], Any]  # str, int, float, bool (a switch), list (repeatable str), dict (JSON object)
    default: Any  # the value when nothing sets it (None: unset)
    help: str
    group: str
    field: str = ""  # the Settings attribute (default: the same as name)
    env: tuple[str, ...] = ()  # environment variables read when the flag is absent, first set wins
    remembered: bool = True  # kept in the ledger: `resume DIR` runs with it
    shapes: bool = False  # decides how input is cut into batches or what a request says
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None  # smallest accepted value (numbers)
    maximum: float | None = None
    default_text: str | None = None  # the default as README says it, when `default` alone would mislead
    in_option_file: bool = True  # a known key of a daemon's NAME.options.json (else "unknown option")
    daemon_side: bool = False  # where the key goes, which files are read, how hard the key is used: only the
    #                            daemon's command line and environment set it, never a dropped options file
    settings_type: str = ""  # the Settings field's annotation, when `type` and `default` do not say it
    # a shaping option newer than a job's ledger: what that job ran with before the option existed (a job
    # resumed after an upgrade keeps cutting as it did); the default when it is None
    before_it_existed: Any = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def attr(self) -> str:
        return self.field or self.name


_MB = 1_000_000


def _float(text: str) -> float:
    """A finite number: `nan` and `inf` are refused (they hang a poll loop or a timeout)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


_float.__name__ = "finite number"  # argparse: "invalid finite number value: 'nan'"


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": _MB, "mb": _MB, "mib": 1 << 20,
          "g": 1000 * _MB, "gb": 1000 * _MB, "gib": 1 << 30}


def parse_size(text: str | int) -> int:
    """'200MB', '256 MiB', '1048576' -> bytes."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(text)
    unit = (m.group(2) or "").lower() if m else None
    if not m or unit not in _UNITS:
        raise UsageError(f"cannot read size {text!r}: use a number of bytes or e.g. 200MB, 256MiB")
    return int(float(m.group(1)) * _UNITS[unit])


PROVIDER, BATCHING, INPUT, COST, LANES = "provider", "batching", "input", "cost", "realtime and deadlines"

JOB_OPTIONS: tuple[Option, ...] = (
    # -- provider -------------------------------------------------------------------------------
    Option("provider", str, "anthropic", "which batch API", PROVIDER, env=("BATCH_PROVIDER",), shapes=True,
           choices=("anthropic", "openai", "inline", "bedrock", "azure", "gemini", "vertex", "groq", "together",
                    "mistral", "xai"),
           daemon_side=True),
    Option("base_url", str, "https://api.anthropic.com", "where the API is", PROVIDER, metavar="URL",
           daemon_side=True, default_text="`ANTHROPIC_BASE_URL`, `CLAUDE_BASE_URL` (`OPENAI_BASE_URL` for openai), else the public API"),
    Option("auth", str, "x-api-key", "how the key is sent; proxies often want bearer", PROVIDER,
           choices=("x-api-key", "bearer"), default_text="x-api-key (bearer for openai and inline)",
           daemon_side=True),
    Option("header", list, (), "extra header, repeatable (e.g. `Bypass-Middleware: true`); beats the same "
           "header from the environment. A secret header belongs in the variable: a flag shows in `ps`; values are never "
           "kept in the ledger (resume and cancel take --header again)", PROVIDER, field="headers", metavar="'Name: value'",
           default_text="`ANTHROPIC_CUSTOM_HEADERS` lines (`OPENAI_CUSTOM_HEADERS` for openai)", daemon_side=True,
           settings_type="tuple[tuple[str, str], ...]"),  # (name, value) pairs, the environment's first
    Option("anthropic_version", str, "2026-10-21", "the `anthropic-version` header (what anthropic 2.15 sends); "
           "lines this version would refuse are rejected locally; a job keeps the version it started with",
           PROVIDER, metavar="V", env=("ANTHROPIC_VERSION",), daemon_side=True),
    Option("model", str, None, "fills the model where a request has none", PROVIDER, shapes=True, metavar="M",
           default_text="`CLAUDE_MODEL`"),
    Option("http_timeout", _float, 300.0, "read timeout per call, seconds", PROVIDER, field="http_timeout_s",
           metavar="S", minimum=0.001, daemon_side=True),
    Option("inline_create_path", str, "/v1/batches", "inline proxy: create path", PROVIDER, metavar="PATH",
           env=("INLINE_CREATE_PATH",), daemon_side=True),
    Option("inline_status_path", str, "/v1/batches/{id}", "inline proxy: status path", PROVIDER, metavar="PATH",
           env=("INLINE_STATUS_PATH",), daemon_side=True),
    Option("inline_results_path", str, "/v1/batches/{id}/results", "inline proxy: results path", PROVIDER, metavar="PATH",
           env=("INLINE_RESULTS_PATH",), daemon_side=True),
    Option("role_arn", str, None, "bedrock: the IAM service role Bedrock assumes to read and write --staging",
           PROVIDER, metavar="ARN", env=("BEDROCK_ROLE_ARN",), daemon_side=True),
    # bedrock and vertex: where each batch's records go in and results come out (providers/bedrock.py, vertex.py)
    Option("staging", str, None, "bedrock: `s3://bucket/prefix`, vertex: `gs://bucket/prefix`, where records go in "
           "and results come out", PROVIDER, metavar="URL", env=("BATCH_STAGING", "BEDROCK_STAGING"), daemon_side=True),
    Option("keep_staged", bool, False, "bedrock, vertex: keep a batch's staged input and output once collected",
           PROVIDER, env=("BATCH_KEEP_STAGED", "BEDROCK_KEEP_STAGED"), daemon_side=True),
    # vertex: where the jobs run (providers/vertex.py)
    Option("project", str, None, "vertex: the Google Cloud project", PROVIDER, metavar="P",
           env=("GOOGLE_CLOUD_PROJECT",), daemon_side=True,
           default_text="`GOOGLE_CLOUD_PROJECT`, else the credentials' project (the file's, or the metadata server's)"),
    Option("location", str, None, "vertex: the region of the jobs (`global` for the global endpoint)", PROVIDER,
           metavar="L", env=("GOOGLE_CLOUD_LOCATION",), daemon_side=True, default_text="`GOOGLE_CLOUD_LOCATION`, else us-central1"),
    Option("storage_url", str, None, "vertex: where Cloud Storage's JSON API is", PROVIDER, metavar="URL",
           env=("STORAGE_EMULATOR_HOST",), daemon_side=True, default_text="https://storage.googleapis.com"),
    # -- batching -------------------------------------------------------------------------------
    Option("batch_size", int, 10_000, "requests per batch", BATCHING, shapes=True, metavar="N", minimum=1,
           default_text="the provider's (10,000; openai 50,000; inline 5,000)"),
    Option("batch_bytes", parse_size, 200 * _MB, "body bytes per batch; a batch closes at whichever limit comes first",
           BATCHING, shapes=True, metavar="SIZE", default_text="200MB (max 256MB; openai 200MB)"),
    Option("concurrency", int, 128, "most batches open at once (an upper bound; the provider's queue limit is "
           "what normally paces a run)", BATCHING, metavar="K", minimum=1),
    Option("max_queued_requests", int, None, "hard cap on requests waiting in the provider's queue (anthropic, "
           "inline); unset, the limit is learned from queue-full answers", BATCHING, metavar="N", minimum=1,
           default_text="learned, from 200,000 (at most 500,000)", daemon_side=True),
    Option("max_enqueued_tokens", int, None, "hard cap on estimated input tokens enqueued per model (openai); "
           "unset, the limit is learned from token-limit failures", BATCHING, metavar="N", minimum=1,
           default_text="learned, from 2,000,000 (at most 15,000,000,000)", daemon_side=True),
    Option("poll_min", _float, 5.0, "first poll interval of a batch, seconds; backs off 1.5x with jitter",
           BATCHING, field="poll_min_s", metavar="S", minimum=0.001, daemon_side=True),
    Option("poll_max", _float, 60.0, "longest poll interval, seconds", BATCHING, field="poll_max_s",
           metavar="S", minimum=0.001, daemon_side=True),
    Option("shards", int, 16, "result shard files", BATCHING, shapes=True, metavar="S", minimum=1, maximum=4096),
    Option("max_attempts", int, 3, "attempts per request whose transient answers were billed (they report usage)",
           BATCHING, metavar="N", minimum=1),
    Option("max_unbilled_attempts", int, 8, "attempts per request while its answers were not billed (transient "
           "errors, expired, timed out, missing from the results); never fewer than --max-attempts", BATCHING,
           metavar="N", minimum=1),
    Option("retry_wait", _float, 10.0, "seconds a request waits after a transient answer before it is sent "
           "again; doubles with each attempt, up to 10 minutes", BATCHING, field="retry_wait_s", metavar="S",
           minimum=0),
    Option("not_found_grace", _float, 300.0, "seconds a batch this job created may answer 404 (retrieve or "
           "results) since its create or its last answer before the run stops, resumable", BATCHING,
           field="not_found_grace_s", metavar="S", minimum=0),
    # -- input ----------------------------------------------------------------------------------
    Option("strict", bool, False, "refuse the whole job, submitting nothing, if any line is bad", INPUT,
           remembered=False),
    Option("template", str, None, "prompt template (a string, or a path to a file) with {field} "
           "placeholders: rows (CSV with a header, or JSONL objects) instead of ready requests", INPUT,
           shapes=True, metavar="T"),
    Option("system", str, None, "system prompt for templated rows", INPUT, shapes=True, metavar="S"),
    Option("max_tokens", int, None, "max_tokens for templated rows", INPUT, shapes=True, metavar="N", minimum=1),
    Option("id_field", str, None, "row field that holds the custom_id (templated rows)", INPUT, shapes=True,
           metavar="F"),
    Option("params", dict, None, "fields merged into every templated request's params (a JSON object, or a file "
           "holding one: temperature, stop sequences, tools, tool_choice, an output schema, metadata, thinking, "
           "...); checked before anything is sent", INPUT, shapes=True, metavar="FILE.json"),
    Option("cache_system", bool, False, "send --system as a block with cache_control, so the requests of a batch "
           "share one cached prompt (anthropic, inline)", INPUT, shapes=True),
    Option("model_field", str, None, "row field naming that row's model (empty: --model); OpenAI batches each "
           "model apart", INPUT, shapes=True, metavar="COL"),
    Option("params_field", str, None, "row field holding a JSON object merged into that row's params, over "
           "--params", INPUT, shapes=True, metavar="COL"),
    # -- cost -----------------------------------------------------------------------------------
    Option("dry_run", bool, False, "validate everything, print requests, batches, tokens and a cost range; "
           "submit nothing", COST, remembered=False, in_option_file=False),
    Option("max_cost", _float, None, "submit no new batch once spend + in-flight estimates would pass it; "
           "the job stops resumable", COST, field="max_cost_usd", metavar="USD", minimum=0),
    Option("prices", str, None, "price table overriding the shipped one (same shape as "
           "`batch_scheduler/data/prices.json`)", COST, field="prices_file", env=("BATCH_PRICES_FILE",),
           metavar="FILE", default_text="shipped table", daemon_side=True),
    Option("count_sample", int, 20, "requests counted exactly (Anthropic's free count_tokens when a key is set, "
           "tiktoken for openai) to measure the token estimate, by --dry-run and by a run under --max-cost; 0: "
           "the heuristic alone", COST, metavar="N", minimum=0, maximum=1000),
    Option("retry_cancelled", bool, False, "send requests of a cancelled job again", COST, remembered=False),
    # -- realtime and deadlines (job.send.route, job.send.realtime) -----------------------------
    Option("mode", str, "batch", "how requests go: by batch (the deadline may send some realtime), or every one "
           "through the provider's realtime endpoint (Messages, Chat Completions; any OpenAI-compatible server "
           "with --provider openai --base-url)", LANES, choices=("batch", "realtime")),
    Option("finish_by", str, None, "a deadline: a duration from the start (90m, 2h), a UTC clock time (06:00) or "
           "an ISO date-time; a request whose next batch round trip (as observed in this job) would end after "
           "it goes realtime, within --max-cost (without one, realtime costs at most the full price, 2x batch)",
           LANES, metavar="WHEN", remembered=False),
    Option("at_deadline", str, "wait", "what happens to batches still out at the deadline: wait for them, or "
           "cancel them (realtime: and send what they did not answer realtime)", LANES,
           choices=("wait", "cancel", "realtime")),
    Option("window", list, (), "send realtime only inside these UTC hours, repeatable (HH:MM-HH:MM; may span "
           "midnight); outside them the job pauses", LANES, metavar="HH:MM-HH:MM", settings_type="tuple[str, ...]"),
    Option("realtime_concurrency", int, 8, "realtime calls at once at most (the provider's rate-limit headers "
           "and 429s pace them further)", LANES, metavar="N", minimum=1, maximum=1024),
    # -- tables and answers (issue 25) ----------------------------------------------------------
    Option("allow_unknown_model", bool, False, "send a --model no price table knows (a proxy's own, one newer "
           "than the table); without it such a job is refused before anything is sent, with the closest names",
           COST),
    # -- prompt caches (job.input.prefix, job.send.prime) -------------------------------------------
    Option("prime_via", str, "realtime", "with cached prompts (--cache-system, or requests carrying "
           "cache_control): one request per distinct cached prefix goes first, alone, with a 1-hour cache "
           "write, and the rest of that prefix (kept together in batches) waits for it and reads its cache; "
           "realtime (batch where the provider has no realtime endpoint), a one-request batch, or off", LANES,
           shapes=True, choices=("realtime", "batch", "off"), before_it_existed="off"),
    Option("retry_invalid", int, 0, "answers whose JSON does not fit the Python API's response_model= are sent "
           "again up to N times (each a new attempt, billed); past them the row's status is `invalid`, the "
           "validation error its `error`", INPUT, metavar="N", minimum=0, maximum=10, in_option_file=False),
)

BY_NAME: dict[str, Option] = {o.name: o for o in JOB_OPTIONS}
JOB_OPTION_NAMES = frozenset(BY_NAME)
REMEMBERED = frozenset(o.name for o in JOB_OPTIONS if o.remembered)
SHAPING = frozenset(o.name for o in JOB_OPTIONS if o.shapes)
OPTION_FILE_NAMES = frozenset(o.name for o in JOB_OPTIONS if o.in_option_file)
DAEMON_SIDE = frozenset(o.name for o in JOB_OPTIONS if o.daemon_side)


def _argparse_type(option: Option) -> Callable[[str], Any] | None:
    """The option's converter, its UsageError told as argparse's own (a usage line, exit 2, no traceback)."""
    if option.type in (bool, list, str, dict):
        return None
    convert_to = option.type

    def convert(text: str) -> Any:
        try:
            return convert_to(text)
        except UsageError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    convert.__name__ = getattr(convert_to, "__name__", "value")
    return convert


def add_job_options(parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
    """Add the job options (all, or those named in `only`) to `parser`, grouped as in the table.

    Every default is None ("not given") so that a flag can be told apart from the table's default:
    the flag beats the ledger, the ledger beats the environment, the environment beats the default.
    """
    wanted = set(only) if only is not None else None
    groups: dict[str, Any] = {}
    for o in JOB_OPTIONS:
        if wanted is not None and o.name not in wanted:
            continue
        if o.group not in groups:
            groups[o.group] = parser.add_argument_group(o.group)
        g = groups[o.group]
        text = o.help + (f" (default {_plain(o)})" if _plain(o) else "")
        if o.type is bool:
            g.add_argument(o.flag, action="store_true", default=None, help=text)
        elif o.type is list:
            g.add_argument(o.flag, action="append", metavar=o.metavar, help=text)
        else:
            g.add_argument(o.flag, type=_argparse_type(o), choices=o.choices, metavar=o.metavar, help=text)


def _plain(o: Option) -> str:
    text = o.default_text if o.default_text is not None else ("" if o.default in (None, (), False) else str(o.default))
    return text.replace("`", "")


def flags_of(values: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The values actually given (None and absent switches left out)."""
    items = vars(values).items() if isinstance(values, argparse.Namespace) else values.items()
    return {k: v for k, v in items if v is not None}


NOT_KEPT = "[not kept]"  # a header's value, as the ledger remembers it


def kept_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The remembered flags as a ledger keeps them: header values left out (a proxy's token is one)."""
    out = dict(flags)
    if out.get("header"):
        out["header"] = [f"{h.partition(':')[0].strip()}: {NOT_KEPT}" for h in out["header"]]
    return out


def unkept_headers(flags: Mapping[str, Any]) -> list[str]:
    """Names of the headers whose values a ledger did not keep (they must be given again)."""
    return [h.partition(":")[0].strip() for h in flags.get("header") or () if h.endswith(f": {NOT_KEPT}")]


def check_value(option: Option, value: Any, where: str) -> Any:
    """`value` converted to the option's type and range-checked; UsageError naming `where` and the flag."""
    label = f"{where}{option.flag}" if where else option.flag
    if option.type is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{label}: expected true or false, got {value!r}")
        return value
    if option.type is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise UsageError(f"{label}: expected a string or a list of strings, got {value!r}")
        return list(items)
    if option.type is dict:
        return json_object(value, label)
    if option.type is str:
        if not isinstance(value, str):
            raise UsageError(f"{label}: expected a string, got {value!r}")
        converted: Any = value
    else:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise UsageError(f"{label}: expected a number, got {value!r}")
        try:
            converted = option.type(value) if not isinstance(value, str) else option.type(value.strip())
        except (TypeError, ValueError):
            raise UsageError(f"{label}: expected {'a whole number' if option.type is int else 'a number'}, "
                             f"got {value!r}") from None
        if option.type is int and isinstance(value, float) and value != int(value):
            raise UsageError(f"{label}: expected a whole number, got {value!r}")
        if option.minimum is not None and converted < option.minimum:
            raise UsageError(f"{label} {converted}: must be at least {option.minimum:g}")
        if option.maximum is not None and converted > option.maximum:
            raise UsageError(f"{label} {converted}: must be at most {option.maximum:g}")
    if option.choices and converted not in option.choices:
        raise UsageError(f"{label} {converted!r}: choose one of {', '.join(option.choices)}")
    return converted


def json_object(value: Any, label: str) -> dict:
    """A JSON object given as a mapping, or as the path of a file holding one; UsageError naming `label`."""
    if isinstance(value, str):
        try:
            with open(value, "rb") as f:
                value = json.load(f)
        except OSError as exc:
            raise UsageError(f"{label} {value}: cannot read it ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise UsageError(f"{label} {value}: not JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise UsageError(f"{label}: expected a JSON object (or a file holding one), got {value!r}"[:300])
    if not all(isinstance(k, str) for k in value):
        raise UsageError(f"{label}: the object's keys must be strings")
    return dict(value)


OPTION_FILE = "a job's options file"  # the doors a job arrives by, as job_options names them
SUBMITTED = "a submitted job"


def job_options(doc: Mapping[str, Any], where: str, *, door: str, flags: bool = False) -> dict[str, Any]:
    """The one trust rule of every way a job arrives from outside the process that holds the key (a spool's
    options file, `submit`, a job spec a cluster node claims): its options, checked key by key, dest -> value
    (None values dropped).

    An unknown key, one that is the daemon's to set (`daemon_side`: where the key goes and how it is sent,
    which files the process reads, prices, polling) or a value of the wrong type is a UsageError naming
    `where` and the key (as a flag when `flags`). A `template` here is the template itself, never a file
    name (the caller builds the settings with `template_file=False`), and `params` the object, never a path.
    """
    def name(key: str) -> str:
        return BY_NAME[key].flag if flags and key in BY_NAME else key
    unknown = sorted(set(doc) - OPTION_FILE_NAMES)
    if unknown:
        raise UsageError(f"{where}: unknown option(s) {', '.join(map(name, unknown))}; use the names of the "
                         f"command-line flags in snake_case (e.g. batch_size)")
    theirs = sorted(set(doc) & DAEMON_SIDE)
    if theirs:
        raise UsageError(f"{where}: {', '.join(map(name, theirs))} may not be set by {door}: where the daemon "
                         f"sends its key, which files it reads and how it polls are set on the daemon's command "
                         f"line or in its .env; a job's options shape its batches and prompts only")
    if isinstance(doc.get("params"), str):  # a path: a job must not make the daemon read files
        raise UsageError(f"{where}: params must be the JSON object itself here, not the name of a file")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if value is None:
            continue
        out[key] = check_value(BY_NAME[key], value, f"{where}: ")
    return out


def coerce_option_file(doc: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A daemon job's options document (`job_options` at the spool's door)."""
    return job_options(doc, where, door=OPTION_FILE)


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


if __name__ == "__main__":  # pragma: no cover - `python -m batch_scheduler.core.options [--readme|--settings FILE]`
    import sys
    if sys.argv[1:2] == ["--readme"]:
        print("README.md option table " + ("rewritten" if rewrite_readme(sys.argv[2]) else "up to date"))
    elif sys.argv[1:2] == ["--settings"]:
        print("Settings fields " + ("rewritten" if rewrite_settings(sys.argv[2]) else "up to date"))
    else:
        print(markdown_table())
