"""What an upstream error says about the key that got it: refused (disable), out of quota (disable),
rate-limited (cool down), or nothing about the key at all (the ordinary failover handles it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.errors import UpstreamAuthFailed, UpstreamError, UpstreamRateLimited

# error codes/types by which providers say "this account has no money or quota left"
_QUOTA_CODES = frozenset({"insufficient_quota", "billing_error", "billing_hard_limit_reached"})
_BAD_KEY_PHRASE = "please pass a valid api key"
_QUOTA_PHRASES = ("credit balance is too low", "exceeded your current quota")


@dataclass(slots=True, frozen=True)
class Verdict:
    action: str          # "disable" | "cool"
    reason: str
    seconds: float | None = None  # for "cool": the upstream's retry-after, if it sent one


def classify(exc: UpstreamError) -> Verdict | None:
    msg = exc.message[:200]
    code = exc.code or ""
    if isinstance(exc, UpstreamAuthFailed):   # main's wording is for clients; the operator gets the detail
        return Verdict("disable", f"auth: the upstream refused the key ({exc.upstream_status}): {exc.detail[:200]}")
    if code == "upstream_auth_failed":
        return Verdict("disable", f"auth: the upstream refused the key (401): {msg}")
    if exc.status == 403:
        return Verdict("disable", f"auth: the upstream forbade the key (403): {msg}")
    low = msg.lower()
    if _BAD_KEY_PHRASE in low:  # Gemini: 400 INVALID_ARGUMENT, reason API_KEY_INVALID
        return Verdict("disable", f"auth: the upstream does not know the key ({exc.status}): {msg}")
    if code in _QUOTA_CODES or exc.type in _QUOTA_CODES or any(p in low for p in _QUOTA_PHRASES):
        return Verdict("disable", f"quota: {code or exc.type}: {msg}")
    if isinstance(exc, UpstreamRateLimited):
        return Verdict("cool", f"rate limited: {msg}", exc.retry_after)
    return None


def scrub(text: str, secrets: list[str]) -> str:
    """An upstream's answer as the admin may see it: our keys (some upstreams echo them) masked, bounded."""
    for s in secrets:
        if s:
            text = text.replace(s, "****")
    return text[:1000]
