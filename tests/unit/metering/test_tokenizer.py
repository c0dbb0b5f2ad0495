"""Token counting: a BPE file built here in tmp_path (nothing downloaded), and the estimator fallback."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import tiktoken

from sluice.config import ConfigError
from sluice.metering.tokenizer import CL100K_PAT_STR, TiktokenCounter, make_counter_factory
from sluice.metering.tokens import TokenCounter, estimate_text

MERGES = [b"he", b"ll", b"llo", b"hello", b" hello", b"wo", b"rl", b"rld", b"world", b" world"]
TEXT = "hello world, hello hello!  well hell\nworld wo rld héllo 12345"


def _ranks() -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    for i, token in enumerate(MERGES):
        ranks[token] = 256 + i
    return ranks


def _write(path: Path, ranks: dict[bytes, int]) -> str:
    path.write_bytes(b"".join(base64.b64encode(t) + b" " + str(r).encode() + b"\n" for t, r in ranks.items()))
    return str(path)


@pytest.fixture
def bpe_file(tmp_path: Path) -> str:
    return _write(tmp_path / "tiny.tiktoken", _ranks())


def _reference() -> tiktoken.Encoding:
    return tiktoken.Encoding(name="ref", pat_str=CL100K_PAT_STR, mergeable_ranks=_ranks(), special_tokens={})


def test_counts_like_whole_text_when_cut_at_word_boundaries(bpe_file: str) -> None:
    counter = make_counter_factory(bpe_file)()
    assert isinstance(counter, TiktokenCounter) and counter.method == "tiktoken"
    pieces = re.findall(r"\s*\S+\s*?", TEXT)  # words with their leading whitespace, as deltas come
    assert "".join(pieces) == TEXT and len(pieces) > 5
    for piece in pieces:
        counter.feed(piece)
    counter.feed("")
    expected = len(_reference().encode_ordinary(TEXT))
    assert counter.tokens == expected
    assert expected < len(TEXT.encode())  # the file's merges were applied


def test_piece_boundary_inside_a_word_may_cost_a_token(bpe_file: str) -> None:
    whole, cut = make_counter_factory(bpe_file)(), make_counter_factory(bpe_file)()
    whole.feed("hello")
    cut.feed("hel")
    cut.feed("lo")
    assert (whole.tokens, cut.tokens) == (1, 4)  # he|l + l|o: per-piece counting loses merges across the cut


def test_file_is_read_once_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "once.tiktoken"
    factory = make_counter_factory(_write(path, _ranks()))
    path.unlink()  # counters made later still work: the encoding was loaded when the factory was made
    a, b = factory(), factory()
    a.feed("hello")
    b.feed(" world world")
    assert (a.tokens, b.tokens) == (1, 2)


def test_without_a_file_the_estimator_is_used() -> None:
    counter = make_counter_factory(None)()
    assert isinstance(counter, TokenCounter) and counter.method == "estimate"
    counter.feed(TEXT)
    assert counter.tokens == estimate_text(TEXT)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.tiktoken")
    with pytest.raises(ConfigError, match=r"nope\.tiktoken.*no such file"):
        make_counter_factory(missing)


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"aGU= 256\nnot-base64! 3\n", "line 2"),
    (b"aGU= 256 7\n", "line 1"),
    (b"aGU= x\n", "line 1"),
    (b"aGU= 256\n", "single-byte tokens are missing"),
])
def test_malformed_file_is_a_config_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        make_counter_factory(str(path))


def test_duplicate_rank_is_a_config_error(tmp_path: Path) -> None:
    ranks = _ranks()
    ranks[b"he"] = 0
    with pytest.raises(ConfigError, match="share a rank"):
        make_counter_factory(_write(tmp_path / "dup.tiktoken", ranks))


def test_directory_and_url_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directory"):
        make_counter_factory(str(tmp_path))
    with pytest.raises(ConfigError, match="local file"):
        make_counter_factory("https://example.invalid/cl100k_base.tiktoken")
