"""Weighted rendezvous (highest-random-weight) hashing: every process that knows the same candidates ranks
them the same way for a seed, with no state shared. A candidate of weight w comes first for a share
w / (sum of weights) of the seeds, and adding or removing one candidate moves only the seeds it wins."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

_TOP53 = 11          # a 64-bit digest's top 53 bits fill a double's mantissa exactly
_UNIT = 2.0 ** -53


def score(seed: bytes, ident: str, weight: float) -> float:
    """The candidate's draw for `seed`: -weight / ln(u), u uniform in (0, 1) from a stable hash of (seed,
    ident). The highest draw wins with probability weight / total (-ln(u) / weight is exponential with
    rate `weight`, and the least of independent exponentials is each one's rate over their sum)."""
    digest = hashlib.blake2b(ident.encode(), digest_size=8, key=seed[:64]).digest()
    u = ((int.from_bytes(digest, "big") >> _TOP53) | 1) * _UNIT  # odd numerator: never 0, never 1
    return -weight / math.log(u)


def ranked(seed: str, items: Sequence[T], ident: Callable[[T], str], weight: Callable[[T], float]) -> list[T]:
    """`items` from the highest draw to the lowest: the first is the seed's choice, the rest its fallbacks
    in an order every process agrees on. Items of weight 0 (or less) come last."""
    if len(items) <= 1:
        return list(items)
    key = hashlib.blake2b(seed.encode(), digest_size=32).digest()  # any seed length, one key size
    return sorted(items, key=lambda it: score(key, ident(it), max(0.0, weight(it))), reverse=True)
