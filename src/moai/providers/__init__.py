"""Model providers: one module per protocol, one factory that picks by the card's ``provider``."""

from __future__ import annotations

from moai.catalog import ModelCard
from moai.providers.base import (
    ChatParams,
    Completion,
    Delta,
    Provider,
    ProviderError,
    ProviderRateLimited,
    ProviderRequestError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    Usage,
)

__all__ = [
    "ChatParams",
    "Completion",
    "Delta",
    "Provider",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderRequestError",
    "ProviderServerError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "Usage",
    "make_provider",
]


def make_provider(card: ModelCard) -> Provider:
    """Build the provider for a card; imports are lazy so unused backends cost nothing."""
    if card.deployments:
        from moai.providers.balanced import BalancedProvider

        return BalancedProvider(card)
    if card.provider in ("openai_compat", "openai"):
        from moai.providers.openai_compat import OpenAICompatProvider

        return OpenAICompatProvider(card)
    if card.provider == "local":
        from moai.providers.llama_cpp import LlamaCppProvider

        return LlamaCppProvider(card)
    if card.provider == "anthropic":
        from moai.providers.anthropic import AnthropicProvider

        return AnthropicProvider(card)
    if card.provider == "replay":
        from moai.providers.replay import ReplayProvider

        return ReplayProvider(card)
    raise ProviderUnavailable(card.name, f"provider {card.provider!r} is not available in this build")
