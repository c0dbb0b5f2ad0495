"""The Anthropic Messages provider: adapter, wire constants, pure translation, stream state machine."""

from sluice.providers.anthropic.adapter import AnthropicProvider

__all__ = ["AnthropicProvider"]
