"""The Anthropic Messages provider: adapter, pure translation, stream state machine, pass-through (the wire
constants it shares with the `/v1/messages` front door live in `sluice/dialects/anthropic_messages/wire.py`)."""

from sluice.providers.anthropic.adapter import AnthropicProvider

__all__ = ["AnthropicProvider"]
