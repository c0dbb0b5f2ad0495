"""Gemini replies and error bodies -> OpenAI chat.completion objects and sluice errors."""

from __future__ import annotations

import orjson
import pytest

from sluice.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from sluice.providers.gemini.response import error_from_body, to_openai_completion

from .golden import CREATED, counter_ids


def convert(resp: dict[str, object]) -> dict[str, object]:
    return to_openai_completion(resp, upstream_model="gemini-up", created=CREATED, new_id=counter_ids())


def test_text_thoughts_and_usage() -> None:
    out = convert({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking...", "thought": True}, {"text": "Hello"}, {"text": " there"}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 5,
                          "cachedContentTokenCount": 4, "totalTokenCount": 17},
        "modelVersion": "gemini-2.5-flash", "responseId": "abc"})
    assert out == {
        "id": "chatcmpl-abc", "object": "chat.completion", "created": CREATED, "model": "gemini-2.5-flash",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there",
                                             "reasoning_content": "Thinking..."},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 5}},
    }


def test_function_calls_give_tool_calls_and_null_content() -> None:
    out = convert({"candidates": [{"content": {"parts": [
        {"functionCall": {"name": "a", "args": {"x": [1, 2], "y": "é"}}}, {"functionCall": {"name": "b"}}]},
        "finishReason": "STOP"}], "responseId": "r"})
    choice = out["choices"][0]  # type: ignore[index]
    assert choice == {"index": 0, "logprobs": None, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "call_0", "type": "function",
             "function": {"name": "a", "arguments": '{"x":[1,2],"y":"é"}'}},
            {"id": "call_1", "type": "function", "function": {"name": "b", "arguments": "{}"}}]}}
    assert out["model"] == "gemini-up"
    assert "usage" not in out  # not reported is not zero


@pytest.mark.parametrize(("reason", "expected"), [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"),
    ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("LANGUAGE", "content_filter"), ("IMAGE_SAFETY", "content_filter"), ("IMAGE_OTHER", "content_filter"),
    ("OTHER", "content_filter"), ("MALFORMED_FUNCTION_CALL", "stop"), ("UNEXPECTED_TOOL_CALL", "stop"),
    ("TOO_MANY_TOOL_CALLS", "stop"), ("FINISH_REASON_UNSPECIFIED", "stop"),
])
def test_finish_reason_map(reason: str, expected: str) -> None:
    out = convert({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]})
    assert out["choices"][0]["finish_reason"] == expected  # type: ignore[index]


def test_blocked_prompt_is_content_filter_with_empty_content() -> None:
    out = convert({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8},
                   "responseId": "b"})
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": ""}, "logprobs": None,
                               "finish_reason": "content_filter"}]
    assert out["usage"]["prompt_tokens"] == 8  # type: ignore[index]


def test_no_candidates_and_no_block_reason_is_an_error() -> None:
    with pytest.raises(UpstreamError):
        convert({"usageMetadata": {"promptTokenCount": 8}})


def test_several_candidates_are_separate_choices_by_index() -> None:
    out = convert({"candidates": [
        {"content": {"parts": [{"text": "two"}]}, "finishReason": "STOP", "index": 1},
        {"content": {"parts": [{"text": "one"}]}, "finishReason": "MAX_TOKENS", "index": 0}]})
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in out["choices"]] == [  # type: ignore
        (0, "one", "length"), (1, "two", "stop")]


def test_error_object_in_a_200_reply_raises() -> None:
    with pytest.raises(UpstreamUnavailable):
        convert({"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}})


def body(code: int, status: str, message: str = "m", **extra: object) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "status": status, **extra}})


@pytest.mark.parametrize(("code", "status", "cls", "http"), [
    (429, "RESOURCE_EXHAUSTED", UpstreamRateLimited, 429),
    (503, "UNAVAILABLE", UpstreamUnavailable, 503),
    (400, "INVALID_ARGUMENT", UpstreamRejected, 400),
    (400, "FAILED_PRECONDITION", UpstreamRejected, 400),
    (404, "NOT_FOUND", UpstreamRejected, 404),
    (504, "DEADLINE_EXCEEDED", UpstreamTimeout, 504),
    (500, "INTERNAL", UpstreamError, 502),
])
def test_error_status_map(code: int, status: str, cls: type[UpstreamError], http: int) -> None:
    err = error_from_body(body(code, status, "Gemini says no"), status=code)
    assert type(err) is cls
    assert err.status == http
    envelope = err.to_dict()["error"]
    assert envelope["message"] == "Gemini says no"
    assert envelope["code"] is None or isinstance(envelope["code"], str)


def test_permission_denied_is_the_gateways_key_refused_and_says_nothing_upstream() -> None:
    err = error_from_body(body(403, "PERMISSION_DENIED", "API key AIzaSyDUMMYdummyDUMMY0123 lacks access"),
                          status=403)
    assert type(err) is UpstreamAuthFailed and err.status == 502 and err.code == "upstream_auth_failed"
    assert "AIza" not in err.message and "lacks" not in err.message


def test_resource_exhausted_retry_after_from_headers_then_details() -> None:
    err = error_from_body(body(429, "RESOURCE_EXHAUSTED"), status=429, headers={"retry-after": "7"})
    assert err.retry_after == 7.0
    assert (b"retry-after", b"7") in err.headers()
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}]
    err = error_from_body(body(429, "RESOURCE_EXHAUSTED", details=details), status=429, headers={})
    assert err.retry_after == 37.0
    assert err.to_dict()["error"]["code"] == "rate_limit_exceeded"


def test_unparseable_error_body_falls_back_to_http_status() -> None:
    err = error_from_body(b"<html>Bad Gateway</html>", status=502)
    assert err.status == 502 and "502" in err.message
    err = error_from_body(b"", status=503)
    assert isinstance(err, UpstreamUnavailable)
    raw = b'[{"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}]'
    err = error_from_body(raw, status=400)
    assert isinstance(err, UpstreamRejected) and err.message == "bad"


def test_in_stream_error_without_status_uses_the_integer_code_for_status_only() -> None:
    err = error_from_body({"error": {"code": 500, "message": "boom"}}, status=None)
    assert err.status == 502 and err.to_dict()["error"]["code"] == "upstream_error"
    err = error_from_body({"error": {"code": 429, "message": "slow down"}}, status=None)
    assert isinstance(err, UpstreamRateLimited) and err.to_dict()["error"]["code"] == "rate_limit_exceeded"


def test_unauthenticated_is_a_gateway_fault_not_the_clients_401() -> None:
    err = error_from_body(body(401, "UNAUTHENTICATED", "API key not valid"), status=401)
    assert err.status == 502 and err.retryable
