"""`POST /v1/responses` through a real Sluice with the official `openai` client: plain, `stream=True` and
`responses.stream()` against the OpenAI, Anthropic and Gemini simulators, each comparing what the client
reassembles with what the simulator sent; tool round trips, dropped fields, failures after the 200."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest
import pytest_asyncio

from tests.e2e.cluster import ADMIN_TOKEN
from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import ledger_rows, model, provider
from tests.sim.anthropic_sim import AnthropicSim, Reply, answer, stream_events
from tests.sim.gemini_sim import GeminiSim, Script, text_events
from tests.sim.openai_sim import Fault, OpenAISim, chat_events, fixture_bytes

pytestmark = pytest.mark.asyncio(loop_scope="module")  # the tests share the module's server and simulators

FIX = Path(__file__).resolve().parents[1] / "fixtures"
TOOLS: Any = [{"type": "function", "name": "get_weather", "description": "weather in a city",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
              {"type": "custom", "name": "apply_patch", "description": "apply a patch"}]


@dataclass
class Gateway:
    """One test's view of the module's server and simulators: a key of its own, so the ledger rows it
    reads are its own; the simulators are reset before it runs."""

    s: SluiceProcess
    oai: OpenAISim
    anth: AnthropicSim
    gem: GeminiSim
    key_id: str
    key: str
    closers: list[Callable[[], Awaitable[None]]]

    def client(self) -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(base_url=self.s.base_url, api_key=self.key, max_retries=0)
        self.closers.append(client.close)
        return client

    async def rows(self, n: int) -> list[dict[str, Any]]:
        """This test's ledger rows once there are n (a streamed record is durable before the last byte; this
        polls only for plain replies, whose record may land just after the reply)."""
        for _ in range(200):
            rows = [r for r in ledger_rows(self.s.db) if r["key_id"] == self.key_id]
            if len(rows) >= n:
                return rows
            await asyncio.sleep(0.05)
        raise AssertionError(f"the ledger never held {n} rows")


def _config(oai: str, anth: str, gem: str) -> dict[str, Any]:
    return {"providers": [provider("oai", "openai", oai, api_key="sk-oai-upstream"),
                          provider("oai-native", "openai", oai, api_key="sk-oai-upstream", apis=["chat", "responses"]),
                          provider("anth", "anthropic", anth, api_key="sk-ant-upstream"),
                          provider("gem", "gemini", gem, api_key="gem-test")],
            "models": [model("gpt", ("oai", "gpt-up")), model("gpt-native", ("oai-native", "gpt-5")),
                       model("claude", ("anth", "claude-sonnet-4-5")), model("gemini", ("gem", "gemini-2.5-flash"))]}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[tuple[SluiceProcess, OpenAISim, AnthropicSim, GeminiSim]]:
    """One Sluice and its three upstream simulators for the module: each test has its own key (`g`), and no
    test makes a target fail before its first byte, so no cool-down carries over."""
    async with OpenAISim() as oai, AnthropicSim() as anth, GeminiSim() as gem, SluiceProcess(
            tmp_path_factory.mktemp("responses"), _config(oai.base_url, anth.base_url, gem.base_url),
            extra_env={"SLUICE_ADMIN_TOKEN": ADMIN_TOKEN}) as s:
        yield s, oai, anth, gem


@pytest_asyncio.fixture(loop_scope="module")
async def g(shared: tuple[SluiceProcess, OpenAISim, AnthropicSim, GeminiSim], request: pytest.FixtureRequest
            ) -> AsyncIterator[Gateway]:
    s, oai, anth, gem = shared
    for sim in (oai, anth, gem):
        sim.reset()
    key_id, key = await s.admin_key(request.node.name)
    gw = Gateway(s, oai, anth, gem, key_id, key, [])
    yield gw
    for close in gw.closers:
        await close()


def _script(events: list[bytes]) -> Fault:
    return Fault(script=lambda body: events)


async def _events(g: Gateway, **kw: Any) -> list[Any]:
    stream = await g.client().responses.create(stream=True, **kw)
    return [ev async for ev in stream]


def _lifecycle_ok(events: list[Any]) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    done = [e.item.id for e in events if e.type == "response.output_item.done"]
    assert sorted(added) == sorted(done) and len(set(added)) == len(added)


# --- OpenAI-compatible upstream ----------------------------------------------------------------


async def test_stream_helper_reassembles_text_and_tool_calls(g: Gateway) -> None:
    args = '{"city": "Rome"}'
    sent = chat_events(text="Let me check Rome. 世界", calls=(("call_1", "get_weather", args),
                                                              ("call_2", "apply_patch", '{"input": "*** Begin"}')),
                       usage=(31, 9))
    g.oai.push(_script(sent))
    async with g.client().responses.stream(model="gpt", input="weather?", tools=TOOLS) as stream:
        events = [ev async for ev in stream]
        final = await stream.get_final_response()
    _lifecycle_ok(events)
    assert final.output_text == "Let me check Rome. 世界"
    kinds = [(o.type, getattr(o, "name", None)) for o in final.output]
    assert kinds == [("message", None), ("function_call", "get_weather"), ("custom_tool_call", "apply_patch")]
    call, patch = final.output[1], final.output[2]
    assert call.type == "function_call" and call.arguments == args and call.call_id == "call_1"
    assert patch.type == "custom_tool_call" and patch.input == "*** Begin" and patch.call_id == "call_2"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == args
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (31, 9)
    # the upstream got a chat request; the freeform tool travels as a function with one string argument
    up = g.oai.last.body
    assert up["model"] == "gpt-up" and up["messages"] == [{"role": "user", "content": "weather?"}]
    assert [t["function"]["name"] for t in up["tools"]] == ["get_weather", "apply_patch"]
    assert up["tools"][1]["function"]["parameters"]["required"] == ["input"]
    row = (await g.rows(1))[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (31, 9, 200)


async def test_create_plain_and_round_trip_of_tool_outputs(g: Gateway) -> None:
    items: Any = [{"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                  {"type": "function_call", "call_id": "call_1", "name": "get_weather",
                   "arguments": '{"city":"Rome"}'},
                  {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                  {"type": "custom_tool_call", "call_id": "call_2", "name": "apply_patch", "input": "diff"},
                  {"type": "custom_tool_call_output", "call_id": "call_2", "output": "Done!"}]
    resp = await g.client().responses.create(
        model="gpt", input=items, instructions="Be brief.", tools=TOOLS, store=False,
        reasoning={"effort": "high", "summary": "auto"}, include=["reasoning.encrypted_content"],
        prompt_cache_key="session-1", max_output_tokens=300)
    text = json.loads(fixture_bytes("text.json"))["choices"][0]["message"]["content"]
    assert resp.output_text == text and resp.status == "completed" and resp.id.startswith("resp_")
    assert resp.usage is not None and resp.usage.input_tokens == 14 and resp.usage.total_tokens == 20
    up = g.oai.last.body
    assert up["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                               "arguments": '{"city":"Rome"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_2", "type": "function", "function": {"name": "apply_patch",
                                                               "arguments": '{"input":"diff"}'}}]},
        {"role": "tool", "tool_call_id": "call_2", "content": "Done!"}]
    assert up["reasoning_effort"] == "high" and up["max_completion_tokens"] == 300
    for dropped in ("reasoning", "include", "store", "prompt_cache_key", "instructions", "input"):
        assert dropped not in up


async def test_usage_the_upstream_did_not_report_is_the_ledger_estimate(g: Gateway) -> None:
    g.oai.push(Fault(fixture="no_usage"))
    events = await _events(g, model="gpt", input="hi")
    _lifecycle_ok(events)
    use = events[-1].response.usage
    row = (await g.rows(1))[0]
    assert row["usage_source"] == "estimated" and use is not None and use.output_tokens > 0
    assert (use.input_tokens, use.output_tokens) == (row["prompt_tokens"], row["completion_tokens"])


async def test_failure_after_the_200_is_response_failed(g: Gateway) -> None:
    g.oai.always(Fault(error_after=2, script=lambda body: chat_events(text="partial answer")))
    events = await _events(g, model="gpt", input="hi")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.failed" and last.response.status == "failed"
    assert last.response.error is not None and last.response.error.message
    assert "response.completed" not in [e.type for e in events]


async def test_stateful_parameters_and_stored_responses_are_clear_errors(g: Gateway) -> None:
    client = g.client()
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model="gpt", input="hi", previous_response_id="resp_123")
    assert bad.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert bad.value.request_id
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.retrieve("resp_123")
    assert "does not store" in missing.value.message
    with pytest.raises(openai.NotFoundError) as compact:
        await client.post("/responses/compact", cast_to=object, body={"model": "gpt", "input": []})
    assert "does not offer POST /v1/responses/compact" in compact.value.message
    async with openai.AsyncOpenAI(base_url=g.s.base_url, api_key="sk-wrong", max_retries=0) as stranger:
        with pytest.raises(openai.AuthenticationError):  # authenticated before anything is said
            await stranger.responses.retrieve("resp_123")
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="nope", input="hi")
    assert g.oai.requests == []


# --- Anthropic and Gemini upstreams ------------------------------------------------------------


async def test_anthropic_thinking_and_tools_become_items(g: Gateway) -> None:
    content = [{"type": "thinking", "thinking": "The user wants weather.", "signature": "sig"},
               {"type": "text", "text": "Checking."},
               {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}},
               {"type": "tool_use", "id": "toolu_2", "name": "apply_patch", "input": {"input": "*** Begin Patch"}}]
    g.anth.replies.append(Reply(sse=stream_events(content, stop_reason="tool_use", model="claude-sonnet-4-5")))
    events = await _events(g, model="claude", input="weather?", tools=TOOLS,
                           reasoning={"effort": "medium", "summary": "detailed"})
    _lifecycle_ok(events)
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call", "custom_tool_call"]
    assert final.output[0].summary[0].text == "The user wants weather."
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "The user wants weather."
    assert final.output[1].content[0].text == "Checking."
    assert json.loads(final.output[2].arguments) == {"city": "Rome"}
    assert final.output[3].input == "*** Begin Patch"
    up = g.anth.received[0].body
    assert up["thinking"]["type"] == "enabled" and "summary" not in json.dumps(up)
    assert {t["name"] for t in up["tools"]} == {"get_weather", "apply_patch"}
    # plain, with the tool's result sent back
    g.anth.replies.append(answer({"model": "claude-sonnet-4-5"}, [{"type": "text", "text": "Sunny."}]))
    resp = await g.client().responses.create(model="claude", input=[
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "toolu_1", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "toolu_1", "output": "sunny"}], tools=TOOLS)
    assert resp.output_text == "Sunny." and resp.usage is not None and resp.usage.output_tokens == 7
    sent = g.anth.received[1].body["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use" and sent[2]["content"][0]["tool_use_id"] == "toolu_1"


async def test_gemini_stream_and_plain(g: Gateway) -> None:
    pieces = ["Ciao ", "dal ", "simulatore"]
    g.gem.push(Script(events=text_events(pieces)))
    async with g.client().responses.stream(model="gemini", input="hi") as stream:
        events = [ev async for ev in stream]
        final = await stream.get_final_response()
    _lifecycle_ok(events)
    assert final.output_text == "".join(pieces)
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == pieces
    resp = await g.client().responses.create(model="gemini", input="hi")
    assert resp.output_text == "Hello from the simulator"
    rows = await g.rows(2)
    assert all(r["provider"] == "gem" and r["status"] == 200 for r in rows)


async def test_gemini_thinking_and_function_call_round_trip(g: Gateway) -> None:
    fixture = (FIX / "gemini" / "thinking_tool.sse").read_bytes()
    g.gem.push(Script(raw=fixture))
    events = await _events(g, model="gemini", input="weather in Paris?", tools=TOOLS)
    _lifecycle_ok(events)
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "message", "function_call"]
    assert final.output[0].summary[0].text.startswith("**Checking the weather**")
    assert final.output[1].content[0].text == "Let me look that up."
    call = final.output[2]
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 45
    resp = await g.client().responses.create(model="gemini", tools=TOOLS, input=[
        {"role": "user", "content": "weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": "get_weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert resp.output_text == "Hello from the simulator"
    contents = g.gem.requests[1].body["contents"]
    assert contents[1]["parts"][0]["functionCall"]["name"] == "get_weather"
    assert contents[2]["parts"][0]["functionResponse"]["name"] == "get_weather"


async def test_raw_stream_is_named_events_without_done(g: Gateway) -> None:
    g.oai.push(_script(chat_events(text="hey")))
    async with aiohttp.ClientSession() as http, http.post(
            g.s.base_url + "/responses", data=orjson.dumps({"model": "gpt", "input": "x", "stream": True}),
            headers={"authorization": f"Bearer {g.key}"}) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = await r.read()
    frames = [f for f in raw.split(b"\n\n") if f and not f.startswith(b":")]
    for f in frames:
        name, data = f.split(b"\n")
        assert json.loads(data.removeprefix(b"data: "))["type"] == name.removeprefix(b"event: ").decode()
    assert b"[DONE]" not in raw


# --- an upstream that speaks Responses: a pass-through ------------------------------------------


async def test_native_passthrough_keeps_bytes_and_meters_usage(g: Gateway) -> None:
    fixture = fixture_bytes("responses_text.sse")
    body = {"model": "gpt-native", "input": "hi", "stream": True, "reasoning": {"summary": "auto"},
            "include": ["reasoning.encrypted_content"], "store": False}
    async with aiohttp.ClientSession() as http, http.post(
            g.s.base_url + "/responses", data=orjson.dumps(body),
            headers={"authorization": f"Bearer {g.key}"}) as r:
        assert r.status == 200
        raw = await r.read()
    assert raw.replace(b": keep-alive\n\n", b"") == fixture
    assert g.oai.last.path == "/v1/responses"
    assert g.oai.last.raw == orjson.dumps({**body, "model": "gpt-5"})  # as sent, only the model rewritten
    async with g.client().responses.stream(model="gpt-native", input="hi") as stream:
        final = await stream.get_final_response()
    assert final.output_text == "Hello 世界 🌍!" and [o.type for o in final.output] == ["reasoning", "message"]
    plain = await g.client().responses.with_raw_response.create(model="gpt-native", input="hi")
    assert plain.content == fixture_bytes("responses_text.json")
    rows = await g.rows(3)
    for row in rows:
        assert row["provider"] == "oai-native" and row["usage_source"] == "reported"
        assert (row["prompt_tokens"], row["completion_tokens"], row["cached_tokens"]) == (21, 75, 8)


async def test_native_stream_cut_short_ends_in_an_error_event(g: Gateway) -> None:
    g.oai.always(Fault(drop_after=4))
    events = await _events(g, model="gpt-native", input="hi")
    assert events[-1].type == "error" and "response.completed" not in [e.type for e in events]
    rows = await g.rows(1)
    assert rows[0]["error_code"]
