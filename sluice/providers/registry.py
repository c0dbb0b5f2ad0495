"""Builds the configured providers: one constructor per `kind`, imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

from sluice.config import ProviderConfig
from sluice.providers.base import Provider
from sluice.redact import register
from sluice.upstream import Transport

_KINDS: dict[str, tuple[str, str]] = {
    "openai": ("sluice.providers.openai_compat", "OpenAICompatProvider"),
    "simulated": ("sluice.providers.simulated", "SimulatedProvider"),
    "anthropic": ("sluice.providers.anthropic", "AnthropicProvider"),
    "gemini": ("sluice.providers.gemini", "GeminiProvider"),
}


def build_providers(configs: list[ProviderConfig], client: Transport) -> dict[str, Provider]:
    out: dict[str, Provider] = {}
    for cfg in configs:
        register(cfg.api_key)  # masked wherever an upstream echoes it back
        for value in cfg.headers.values():
            register(value.removeprefix("Bearer ").removeprefix("bearer "))
        module, cls = _KINDS[cfg.kind]
        factory: Any = getattr(importlib.import_module(module), cls)
        # a provider with its own outbound proxy or CA file gets a pool of its own (closed with `client`)
        out[cfg.name] = factory(cfg, client.variant(proxy=cfg.proxy, ca_file=cfg.ca_file))
    return out
