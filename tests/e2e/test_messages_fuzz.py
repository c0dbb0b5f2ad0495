"""Property test over `/v1/messages` and `/v1/messages/count_tokens` on a real server: whatever the body,
never a 5xx, and every error is Anthropic's envelope carrying the request id (issue 10, item 6)."""

from __future__ import annotations

import http.client
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import SluiceServer

# any JSON value, small, with the numbers that break naive code (huge, negative, floats, bools)
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
junk = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                    max_leaves=8)


def either(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid shape, sometimes anything: so that bodies reach translation and the upstream too."""
    # not n == 0: Hypothesis favours the bounds of a range, and junk at those would crowd out the rest
    return st.integers(0, 19).flatmap(lambda n: junk if n == 7 else valid)


text_block = st.fixed_dictionaries({"type": st.just("text"), "text": either(st.text(max_size=10))},
                                   optional={"cache_control": either(st.just({"type": "ephemeral"}))})
block = st.one_of(
    text_block,
    st.fixed_dictionaries({"type": st.just("tool_use"), "id": either(st.just("toolu_1")),
                           "name": either(st.just("Read")), "input": either(st.just({"a": 1}))}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": either(st.just("toolu_1")),
                           "content": either(st.lists(text_block, max_size=2))}),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": either(st.text(max_size=5)),
                           "signature": either(st.just("sig"))}),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "document"]),
                           "source": either(st.just({"type": "base64", "media_type": "image/png", "data": "AA=="}))}),
    junk)
message = st.fixed_dictionaries({"role": either(st.sampled_from(["user", "assistant", "system"])),
                                 "content": either(st.one_of(st.text(max_size=10), st.lists(block, max_size=3)))})
tool = either(st.fixed_dictionaries({"name": either(st.just("Read"))},
                                    optional={"input_schema": either(st.just({"type": "object"})),
                                              "type": either(st.sampled_from(["custom", "web_search_20250305"])),
                                              "description": either(st.text(max_size=5))}))
fields: dict[str, st.SearchStrategy[Any]] = {
    "system": either(st.one_of(st.text(max_size=5), st.lists(text_block, max_size=2))),
    "tools": either(st.lists(tool, max_size=2)),
    "tool_choice": either(st.fixed_dictionaries({"type": either(st.sampled_from(["auto", "any", "tool", "none"]))},
                                                optional={"name": either(st.just("Read"))})),
    "metadata": either(st.fixed_dictionaries({"user_id": either(st.text(max_size=5))})),
    "stop_sequences": either(st.lists(st.text(max_size=3), max_size=2)),
    "thinking": either(st.fixed_dictionaries(
        {"type": either(st.sampled_from(["enabled", "adaptive", "disabled"]))},
        optional={"budget_tokens": either(st.one_of(st.integers(1024, 4096), st.integers(-1, 2_000_000)))})),
    "output_config": either(st.fixed_dictionaries({"effort": either(st.sampled_from(["low", "high", "max"]))})),
    "context_management": either(st.just({"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]})),
    "stream": either(st.booleans()),
    "temperature": either(st.one_of(st.floats(0, 1), st.floats(-1, 3))),
    "top_p": either(st.floats(0, 1)),
    "top_k": either(st.integers(0, 50)),
}
bodies = st.fixed_dictionaries({"model": either(st.sampled_from(["sim-local", "gpt-4o"])),
                                "messages": either(st.lists(message, min_size=1, max_size=3)),
                                "max_tokens": either(st.one_of(st.integers(1, 4096), st.integers(-5, 2_000_000)))},
                               optional=fields)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=bodies, count=st.booleans())
def test_no_body_gets_a_5xx_and_errors_use_anthropics_envelope(sluice: SluiceServer, api_key: str,
                                                                body: dict[str, Any], count: bool) -> None:
    path = "/v1/messages/count_tokens" if count else "/v1/messages"
    conn = http.client.HTTPConnection("127.0.0.1", sluice.port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={
            "x-api-key": api_key, "content-type": "application/json", "anthropic-version": "2023-06-01"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status < 500, (resp.status, raw, body)
    assert resp.getheader("x-request-id") and resp.getheader("request-id") == resp.getheader("x-request-id")
    if resp.status >= 400:
        doc = json.loads(raw)
        assert doc["type"] == "error", raw
        assert isinstance(doc["error"]["type"], str) and isinstance(doc["error"]["message"], str), raw
    elif resp.getheader("content-type", "").startswith("text/event-stream"):
        assert raw.startswith((b"event: message_start", b"event: ping")), raw
        assert raw.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") or b"event: error" in raw
