"""A property-based fuzz of the front door and the admin API on a real `sluice serve` (issue 10): bodies
built from the fields Sluice reads, filled with values of every JSON type and extreme numbers, never get a
5xx, and every error is the OpenAI envelope with an x-request-id. Derandomized, so a failure reproduces."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.e2e.cluster import ADMIN_TOKEN, SluiceServer, free_port, http_get, two_speed_config

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

EXTREME = st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**15, 10**30,
                           1e308, -1e308, 0.5, 1e-300])
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(), EXTREME, st.floats(allow_nan=False, allow_infinity=False),
                   st.text(max_size=20))
JSON = st.recursive(SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                    st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=12)
FIELD = st.one_of(EXTREME, SCALAR, JSON)       # a field's value: extremes first (shrinking goes there too)
CHAT_FIELDS = ["model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n",
               "temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "stop",
               "seed", "logit_bias", "user", "tools", "tool_choice", "response_format", "parallel_tool_calls"]
VALID: dict[str, Any] = {"model": "fast-sim", "messages": [{"role": "user", "content": "hi"}]}


class Client:
    """One keep-alive connection to the server, reopened after the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None, auth: str) -> tuple[int, dict[str, str], bytes]:
        headers = {"authorization": f"Bearer {auth}", "content-type": "application/json"}
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SluiceServer, str, str]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    cfg = two_speed_config(tmp, f"sqlite:///{tmp / 'sluice.db'}", slow_tps=50)
    s = SluiceServer(cfg, free_port(), Path(tmp / "fuzz.log")).start()
    try:
        s.wait_ready()
        c = Client(s.port)
        status, _, body = c.request("POST", "/admin/keys", json.dumps({"name": "fuzz", "budget": "1000"}).encode(),
                                    ADMIN_TOKEN)
        c.conn.close()
        assert status == 201, body
        doc = json.loads(body)
        yield s, doc["key"], doc["id"]
        assert "Traceback" not in s.log.read_text(), s.tail(80)
        assert http_get(s.url + "/health")[0] == 200
    finally:
        s.stop()


@pytest.fixture(scope="module")
def client(server: tuple[SluiceServer, str, str]) -> Iterator[Client]:
    c = Client(server[0].port)
    yield c
    c.conn.close()


def check(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status < 500, body[:500]
    assert headers.get("x-request-id", "").startswith("req_"), headers
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), headers
        doc = json.loads(body)
        assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}, doc
        assert isinstance(doc["error"]["message"], str) and doc["error"]["message"]


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "any-json", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "any-json":
        return json.dumps(draw(JSON)).encode()
    body = dict(VALID)
    for name in draw(st.lists(st.sampled_from(CHAT_FIELDS), min_size=1, max_size=4, unique=True)):
        body[name] = draw(FIELD)
    if body.get("stream") is True and draw(st.booleans()):
        body["stream"] = False          # keep most replies short; streams are still fuzzed
    return json.dumps(body).encode()


@FUZZ
@given(body=chat_bodies())
@example(body=json.dumps({**VALID, "max_tokens": 10**15}).encode())      # the cross-tenant 500s
@example(body=json.dumps({**VALID, "n": 10**12}).encode())
def test_chat_completions_never_5xx(client: Client, server: tuple[SluiceServer, str, str], body: bytes) -> None:
    check(*client.request("POST", "/v1/chat/completions", body, server[1]))


ADMIN_PATHS = st.sampled_from(["/admin/keys", "/admin/keys/{id}", "/admin/keys/{id}/topup", "/admin/keys/nope",
                               "/admin/usage", "/admin/requests", "/admin/requests/nope", "/admin/providers",
                               "/admin/openapi.json", "/admin/", "/admin/keys/{id}/x"])
QUERY = st.dictionaries(st.sampled_from(["key_id", "model", "status", "since", "until", "limit", "group"]),
                        st.one_of(st.text(max_size=12), EXTREME.map(str)), max_size=3)


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PATCH", "DELETE", "PUT"]), path=ADMIN_PATHS, query=QUERY,
       body=st.one_of(JSON, st.dictionaries(st.sampled_from(["name", "budget", "amount", "rpm", "tpm", "period",
                                                              "token_quota", "max_concurrency", "expires_at",
                                                              "models", "metadata", "enabled", "owner"]),
                                            FIELD, max_size=4)))
@example(method="POST", path="/admin/keys", query={}, body={"name": "x", "budget": 10**30})
@example(method="POST", path="/admin/keys/{id}/topup", query={}, body={"amount": "1e30"})
def test_admin_api_never_5xx(client: Client, server: tuple[SluiceServer, str, str], method: str, path: str,
                             query: dict[str, str], body: Any) -> None:
    if method == "DELETE" and path == "/admin/keys/{id}":
        path = "/admin/keys/nope"       # keep the fuzz key alive for the chat fuzz
    target = path.format(id=server[2]) + ("?" + urlencode(query) if query else "")
    check(*client.request(method, target, json.dumps(body).encode(), ADMIN_TOKEN))
