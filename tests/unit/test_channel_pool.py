"""Key pools: weighted rotation, which upstream errors disable or cool a key, and masking."""

from __future__ import annotations

from collections import Counter

from sluice.channels.health import classify, scrub
from sluice.channels.pool import ACTIVE, DISABLED_AUTO, KeyPool, UpstreamKey, fingerprint, mask
from sluice.clock import ManualClock
from sluice.errors import UpstreamError, error_for_upstream_status


def test_rotation_follows_weights_and_skips_unusable_keys() -> None:
    a, b, c = UpstreamKey("sk-aaaaaaaaaaaa1", 3), UpstreamKey("sk-bbbbbbbbbbbb2", 1), UpstreamKey("sk-cccccccccc3")
    pool = KeyPool("p", [a, b, c])
    firsts = Counter(pool.order()[0].id for _ in range(50))
    assert firsts == {a.id: 30, b.id: 10, c.id: 10}
    assert pool.set_state(c, DISABLED_AUTO, "auth", 5.0)
    orders = [pool.order() for _ in range(8)]
    assert all(c not in o and len(o) == 2 for o in orders)
    assert not pool.set_state(c, ACTIVE, None, 4.0)  # an older shared record does not undo a newer one
    assert c.state == DISABLED_AUTO


def test_every_usable_key_is_offered_once_per_call() -> None:
    keys = [UpstreamKey(f"sk-key-number-{i:04d}") for i in range(4)]
    pool = KeyPool("p", keys)
    for _ in range(6):
        assert sorted(k.id for k in pool.order()) == sorted(k.id for k in keys)


def test_classify_disables_auth_and_quota_cools_rate_limits_and_ignores_the_rest() -> None:
    auth = classify(error_for_upstream_status(401, "Incorrect API key provided"))
    assert auth is not None and auth.action == "disable" and auth.reason.startswith("auth")
    forbidden = classify(error_for_upstream_status(403, "forbidden"))
    assert forbidden is not None and forbidden.action == "disable"
    quota = classify(error_for_upstream_status(429, "You exceeded your current quota", type="insufficient_quota",
                                               code="insufficient_quota"))
    assert quota is not None and quota.action == "disable" and quota.reason.startswith("quota")
    rate = classify(error_for_upstream_status(429, "slow down", retry_after=7.0))
    assert rate is not None and rate.action == "cool" and rate.seconds == 7.0
    gemini = classify(error_for_upstream_status(400, "API key not valid. Please pass a valid API key."))
    assert gemini is not None and gemini.action == "disable" and gemini.reason.startswith("auth")
    assert classify(error_for_upstream_status(400, "bad request")) is None
    assert classify(UpstreamError("reset")) is None


def test_secrets_never_shown() -> None:
    secret = "sk-proj-0123456789abcdef"
    assert secret not in mask(secret) and mask(secret).endswith("cdef")
    assert mask("short") == "****"
    assert secret not in fingerprint(secret)
    assert scrub(f"bad key {secret}!", [secret]) == "bad key ****!"


def test_upstream_messages_echoing_a_key_are_scrubbed() -> None:
    secret = "sk-echoed-by-upstream-0001"
    pool = KeyPool("p", [UpstreamKey(secret)])
    key = pool.keys[0]
    pool.failed(key, f"Incorrect API key provided: {secret}")
    pool.cool(key, 5.0, f"slow down {secret}")
    assert key.last_error is not None and secret not in key.last_error and secret not in str(key.public())


def test_a_key_at_its_rpm_is_left_out_until_the_minute_allows_more() -> None:
    clock = ManualClock()
    a, b = UpstreamKey("sk-aaaaaaaaaaaa1", 5, rpm=2), UpstreamKey("sk-bbbbbbbbbbbb2", 1)
    pool = KeyPool("p", [a, b], clock)
    now = clock.monotonic()
    assert a.take(now) and a.take(now + 0.001)          # a burst of up to rpm
    assert not a.take(now + 0.002) and not a.has_room(now + 0.002)
    assert [k.id for k in pool.order()] == [b.id]        # the pool's clock: a is full this minute
    assert a.has_room(now + 30.0)                        # one more every 60/rpm seconds
    assert b.take(now) and b.has_room(now)               # no rpm: never full
    clock.advance(30.0)
    assert pool.order()[0] is a                          # its room is back on the pool's clock
    assert a.public()["rpm"] == 2 and b.public()["rpm"] is None


def test_a_session_keeps_its_key_on_every_instance_and_leaves_the_rotation_alone() -> None:
    secrets = [f"sk-session-key-{i:04d}" for i in range(3)]
    one = KeyPool("p", [UpstreamKey(secrets[0], 2), UpstreamKey(secrets[1]), UpstreamKey(secrets[2])])
    two = KeyPool("p", [UpstreamKey(secrets[2]), UpstreamKey(secrets[0], 2), UpstreamKey(secrets[1])])
    sessions = [f"s-{i}" for i in range(6000)]
    firsts = {s: one.order(s)[0].id for s in sessions}
    assert all([k.id for k in one.order(s)] == [k.id for k in two.order(s)] for s in sessions[:300])
    shares = Counter(firsts.values())
    assert abs(shares[fingerprint(secrets[0])] / len(sessions) - 0.5) < 0.03  # weight 2 of 4
    assert abs(shares[fingerprint(secrets[1])] / len(sessions) - 0.25) < 0.03
    # the rotation of requests without a session is where it was: sessions took no credit from it
    assert [k.current for k in one.keys] == [0, 0, 0]
    assert Counter(one.order()[0].id for _ in range(40)) == {fingerprint(secrets[0]): 20,
                                                             fingerprint(secrets[1]): 10,
                                                             fingerprint(secrets[2]): 10}


def test_a_sessions_key_out_of_use_sends_it_to_its_next_key_and_it_comes_back() -> None:
    clock = ManualClock()
    keys = [UpstreamKey(f"sk-session-key-{i:04d}") for i in range(3)]
    pool = KeyPool("p", keys, clock)
    first, second, third = pool.order("s-1")
    pool.cool(first, 10.0, "slow down")
    assert pool.order("s-1") == [second, third]
    clock.advance(10.0)
    assert pool.order("s-1")[0] is first
