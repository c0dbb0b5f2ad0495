"""Private Gemini wire constants: finish reasons, error statuses, thinking budgets, and their OpenAI meaning.

Names follow the Gemini REST API (`v1beta`, lowerCamelCase JSON); nothing here imports the HTTP client.
"""

from __future__ import annotations

from typing import Final

GENERATE: Final = ":generateContent"
BATCH_EMBED: Final = ":batchEmbedContents"
STREAM_GENERATE: Final = ":streamGenerateContent?alt=sse"  # without alt=sse the stream is a JSON array
API_KEY_HEADER: Final = "x-goog-api-key"

# finishReason -> OpenAI finish_reason (STOP becomes tool_calls when any functionCall was emitted)
_FILTERED: Final = frozenset({
    "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "LANGUAGE", "OTHER",
    "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "IMAGE_OTHER", "NO_IMAGE",
})
_TOOL_TROUBLE: Final = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})


def finish_reason(reason: str, *, has_tool_calls: bool) -> str:
    """Map a Gemini `finishReason` onto the five OpenAI values (never a provider-native string)."""
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED or reason.startswith("IMAGE_"):
        return "content_filter"
    if reason in _TOOL_TROUBLE:
        return "stop"
    # STOP, FINISH_REASON_UNSPECIFIED and values newer than this table
    return "tool_calls" if has_tool_calls else "stop"


# google.rpc status -> the HTTP status Sluice reports
STATUS_HTTP: Final[dict[str, int]] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 502,  # our upstream credentials, not the client's: a gateway fault
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 502,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 502,
    "UNKNOWN": 502,
    "DATA_LOSS": 502,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

# reasoning_effort -> thinkingConfig.thinkingBudget (tokens)
THINKING_BUDGET: Final[dict[str, int]] = {"low": 1024, "medium": 8192, "high": 24576}

MAX_STOP_SEQUENCES: Final = 4
AUDIO_MIME: Final[dict[str, str]] = {"wav": "audio/wav", "mp3": "audio/mp3"}
