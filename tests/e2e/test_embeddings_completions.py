"""`POST /v1/embeddings` and legacy `/v1/completions` through the official `openai` client: bytes passed
through from an OpenAI-compatible upstream, metered in the ledger with the endpoint, and a clear 400 for
bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from openai import OpenAI

from tests.e2e.conftest import SluiceServer
from tests.sim.openai_sim import ThreadedSim


@pytest.fixture
def client(sluice: SluiceServer, api_key: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=sluice.base_url, api_key=api_key, max_retries=0, timeout=20) as c:
        yield c


def _row(sluice: SluiceServer, request_id: str | None) -> dict[str, object]:
    assert request_id is not None
    rows = sluice.ledger_for(request_id)
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embeddings_both_encodings_arrive_as_the_upstream_sent_them(
        client: OpenAI, sim: ThreadedSim, sluice: SluiceServer, encoding: str) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="gpt-4o", input=["first text", "second one here"], dimensions=6,
        encoding_format=encoding)  # type: ignore[arg-type]
    sent = sim.last.sent
    assert raw.content == sent  # byte for byte
    got = raw.parse()
    upstream = json.loads(sent)
    assert [d.embedding for d in got.data] == [d["embedding"] for d in upstream["data"]]
    if encoding == "base64":
        assert all(isinstance(d.embedding, str) for d in got.data)
    else:
        assert len(got.data[1].embedding) == 6
    assert sim.last.path == "/v1/embeddings"
    assert sim.last.body == {"model": "fx-text", "input": ["first text", "second one here"], "dimensions": 6,
                             "encoding_format": encoding}
    row = _row(sluice, raw.headers.get("x-request-id"))
    assert row["status"] == 200 and row["usage_source"] == "reported"
    assert row["prompt_tokens"] == 5 and row["completion_tokens"] == 0
    assert json.loads(str(row["extra"]))["endpoint"] == "embeddings"


def test_embeddings_default_encoding_token_arrays_and_the_simulated_model(client: OpenAI, sim: ThreadedSim) -> None:
    # the SDK asks for base64 by default and decodes it to floats itself
    got = client.embeddings.create(model="gpt-4o", input=[[1, 2, 3], [4, 5]])
    assert sim.last.body["input"] == [[1, 2, 3], [4, 5]] and sim.last.body["encoding_format"] == "base64"
    assert len(got.data) == 2 and got.usage.prompt_tokens == 5
    local = client.embeddings.create(model="sim-local", input="hello there", encoding_format="float")
    again = client.embeddings.create(model="sim-local", input="hello there", encoding_format="float")
    assert len(local.data[0].embedding) == 16 and local.data[0].embedding == again.data[0].embedding
    assert local.usage.prompt_tokens == 2
    decoded = client.embeddings.create(model="sim-local", input="hello there")  # base64 from the simulated model
    assert decoded.data[0].embedding == pytest.approx(local.data[0].embedding, rel=1e-6, abs=1e-7)


def test_legacy_completion_plain_and_streaming(client: OpenAI, sim: ThreadedSim, sluice: SluiceServer) -> None:
    raw = client.completions.with_raw_response.create(model="gpt-4o", prompt="Tell me", max_tokens=20)
    assert raw.content == sim.last.sent and sim.last.path == "/v1/completions"
    done = raw.parse()
    assert done.choices[0].text == "Once upon a time." and done.usage is not None
    row = _row(sluice, raw.headers.get("x-request-id"))
    assert (row["prompt_tokens"], row["completion_tokens"], row["stream"]) == (5, 5, 0)
    assert json.loads(str(row["extra"]))["endpoint"] == "completions"

    with client.completions.with_streaming_response.create(model="gpt-4o", prompt="Tell me", stream=True) as resp:
        body = b"".join(resp.iter_bytes())
        rid = resp.headers.get("x-request-id")
    assert sim.last.body["stream_options"] == {"include_usage": True}  # always asked upstream, to meter
    upstream = sim.last.sent.split(b"\n\n")
    # the usage event the client did not ask for is left out; every other event's bytes pass unchanged
    assert body == b"\n\n".join(e for e in upstream if b'"usage"' not in e)
    row = _row(sluice, rid)
    assert (row["prompt_tokens"], row["completion_tokens"], row["usage_source"]) == (5, 5, "reported")

    chunks = list(client.completions.create(model="gpt-4o", prompt=["a", "b"], stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Once upon a time."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_legacy_completion_from_the_simulated_model(client: OpenAI) -> None:
    done = client.completions.create(model="sim-local", prompt=["one", "two"], max_tokens=3, n=2)
    assert [c.text for c in done.choices] == ["Hi from the "] * 4 and done.choices[0].finish_reason == "length"
    assert done.usage is not None and done.usage.completion_tokens == 12
    text = "".join(c.choices[0].text for c in client.completions.create(model="sim-local", prompt="x",
                                                                         stream=True) if c.choices)
    assert text == "Hi from the local simulated model, word by word."


@pytest.mark.parametrize(("endpoint", "call", "param"), [
    ("embeddings", {"input": ""}, "input"),
    ("embeddings", {"input": [1, -2]}, "input[1]"),
    ("embeddings", {"input": "x", "dimensions": 0}, "dimensions"),
    ("embeddings", {"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ("embeddings", {"input": [["a"]]}, "input[0]"),
    ("completions", {"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ("completions", {"prompt": "x", "n": 500}, "n"),
    ("completions", {"prompt": "x", "temperature": 3}, "temperature"),
    ("completions", {"prompt": "x", "n": 3, "best_of": 2}, "best_of"),
    ("completions", {"prompt": {"a": 1}}, "prompt"),
    ("completions", {"prompt": "x", "stream": "yes"}, "stream"),
])
def test_bad_input_is_a_400_naming_the_parameter(client: OpenAI, sim: ThreadedSim, endpoint: str,
                                                 call: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.post(f"/{endpoint}", body={"model": "gpt-4o", **call}, cast_to=object)
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == param and body["type"] == "invalid_request_error"
    assert err.value.response.headers.get("x-request-id")
    assert not sim.requests  # nothing reached the upstream
