"""The ledger record assembled from the values a request's parts report (`metering/record.py`): who asked,
the ticket, what served, the stream's stats and the outcome; nothing else goes into it."""

from __future__ import annotations

from sluice.dialects.embeddings import EmbeddingsRequest
from sluice.metering.record import DEFERRED_BYTES, Asked, Outcome, Stats, Tokens, assemble, tokens_of
from sluice.metering.ticket import Ticket
from sluice.metering.tokens import TokenCounter, estimate_prompt, estimate_text
from sluice.routing.fallback import NOT_SERVED, Served
from sluice.routing.table import Target
from sluice.schema.chat import ChatRequest
from sluice.schema.usage import Usage
from sluice.storage.base import KeyRecord
from sluice.upstream import Timeouts

KEY = KeyRecord("k1", "mine", "hash", owner="ann")
MSGS = [{"role": "user", "content": "hello there, how are you?"}]
SERVED = Served("a", "up-a", attempts=2, failovers=1)


def asked(request: ChatRequest | None = None, session: str | None = None) -> Asked:
    return Asked("req_1", "chat_completions", KEY, started=100.0, created_at=1_700_000_000.5, request=request,
                 session_id=session)


def chat(**body: object) -> ChatRequest:
    return ChatRequest({"model": "m", "messages": MSGS, **body})


def test_a_served_stream_with_reported_usage() -> None:
    ticket = Ticket("req_1", account_id="acct", notes={"multiplier": "0.5"})
    usage = Usage(prompt_tokens=11, completion_tokens=3, cached_tokens=4)
    rec = assemble(asked(chat(stream=True), "s-1"), ticket, SERVED, Stats(first_at=100.25, usage=usage),
                   Outcome(200), ended=101.0)
    assert (rec.request_id, rec.key_id, rec.model, rec.provider, rec.upstream_model) == ("req_1", "k1", "m", "a",
                                                                                        "up-a")
    assert (rec.stream, rec.status, rec.error_code, rec.disconnected, rec.attempts) == (True, 200, None, False, 2)
    assert (rec.prompt_tokens, rec.completion_tokens, rec.cached_tokens, rec.usage_source) == (11, 3, 4, "reported")
    assert (rec.ttft_ms, rec.duration_ms, rec.created_at) == (250.0, 1000.0, 1_700_000_000.5)
    assert (rec.session_id, rec.account_id, rec.extra) == ("s-1", "acct", {"multiplier": "0.5"})
    assert rec.cost is None  # priced at settlement, from the ticket


def test_without_reported_usage_the_stream_text_is_counted_and_the_prompt_taken_from_the_ticket() -> None:
    counter = TokenCounter()
    counter.feed("one two three four five six seven")
    rec = assemble(asked(chat()), Ticket("req_1", prompt_estimate=42), SERVED,
                   Stats(counter, first_at=100.5), Outcome(200), ended=100.5)
    assert (rec.prompt_tokens, rec.completion_tokens, rec.usage_source) == (42, counter.tokens, "estimated")
    assert counter.tokens > 0 and rec.extra == {"tokenizer": counter.method}


def test_an_estimate_without_a_ticket_estimate_counts_the_prompt_itself() -> None:
    got = tokens_of(Stats(first_at=1.0), Ticket("req_1"), chat())
    assert got == Tokens(estimate_prompt(MSGS), 0, "estimated", "estimate")


def test_nothing_from_an_upstream_is_nothing_to_charge() -> None:
    rec = assemble(asked(chat()), Ticket("req_1", prompt_estimate=42), SERVED, Stats(TokenCounter()),
                   Outcome(503, "upstream_unavailable"), ended=102.0)
    assert (rec.prompt_tokens, rec.completion_tokens, rec.usage_source, rec.ttft_ms) == (None, None, "none", None)
    assert (rec.status, rec.error_code, rec.provider, rec.attempts) == (503, "upstream_unavailable", "a", 2)


def test_a_request_refused_before_the_relay_has_no_model_and_no_upstream() -> None:
    rec = assemble(asked(), Ticket("req_1"), NOT_SERVED, Stats(), Outcome(400, "invalid_request_error"),
                   ended=100.0)
    assert (rec.model, rec.stream, rec.provider, rec.upstream_model, rec.attempts) == ("", False, None, None, 0)
    assert (rec.status, rec.error_code, rec.duration_ms, rec.usage_source) == (400, "invalid_request_error", 0.0,
                                                                               "none")


def test_the_client_leaving_is_in_the_record() -> None:
    rec = assemble(asked(chat(stream=True)), Ticket("req_1"), SERVED, Stats(TokenCounter(), first_at=100.1),
                   Outcome(200, None, disconnected=True), ended=100.2)
    assert rec.disconnected and rec.status == 200 and rec.error_code is None


def test_extra_says_the_endpoint_and_a_clamped_usage_after_the_tickets_notes() -> None:
    req = EmbeddingsRequest({"model": "m", "input": "hi"})
    usage = Usage(prompt_tokens=1, completion_tokens=0, anomaly="prompt_tokens -5 clamped to 0")
    rec = assemble(asked(req), Ticket("req_1", notes={"capped_max_tokens": 10}), SERVED,
                   Stats(first_at=100.0, usage=usage), Outcome(200), ended=100.0)
    assert list(rec.extra.items()) == [("capped_max_tokens", 10), ("endpoint", "embeddings"),
                                       ("usage_anomaly", "prompt_tokens -5 clamped to 0")]
    assert not rec.stream


def test_served_counts_attempts_and_the_moves_between_targets() -> None:
    a, b = (Target(p, "x", 1, 0, Timeouts()) for p in ("a", "b"))
    s = NOT_SERVED.then(a)
    assert (s.provider, s.attempts, s.failovers) == ("a", 1, 0)
    s = s.then(a)      # a retry of the same target is not a failover
    assert (s.attempts, s.failovers) == (2, 0)
    s = s.then(b)
    assert (s.provider, s.upstream_model, s.attempts, s.failovers) == ("b", "x", 3, 1)


def _delta(i: int) -> bytes:
    return b'{"choices":[{"index":0,"delta":{"content":"%d%s"}}]}' % (i, b"x" * 1000)


def test_unread_chunks_are_counted_when_the_count_is_asked_for_oldest_first_past_the_bound() -> None:
    counter = TokenCounter()
    stats = Stats(counter, first_at=100.1)
    kept = DEFERRED_BYTES // len(_delta(10))
    for i in range(10, 10 + kept):
        stats.defer(_delta(i))
    assert counter.tokens == 0  # nothing read yet
    stats.defer(_delta(10 + kept))
    first = counter.tokens
    assert first == estimate_text("10" + "x" * 1000)  # the oldest, only
    stats.defer(_delta(11 + kept))
    assert counter.tokens > first and stats.deferred_size <= DEFERRED_BYTES
    want = TokenCounter()
    for i in range(10, 12 + kept):
        want.feed(f"{i}" + "x" * 1000)
    assert tokens_of(stats, Ticket("req_1", prompt_estimate=5), chat()) == Tokens(5, want.tokens, "estimated",
                                                                                 "estimate")


def test_unread_chunks_are_dropped_once_usage_is_reported() -> None:
    stats = Stats(TokenCounter(), usage=Usage(1, 2))
    stats.defer(_delta(1))
    assert stats.deferred == [] and tokens_of(stats, Ticket("req_1"), chat()) == Tokens(1, 2, "reported")
