"""`one_read`: the chunks made from one upstream read are marked so a writer joins them, the last never,
and an error part-way keeps the chunks made before it."""

from __future__ import annotations

from collections.abc import Iterator

from sluice.errors import UpstreamError
from sluice.providers.base import Chunk, one_read


def _made(n: int, fail: bool = False) -> Iterator[Chunk]:
    for i in range(n):
        yield Chunk(b"%d" % i)
    if fail:
        raise UpstreamError("the upstream reported an error")


def test_each_chunk_but_the_last_of_a_read_is_marked_more() -> None:
    chunks, error = one_read(_made(3))
    assert [(c.payload, c.more) for c in chunks] == [(b"0", True), (b"1", True), (b"2", False)]
    assert error is None
    assert one_read(_made(0)) == ([], None)


def test_an_error_part_way_keeps_the_chunks_before_it_and_none_is_held() -> None:
    chunks, error = one_read(_made(2, fail=True))
    assert [(c.payload, c.more) for c in chunks] == [(b"0", True), (b"1", False)]
    assert isinstance(error, UpstreamError)
