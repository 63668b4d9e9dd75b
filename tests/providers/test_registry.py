"""One place per provider: the registry names every provider the CLI offers, each provider is a `Provider`
with the hooks the job reads, and nothing outside `providers/` asks a provider's name."""

from __future__ import annotations

import argparse
import ast
import pathlib
import tomllib

import pytest

import batch_scheduler
from batch_scheduler.commands.parser import build_parser
from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.options import BY_NAME
from batch_scheduler.core.version import USER_AGENT, __version__
from batch_scheduler.providers import DEFAULT, NAMES, REGISTRY, body_field, provider_class
from batch_scheduler.providers.base import Provider

PACKAGE = pathlib.Path(batch_scheduler.__file__).parent
ROOT = PACKAGE.parent
# the simulator serves each provider's API under its own name (its batches' `kind`); core.options and
# core.settings (below the providers) name the default and the choices, which the tests here hold equal
NAMES_ALLOWED_IN = ("providers", "simulator")


def provider_options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = [("(top)", a) for a in parser._actions if "--provider" in a.option_strings]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{name} {n}".strip() if n != "(top)" else name, a) for n, a in provider_options(sub)]
    return found


def test_every_provider_option_of_the_cli_offers_exactly_the_registry():
    options = provider_options(build_parser())
    assert options, "no command takes --provider"
    assert {where: tuple(a.choices or ()) for where, a in options} == {where: NAMES for where, _ in options}


def test_the_option_table_declares_the_registry_and_its_default():
    assert BY_NAME["provider"].choices == NAMES
    assert BY_NAME["provider"].default == DEFAULT


@pytest.mark.parametrize("name", NAMES)
def test_each_provider_is_registered_under_its_own_name_and_subclasses_the_protocol(name):
    cls = REGISTRY[name]
    assert cls.name == name and provider_class(name) is cls
    assert Provider in cls.__mro__ and cls.body_field in ("params", "body")  # the defaults are inherited
    assert (cls.token_count is None) == (cls.count_tokens is Provider.count_tokens)


def test_an_unknown_provider_is_a_usage_error_naming_the_choices():
    with pytest.raises(UsageError) as caught:
        provider_class("no-such-api")
    assert str(caught.value) == f"--provider 'no-such-api': choose one of {', '.join(NAMES)}"


def test_a_line_without_a_known_provider_keeps_its_body_in_params():
    assert body_field(None) == body_field("bedrock") == "params"
    assert body_field("openai") == body_field("inline") == "body"


def test_the_version_is_pyprojects_and_the_root_package_reexports_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert __version__ == project["version"] == batch_scheduler.__version__
    assert USER_AGENT == f"batch-scheduler/{__version__}"


# -- nobody outside providers/ asks a provider's name ------------------------------------------------------


def name_questions(source: str, where: str, names: tuple[str, ...]) -> list[str]:
    """Comparisons against a provider's name, and `getattr(x, "lane_of" | "tag_of")`, in one module."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            consts = [c for s in sides for c in ([s] if isinstance(s, ast.Constant) else getattr(s, "elts", []))]
            if any(isinstance(c, ast.Constant) and c.value in names for c in consts):
                found.append(f"{where}:{node.lineno}: compares a provider name")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
              and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
              and node.args[1].value in ("lane_of", "tag_of", "spec")):
            found.append(f"{where}:{node.lineno}: getattr of provider member {node.args[1].value!r}")
    return found


def test_nothing_outside_providers_compares_a_provider_name_or_getattrs_its_hooks():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] not in NAMES_ALLOWED_IN:
            found += name_questions(path.read_text(encoding="utf-8"), str(rel), NAMES)
    assert found == [], "\n".join(found)


def test_a_planted_name_comparison_and_hook_getattr_are_found():
    source = ('if settings.provider == "openai":\n    pass\n'
              'ok = name in ("anthropic", "inline")\n'
              'lane = getattr(provider, "lane_of", None)\n'
              'fine = settings.provider == "other"\n')
    assert name_questions(source, "job/x.py", NAMES) == [
        "job/x.py:1: compares a provider name", "job/x.py:3: compares a provider name",
        "job/x.py:4: getattr of provider member 'lane_of'"]
