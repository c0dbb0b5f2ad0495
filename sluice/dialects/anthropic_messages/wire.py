"""Anthropic Messages wire constants: API version, event names, stop reasons and their OpenAI mapping."""

from __future__ import annotations

from typing import Final

API_VERSION: Final = "2023-06-01"

MESSAGE_START: Final = "message_start"
MESSAGE_DELTA: Final = "message_delta"
MESSAGE_STOP: Final = "message_stop"
BLOCK_START: Final = "content_block_start"
BLOCK_DELTA: Final = "content_block_delta"
BLOCK_STOP: Final = "content_block_stop"
PING: Final = "ping"
ERROR: Final = "error"

# Anthropic stop_reason -> OpenAI finish_reason; unknown values become "stop" (never leak native names)
FINISH_REASONS: Final[dict[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason (the inbound direction)
STOP_REASONS: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

THINKING_BUDGETS: Final[dict[str, int]] = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384}

# sluice error class status -> Anthropic error type (inbound error bodies)
ERROR_TYPES: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def finish_reason(stop_reason: object) -> str:
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
