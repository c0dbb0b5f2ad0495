"""The Provider protocol: what the relay asks of every upstream, plain and streaming.

Contract:
- `complete(call)` returns a `Completion` whose `body` is an OpenAI `chat.completion` JSON object.
- `stream(call)` returns only once the upstream has answered (status known); failures before that
  raise `SluiceError`s (retryable ones may be retried on another target). The returned `ChunkStream`
  yields OpenAI `chat.completion.chunk` payloads as `Chunk`s, and raises `UpstreamError` when the
  upstream fails mid-stream (reset, EOF without finish, error payload). It never yields `[DONE]`:
  ending the iteration normally means the upstream finished cleanly.
- Providers translate foreign errors into `sluice.errors`; they never import storage, metering,
  auth or http. Every stream is closed by whoever opened it, with `aclose()` in a `finally`.
- A provider that speaks a front door's own wire format (`NativeProvider`) also serves a call that
  carries `native` as a pass-through: the request as sent (model rewritten), the reply's bytes unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sluice.errors import SluiceError
from sluice.schema.chat import ChatRequest
from sluice.schema.usage import Usage
from sluice.upstream import Timeouts

__all__ = ["Call", "Chunk", "ChunkStream", "Completion", "NativeBody", "NativeProvider", "Provider", "Timeouts",
           "serves"]


@dataclass(slots=True)
class NativeBody:
    """An inbound request in a front door's own wire format, for an upstream that speaks it too."""

    dialect: str                 # "anthropic", "responses"
    raw: bytes                   # the body as the client sent it
    model: str                   # the model named in it (rewritten only when the target's differs)
    headers: dict[str, str] = field(default_factory=dict)  # protocol headers to forward (versions, betas)
    # why a target that does not speak this format cannot serve it (e.g. a forced server tool), or None
    unservable: Exception | None = None


@dataclass(slots=True)
class Call:
    """One attempt at one target."""

    request: ChatRequest
    upstream_model: str
    request_id: str
    timeouts: Timeouts = field(default_factory=Timeouts)
    native: NativeBody | None = None
    api_key: str | None = None  # a key from the provider's pool; None: the provider's configured api_key


@dataclass(slots=True)
class Completion:
    """A non-streaming reply. `body` is what the client receives, byte for byte."""

    body: bytes
    usage: Usage | None
    text: str = ""            # the reply text, for estimating usage when the upstream reports none
    model: str | None = None  # the model the upstream says served it
    native: bool = False      # `body` is in the front door's own format (a pass-through), not OpenAI's


class Chunk:
    """One OpenAI chunk on its way to the client.

    `payload` is the chunk's JSON (unframed). `parsed` is its decoded form when the provider has it
    (the relay needs it only to strip `usage` from a chunk that also carries choices). `usage` is set
    on the chunk that reports usage; `usage_only` when that chunk has `choices: []` and nothing else to
    deliver. `text` holds the characters this chunk adds (content, reasoning, tool arguments) so usage
    can be estimated as the stream passes without keeping the whole reply; None when the provider left it
    unread (an OpenAI chunk: `schema.chunk.payload_text` reads it from `payload`, only if the stream ends
    without usage). `more` says that the next chunk came in the same upstream read (it is already here): a
    writer may hold this chunk's frame to write both at once; the last chunk of a read never has it, so
    holding never waits for the network.
    """

    __slots__ = ("finish", "more", "parsed", "payload", "text", "usage", "usage_only")

    def __init__(self, payload: bytes, *, parsed: dict[str, Any] | None = None, usage: Usage | None = None,
                 usage_only: bool = False, finish: bool = False, text: str | None = "") -> None:
        self.payload = payload
        self.parsed = parsed
        self.usage = usage
        self.usage_only = usage_only
        self.finish = finish
        self.text = text
        self.more = False


def one_read(made: Iterable[Chunk]) -> tuple[list[Chunk], SluiceError | None]:
    """The chunks made from one upstream read, each but the last marked `more`, and the error that cut the
    read short, if one did (the chunks made before it still go, ahead of it)."""
    chunks: list[Chunk] = []
    error: SluiceError | None = None
    try:
        chunks.extend(made)
    except SluiceError as exc:
        error = exc
    for chunk in chunks[:-1]:
        chunk.more = True
    return chunks, error


class ChunkStream(Protocol):
    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


class Provider(Protocol):
    name: str

    async def complete(self, call: Call) -> Completion: ...

    async def stream(self, call: Call) -> ChunkStream: ...

    async def aclose(self) -> None: ...


def serves(provider: object, endpoint: str) -> bool:
    """Every provider serves chat completions (`call.request.endpoint == "chat/completions"`); one that
    also passes other OpenAI endpoints through (embeddings, legacy completions) lists them in `endpoints`."""
    return endpoint == "chat/completions" or endpoint in getattr(provider, "endpoints", ())


@runtime_checkable
class NativeProvider(Protocol):
    """A provider that can serve `call.native` requests of its `dialect` as a pass-through.

    `complete_native` returns the upstream's reply body unchanged (`native=True`); `stream_native`
    yields `Chunk`s whose `payload` is a whole SSE frame to forward as is, with `usage` read as it
    passes and `finish` on the last one; `count_tokens` returns the upstream's count reply body.
    """

    name: str
    dialect: str

    async def complete_native(self, call: Call) -> Completion: ...

    async def stream_native(self, call: Call) -> ChunkStream: ...

    async def count_tokens(self, call: Call) -> bytes: ...
