"""Session affinity through routing: rendezvous hashing gives a session the same order on every instance
(and in every process), holds the weights over many sessions, moves only a removed target's sessions, and
falls back to the session's next target while its first cools down; and where a session id comes from."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest

from sluice.clock import ManualClock
from sluice.errors import UpstreamError
from sluice.routing.affinity import MAX_SESSION_ID, session_of, session_order
from sluice.routing.fallback import Cooldowns, with_failover
from sluice.routing.table import Route, Target
from sluice.upstream import Timeouts

A = Target("a", "m-a", 2, 0, Timeouts())
B = Target("b", "m-b", 1, 0, Timeouts())
C = Target("c", "m-c", 1, 0, Timeouts())
BACKUP = Target("d", "m-d", 1, 1, Timeouts())
ROUTE = Route("trio", "sluice", [[A, B, C], [BACKUP]])
SESSIONS = [f"session-{i}" for i in range(10_000)]


def _firsts(route: Route) -> dict[str, str]:
    return {s: session_order(route, s)[0].provider for s in SESSIONS}


def test_a_session_gets_the_same_order_from_every_instance() -> None:
    # two tables built separately, one with the targets declared in another order: the same order per session
    one = Route("trio", "sluice", [[A, B, C], [BACKUP]])
    two = Route("trio", "sluice", [[C, A, B], [BACKUP]])
    for s in SESSIONS[:200]:
        order = session_order(one, s)
        assert order == session_order(two, s) == session_order(one, s)
        assert sorted(t.provider for t in order[:3]) == ["a", "b", "c"] and order[3] == BACKUP  # tiers kept
    assert len({session_order(ROUTE, s)[0].provider for s in SESSIONS[:200]}) == 3
    # the same sessions under another public model are spread afresh
    other = Route("other", "sluice", [[A, B, C]])
    assert sum(session_order(other, s)[0] != session_order(ROUTE, s)[0] for s in SESSIONS[:200]) > 50


def test_the_order_does_not_depend_on_the_process() -> None:
    """Another interpreter with another string-hash seed (as another instance has) ranks alike."""
    code = ("from tests.unit.routing.test_affinity import ROUTE, SESSIONS; from sluice.routing.affinity import "
            "session_order; print(','.join(session_order(ROUTE, s)[0].provider for s in SESSIONS[:300]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ",".join(session_order(ROUTE, s)[0].provider for s in SESSIONS[:300])


def test_weights_hold_over_many_sessions() -> None:
    shares = Counter(_firsts(ROUTE).values())
    assert set(shares) == {"a", "b", "c"}  # the backup tier is never first while tier 0 has targets
    n = len(SESSIONS)
    assert abs(shares["a"] / n - 0.5) < 0.02 and abs(shares["b"] / n - 0.25) < 0.02
    assert abs(shares["c"] / n - 0.25) < 0.02
    zero = Route("z", "sluice", [[A, replace(B, weight=0)]])
    assert all(session_order(zero, s) == [A] for s in SESSIONS[:100])  # weight 0: out, as in the weighted pick


def test_removing_a_target_moves_only_its_sessions_and_adding_one_takes_only_its_share() -> None:
    before = _firsts(ROUTE)
    without_c = _firsts(Route("trio", "sluice", [[A, B], [BACKUP]]))
    moved = {s for s in SESSIONS if before[s] != without_c[s]}
    assert moved == {s for s in SESSIONS if before[s] == "c"}
    e = Target("e", "m-e", 1, 0, Timeouts())
    with_e = _firsts(Route("trio", "sluice", [[A, B, C, e], [BACKUP]]))
    changed = [s for s in SESSIONS if before[s] != with_e[s]]
    assert all(with_e[s] == "e" for s in changed)
    assert abs(len(changed) / len(SESSIONS) - 0.2) < 0.02  # weight 1 of 5


async def test_a_cooling_first_choice_falls_back_to_the_sessions_next_and_comes_back() -> None:
    cool = Cooldowns(threshold=1, seconds=60, clock=(clock := ManualClock()))
    session = next(s for s in SESSIONS if session_order(ROUTE, s)[0] == A)
    order = session_order(ROUTE, session)
    served: list[Target] = []

    async def attempt(t: Target, n: int, timeouts: Timeouts) -> str:
        served.append(t)
        return t.provider

    cool.failed(A)
    assert await with_failover(session_order(ROUTE, session), attempt, cool) == order[1].provider
    clock.advance(60)
    assert await with_failover(session_order(ROUTE, session), attempt, cool) == "a"  # its cache's home again
    assert served == [order[1], A]


async def test_a_failing_first_choice_is_followed_by_the_same_next_target_everywhere() -> None:
    session = next(s for s in SESSIONS if session_order(ROUTE, s)[0] == A)

    async def attempt(t: Target, n: int, timeouts: Timeouts) -> str:
        if t == A:
            raise UpstreamError("down")
        return t.provider

    got = {await with_failover(session_order(ROUTE, session), attempt, Cooldowns()) for _ in range(5)}
    assert got == {session_order(ROUTE, session)[1].provider}


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
