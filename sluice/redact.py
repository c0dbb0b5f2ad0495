"""Masking of credentials in text that came from an upstream (its error messages), before anyone sees it.

Anything that looks like a credential (provider key prefixes, bearer tokens, `key=...` pairs) and every
secret the operator configured for an upstream is replaced by `***` and at most its last four characters.
"""

from __future__ import annotations

import re

_SHAPES = re.compile(
    r"(?P<lead>\b(?:bearer|basic|token)\s+)(?P<bearer>[A-Za-z0-9._~+/=-]{8,})"
    r"|(?P<tok>\b(?:sk|pk|rk|sess)-[A-Za-z0-9_*-]{6,}|\bAIza[0-9A-Za-z_-]{16,}|\b(?:xai|gsk|ghp|hf)[-_][A-Za-z0-9]{8,}"
    r"|\bAKIA[0-9A-Z]{12,}|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_.-]+)"
    r"|(?P<kv>(?:api[_-]?key|x-api-key|key|token|secret|password|authorization)[\"']?\s*[:=]\s*[\"']?)"
    r"(?!bearer\b|basic\b|token\b|\*\*\*)(?P<val>[^\s\"',;&]{6,})",
    re.IGNORECASE)

_known: set[str] = set()
_known_re: re.Pattern[str] | None = None


def register(secret: str | None) -> None:
    """Remember a configured upstream credential so that it is masked wherever it shows up."""
    global _known_re
    if secret and len(secret) >= 6 and secret not in _known:
        _known.add(secret)
        _known_re = re.compile("|".join(re.escape(s) for s in sorted(_known, key=len, reverse=True)))


def _hide(secret: str) -> str:
    return "***" + secret[-4:] if len(secret) >= 12 else "***"


def mask(text: str) -> str:
    """`text` with every credential-like substring masked (keeping at most its last four characters)."""
    if _known_re is not None:
        text = _known_re.sub(lambda m: _hide(m.group(0)), text)

    def repl(m: re.Match[str]) -> str:
        if m.group("bearer") is not None:
            return m.group("lead") + _hide(m.group("bearer"))
        if m.group("tok") is not None:
            return _hide(m.group("tok"))
        return m.group("kv") + _hide(m.group("val"))

    return _SHAPES.sub(repl, text)
