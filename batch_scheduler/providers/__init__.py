"""One module per provider behind the interface in `base`; `make_provider` picks one by name."""

from __future__ import annotations

from batch_scheduler.core.http import HttpClient
from batch_scheduler.core.settings import Settings
from batch_scheduler.providers.base import Provider


def headers_for(settings: Settings) -> dict[str, str]:
    """The headers every call of this provider carries (auth included)."""
    if settings.provider == "anthropic":
        from batch_scheduler.providers.anthropic import AnthropicProvider
        return AnthropicProvider.headers(settings)
    if settings.provider == "openai":
        from batch_scheduler.providers.openai import OpenAIProvider
        return OpenAIProvider.headers(settings)
    from batch_scheduler.providers.inline import InlineProvider
    return InlineProvider.headers(settings)


def make_provider(settings: Settings, http: HttpClient) -> Provider:
    if settings.provider == "anthropic":
        from batch_scheduler.providers.anthropic import AnthropicProvider
        return AnthropicProvider(settings, http)
    if settings.provider == "openai":
        from batch_scheduler.providers.openai import OpenAIProvider
        return OpenAIProvider(settings, http)
    from batch_scheduler.providers.inline import InlineProvider
    return InlineProvider(settings, http)
