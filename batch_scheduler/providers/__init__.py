"""The providers, one module each in its family's folder, and the registry that picks one by name.

Here, at the top: the interface (base.py) and what more than one family shares: an answer's fields
checked where they are read (answers.py), Messages auth, params checks and result lines (common.py,
result_lines.py), exact token counts (counting.py), the realtime endpoints (realtime.py). The families:
anthropic/ (Message Batches, the inline proxy), openai/ (OpenAI Batch and the providers that follow its
flow: Azure, Groq, Together, Mistral; xAI), google/ (Gemini, Vertex AI, Cloud Storage), aws/ (Bedrock).

Adding a provider is four steps, and nothing outside them names it:

1. its module in its family's folder, `providers/<family>/<name>.py` (a new family is a new folder): a
   class that subclasses `base.Provider` with its `name`, its `spec` (limits, defaults, env names, auth),
   `headers(settings)` and the `Provider` methods;
   the hooks it needs beyond the defaults (`body_field`, `row_api`, `lane_of`, `tag_of`,
   `token_count` with `count_tokens`, `sends_anthropic_version`) set on the class;
2. one line in `REGISTRY` below (the `--provider` choices in `core.options` list the same names, a
   test holds the two equal);
3. its API in the simulator (`simulator/<family>/<name>.py`, mounted in `simulator/server.py`), so the pipeline's
   tests run against it;
4. its models' prices in `data/prices.json` (or `--prices FILE`), so `--max-cost` can price it.

The job asks the registry (`provider_class`, `spec_of`, `body_field`, ...) or the provider's members;
it never compares a provider's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batch_scheduler.core.errors import UsageError
from batch_scheduler.core.headers import merge_headers
from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import ProviderSpec, Settings, provider_name, settings_from
from batch_scheduler.core.version import USER_AGENT
from batch_scheduler.providers.anthropic.inline import InlineProvider
from batch_scheduler.providers.anthropic.provider import AnthropicProvider
from batch_scheduler.providers.aws.bedrock import BedrockProvider
from batch_scheduler.providers.base import Provider
from batch_scheduler.providers.google.gemini import GeminiProvider
from batch_scheduler.providers.google.vertex import VertexProvider
from batch_scheduler.providers.openai.like import AzureProvider, GroqProvider, TogetherProvider
from batch_scheduler.providers.openai.mistral import MistralProvider
from batch_scheduler.providers.openai.provider import OpenAIProvider
from batch_scheduler.providers.openai.xai import XaiProvider

__all__ = ["DEFAULT", "NAMES", "REGISTRY", "AnthropicProvider", "AzureProvider", "BedrockProvider", "GeminiProvider",
           "GroqProvider", "InlineProvider", "MistralProvider", "OpenAIProvider", "Provider", "TogetherProvider", "VertexProvider",
           "XaiProvider",
           "body_field", "build_settings", "headers_for", "key_refused_message", "make_provider", "missing_key_message",
           "provider_class", "spec_of"]

REGISTRY: dict[str, type[Provider]] = {cls.name: cls for cls in (
    AnthropicProvider,
    OpenAIProvider,
    InlineProvider,
    BedrockProvider,
    AzureProvider,
    GeminiProvider,
    VertexProvider,
    GroqProvider,
    TogetherProvider,
    MistralProvider,
    XaiProvider,
)}
NAMES = tuple(REGISTRY)
DEFAULT = NAMES[0]  # what an unknown name (a ledger from elsewhere) is read as; core.options' default too


def provider_class(name: str) -> type[Provider]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UsageError(f"--provider {name!r}: choose one of {', '.join(NAMES)}") from None


def spec_of(name: str) -> ProviderSpec:
    return provider_class(name).spec


def body_field(name: str | None) -> str:
    """Where this provider's lines keep the request body ("params" or "body"); "params" for no provider."""
    cls = REGISTRY.get(name) if name is not None else None
    return cls.body_field if cls is not None else Provider.body_field


def build_settings(flags: Mapping[str, Any], env: Mapping[str, str], *, template_file: bool = True) -> Settings:
    """Settings from flags (None = not given) and the environment, for the provider they name
    (`template_file=False`: a template is never read from a file; see `settings_from`)."""
    return settings_from(flags, env, spec_of(provider_name(flags, env)), template_file=template_file)


def headers_for(settings: Settings) -> dict[str, str]:
    """The headers every call of this provider carries (auth included); a --header User-Agent wins."""
    return merge_headers({"User-Agent": USER_AGENT}, provider_class(settings.provider).headers(settings))


def make_provider(settings: Settings, http: HttpClient) -> Provider:
    return provider_class(settings.provider)(settings, http)


def missing_key_message(settings: Settings) -> str:
    return f"no API key: set {spec_of(settings.provider).credential_hint} in the environment or in .env"


def key_refused_message(settings: Settings, status: int | None) -> str:
    """What a refused key means, phrased once per provider (an OpenAI user hears of OPENAI_API_KEY)."""
    return (f"the API refused the key{f' (HTTP {status})' if status else ''}: check "
            f"{spec_of(settings.provider).key_hint}")
