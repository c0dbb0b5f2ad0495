"""Session affinity through routing: the session's pinned target goes first, a cooled-down pin falls back to
the weighted order and the pin moves to what served, the map stays bounded; and where a session id comes from."""

from __future__ import annotations

import random

import pytest

from sluice.errors import UpstreamError
from sluice.routing.affinity import MAX_SESSION_ID, SessionAffinity, session_of
from sluice.routing.fallback import Cooldowns, with_failover
from sluice.routing.table import Route, Target
from sluice.upstream import Timeouts

A = Target("a", "m-a", 1, 0, Timeouts())
B = Target("b", "m-b", 1, 0, Timeouts())
C = Target("c", "m-c", 1, 0, Timeouts())
ROUTE = Route("pair", "sluice", [[A, B, C]])


def test_a_pinned_session_goes_first_whatever_the_weighted_pick() -> None:
    aff = SessionAffinity()
    aff.remember("pair", "s1", "b", "m-b")
    rng = random.Random(7)
    for _ in range(50):
        assert aff.prefer("pair", "s1", ROUTE.order(rng))[0] == B
    # other sessions and other models are not affected
    firsts = {aff.prefer("pair", "s2", ROUTE.order(rng))[0].provider for _ in range(50)}
    assert firsts == {"a", "b", "c"}  # seeded: deterministic
    assert aff.prefer("other", "s1", [A, C]) == [A, C]


def test_no_session_and_a_pin_no_longer_in_the_route_keep_the_order() -> None:
    aff = SessionAffinity()
    assert aff.prefer("pair", None, [C, A, B]) == [C, A, B]
    aff.remember("pair", "s1", "gone", "m-x")
    assert aff.prefer("pair", "s1", [C, A, B]) == [C, A, B]


async def test_a_cooling_pin_falls_back_and_the_session_moves_with_it() -> None:
    aff, cool = SessionAffinity(), Cooldowns(threshold=1, seconds=60)
    aff.remember("pair", "s1", "a", "m-a")
    cool.failed(A)  # A is cooling down
    served: list[Target] = []

    async def attempt(t: Target, n: int, timeouts: Timeouts) -> str:
        served.append(t)
        return t.provider

    order = aff.prefer("pair", "s1", [A, B, C])
    assert order[0] == A
    got = await with_failover(order, attempt, cool)
    assert got in ("b", "c") and [t.provider for t in served] == [got]
    aff.remember("pair", "s1", got, f"m-{got}")
    assert aff.prefer("pair", "s1", [A, B, C])[0].provider == got


async def test_a_failing_pin_is_replaced_by_the_target_that_answered() -> None:
    aff, cool = SessionAffinity(), Cooldowns()
    aff.remember("pair", "s1", "a", "m-a")

    async def attempt(t: Target, n: int, timeouts: Timeouts) -> str:
        if t == A:
            raise UpstreamError("down")
        return t.provider

    got = await with_failover(aff.prefer("pair", "s1", [A, B, C]), attempt, cool)
    assert got == "b"
    aff.remember("pair", "s1", "b", "m-b")
    assert aff.prefer("pair", "s1", [A, C, B])[0] == B


def test_the_map_is_bounded_least_recently_used_first() -> None:
    aff = SessionAffinity(max_sessions=3)
    for s in ("s1", "s2", "s3"):
        aff.remember("pair", s, "b", "m-b")
    aff.prefer("pair", "s1", [A, B])  # s1 used again: s2 is now the oldest
    aff.remember("pair", "s4", "c", "m-c")
    assert len(aff) == 3
    assert aff.prefer("pair", "s2", [A, B]) == [A, B]
    assert aff.prefer("pair", "s1", [A, B]) == [B, A]


@pytest.mark.parametrize(("body", "header", "expected"), [
    ({}, b"cc-session-1", "cc-session-1"),
    ({"session_id": "body-sess"}, b"hdr", "hdr"),
    ({"session_id": "body-sess", "prompt_cache_key": "pck"}, None, "body-sess"),
    ({"prompt_cache_key": "pck"}, None, "pck"),
    ({"metadata": {"user_id": "user_abc_account_123_session_5f0e-42"}}, None, "5f0e-42"),
    ({"user": "user_abc_account__session_77"}, None, "77"),
    ({"metadata": {"user_id": '{"device_id":"d","session_id":"js-1"}'}}, None, "js-1"),
    ({"user": "alice"}, None, None),
    ({"user": "{not json"}, None, None),
    ({"session_id": 5}, None, None),
    ({"session_id": "  "}, None, None),
])
def test_where_the_session_id_comes_from(body: dict[str, object], header: bytes | None,
                                         expected: str | None) -> None:
    assert session_of(body, header) == expected


def test_a_long_session_id_is_cut() -> None:
    assert session_of({"session_id": "x" * 10_000}) == "x" * MAX_SESSION_ID
