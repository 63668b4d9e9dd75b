"""The providers, one module each, and the registry that picks one by name.

Adding a provider: write its module (a class with `name`, `spec`, `headers(settings)` and the
`Provider` methods of `base`), then add one line to `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_scheduler import __version__  # the package's own __init__: defined before anything is imported
from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import ProviderSpec, Settings, provider_name, settings_from
from batch_scheduler.providers.anthropic import AnthropicProvider
from batch_scheduler.providers.base import Provider
from batch_scheduler.providers.inline import InlineProvider
from batch_scheduler.providers.openai import OpenAIProvider

REGISTRY: dict[str, Any] = {
    "anthropic": AnthropicProvider,
    "openai": OpenAIProvider,
    "inline": InlineProvider,
}
NAMES = tuple(REGISTRY)
USER_AGENT = f"batch-scheduler/{__version__}"  # who is calling, for the providers' and proxies' support


def _cls(name: str) -> Any:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"--provider {name!r}: choose one of {', '.join(NAMES)}") from None


def spec_of(name: str) -> ProviderSpec:
    return _cls(name).spec


def build_settings(flags: Mapping[str, Any], env: Mapping[str, str], *, template_file: bool = True) -> Settings:
    """Settings from flags (None = not given) and the environment, for the provider they name
    (`template_file=False`: a template is never read from a file; see `settings_from`)."""
    return settings_from(flags, env, spec_of(provider_name(flags, env)), template_file=template_file)


def headers_for(settings: Settings) -> dict[str, str]:
    """The headers every call of this provider carries (auth included); a --header User-Agent wins."""
    return merge_headers({"User-Agent": USER_AGENT}, _cls(settings.provider).headers(settings))


def make_provider(settings: Settings, http: HttpClient) -> Provider:
    return _cls(settings.provider)(settings, http)


def missing_key_message(settings: Settings) -> str:
    return f"no API key: set {spec_of(settings.provider).credential_hint} in the environment or in .env"


def key_refused_message(settings: Settings, status: int | None) -> str:
    """What a refused key means, phrased once per provider (an OpenAI user hears of OPENAI_API_KEY)."""
    return (f"the API refused the key{f' (HTTP {status})' if status else ''}: check "
            f"{spec_of(settings.provider).key_hint}")
