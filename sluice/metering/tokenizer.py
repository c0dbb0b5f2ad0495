"""Token counting for replies whose upstream reports no usage: a tiktoken BPE vocabulary read from a
local file when one is configured, otherwise the character estimator of `tokens.py`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from sluice.config import ConfigError
from sluice.metering.tokens import TokenCounter

if TYPE_CHECKING:
    import tiktoken

# cl100k_base's pre-tokenisation pattern (tiktoken_ext/openai_public.py).
CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]"""
    r"""|\s+(?!\S)|\s"""
)


class Counter(Protocol):
    """Fed the reply's text piece by piece as it streams; `tokens` is the count so far: a sum over the
    pieces, so the order they are fed in does not change it (a stream counts some pieces late)."""

    method: str  # "tiktoken" or "estimate": recorded with the usage so a reader knows how it was got

    def feed(self, text: str) -> None: ...

    @property
    def tokens(self) -> int: ...


class TiktokenCounter:
    """Encodes each piece as it arrives and keeps only the running total (O(1) memory per stream).

    Counting piece by piece can differ from encoding the whole text by about a token per piece
    boundary that falls inside a word or a run of spaces or digits (a merge across the cut is lost);
    upstream deltas mostly cut at word boundaries, where the counts agree.
    """

    __slots__ = ("_encoding", "_tokens")

    method = "tiktoken"

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding
        self._tokens = 0

    def feed(self, text: str) -> None:
        if text:
            self._tokens += len(self._encoding.encode_ordinary(text))

    @property
    def tokens(self) -> int:
        return self._tokens


def make_counter_factory(encoding_file: str | None) -> Callable[[], Counter]:
    """A factory of per-reply counters. With `encoding_file`, a local .tiktoken file (lines of
    "<base64 token> <rank>") is read now, once, and its encoding shared by every counter made; without
    one, counters are the `TokenCounter` estimator. Raises ConfigError if the file is unusable."""
    if encoding_file is None:
        return TokenCounter
    encoding = load_encoding(encoding_file)

    def factory() -> Counter:
        return TiktokenCounter(encoding)

    return factory


def load_encoding(encoding_file: str) -> tiktoken.Encoding:
    """Build a cl100k-style encoding from a local BPE file; no special tokens, nothing fetched.

    The file is parsed here rather than by `tiktoken.load.load_tiktoken_bpe`, which would fetch a
    path containing "://" over the network and keep a copy in $TMPDIR/data-gym-cache keyed by the path
    (a file later replaced at the same path would go on being served from that copy).
    """
    where = f"tokenizer encoding file {encoding_file!r}"
    try:
        import tiktoken
    except ImportError:
        raise ConfigError(f"{where}: counting with a BPE file needs tiktoken (pip install 'sluice[tokenizer]')"
                          ) from None
    if "://" in encoding_file:
        raise ConfigError(f"{where}: must be a path to a local file, not a URL (nothing is downloaded)")
    path = Path(encoding_file).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory, not a .tiktoken file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    ranks = _parse_bpe(data, where)
    try:
        return tiktoken.Encoding(name=f"file:{path.name}", pat_str=CL100K_PAT_STR, mergeable_ranks=ranks,
                                 special_tokens={})
    except Exception as exc:  # the Rust core's complaint, whatever its type
        raise ConfigError(f"{where}: not a usable BPE vocabulary: {exc}") from None


def _parse_bpe(data: bytes, where: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except ValueError:  # binascii.Error is one
            raise ConfigError(f"{where}: line {lineno} is not '<base64 token> <rank>'") from None
        if token in ranks:
            raise ConfigError(f"{where}: line {lineno}: token {token!r} appears twice")
        ranks[token] = rank
    if not ranks:
        raise ConfigError(f"{where}: the file is empty")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ConfigError(f"{where}: {len(missing)} of the 256 single-byte tokens are missing "
                          "(every byte needs a rank, or some text could not be encoded)")
    if len(set(ranks.values())) != len(ranks):
        raise ConfigError(f"{where}: two tokens share a rank")
    return ranks


def count_request(body: Mapping[str, Any], counter: Counter) -> int:
    """A local count of a chat request's input: message text, tool calls and tool definitions, plus
    OpenAI's per-message overhead (3) and reply priming (3); media parts count a floor of 85 each."""
    n = 3
    for m in body.get("messages") or []:
        n += 3
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if isinstance(part.get("text"), str):
                counter.feed(part["text"])
            elif part.get("type") in ("image_url", "input_audio", "file"):
                n += 85
        for call in m.get("tool_calls") or []:
            counter.feed(call["function"]["name"] + call["function"]["arguments"])
    if body.get("tools"):
        counter.feed(orjson.dumps(body["tools"]).decode())
    return n + counter.tokens
