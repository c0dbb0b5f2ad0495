"""One health probe: the smallest chat request, with one key, timed; the answer scrubbed of our keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from sluice.channels.health import scrub
from sluice.clock import SYSTEM_CLOCK, Clock
from sluice.errors import SluiceError
from sluice.providers.base import Call, Provider, Timeouts
from sluice.schema.chat import ChatRequest

# a probe must cost little and come back soon, whatever the provider's own timeouts allow
PROBE_TIMEOUTS = Timeouts(connect=10.0, first_byte=30.0, idle=30.0, total=60.0)


@dataclass(slots=True)
class ProbeResult:
    ok: bool
    status: int
    latency_ms: float
    answer: str
    error: SluiceError | None = None

    def public(self, provider: str, key_id: str | None, model: str) -> dict[str, Any]:
        return {"provider": provider, "key_id": key_id, "model": model, "ok": self.ok, "status": self.status,
                "latency_ms": round(self.latency_ms, 1), "answer": self.answer}


async def probe(provider: Provider, model: str, secret: str | None, secrets: list[str],
                clock: Clock = SYSTEM_CLOCK) -> ProbeResult:
    """Ask `model` for one token with `secret` (None: the provider's own key), timed on `clock`. Never raises
    SluiceError."""
    req = ChatRequest({"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1})
    call = Call(req, model, "probe_" + uuid.uuid4().hex, PROBE_TIMEOUTS, api_key=secret)
    start = clock.monotonic()
    try:
        done = await provider.complete(call)
    except SluiceError as exc:
        ms = (clock.monotonic() - start) * 1000
        return ProbeResult(False, exc.status, ms, scrub(orjson.dumps(exc.to_dict()).decode(), secrets), exc)
    ms = (clock.monotonic() - start) * 1000
    return ProbeResult(True, 200, ms, scrub(done.text or done.body.decode("utf-8", "replace"), secrets))
