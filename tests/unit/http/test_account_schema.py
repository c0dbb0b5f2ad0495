"""The admin account structs: a name must hold a character that neither Python's strip() (what the handler
does) nor an ECMAScript `\\s` (what a JSON Schema client generates from the pattern) calls white space."""

from __future__ import annotations

import re
import sys

import orjson
import pytest

from sluice.errors import InvalidRequest
from sluice.http.account_schema import Adjustment, GroupFields, NewAccount
from sluice.http.admin_schema import decode
from sluice.http.openapi import OPENAPI

# ECMAScript WhiteSpace and LineTerminator (ECMA-262 12.2, 12.3), the Zs category listed out.
_ECMA_SPACE = "\t\v\f \u00a0\ufeff\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
              "\u202f\u205f\u3000\n\r\u2028\u2029"
_BLANK = sorted({c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()} | set(_ECMA_SPACE))


def test_a_name_of_white_space_alone_is_refused_whichever_definition_made_it() -> None:
    for c in _BLANK:
        with pytest.raises(InvalidRequest) as exc:
            decode(orjson.dumps({"name": c * 3}), NewAccount)
        assert exc.value.param == "name", hex(ord(c))


def test_a_name_with_one_visible_character_is_taken() -> None:
    for c in _BLANK:
        got = decode(orjson.dumps({"name": f"{c}x{c}"}), NewAccount)
        assert got.name == f"{c}x{c}", hex(ord(c))     # taken as sent; the handler strips the ends


def test_the_documented_name_pattern_is_the_one_that_validates() -> None:
    pattern = OPENAPI["components"]["schemas"]["NewAccount"]["properties"]["name"]["pattern"]
    assert [c for c in _BLANK if re.search(pattern, c)] == []


@pytest.mark.parametrize(("body", "param"), [
    (b'{"amount": "0.0"}', "amount"), (b'{"amount": "-1e3"}', "amount"), (b'{"amount": -1000000000}', "amount"),
    (b'{"amount": "1", "note": 5}', "note"), (b'{"amount": "1", "by": "me"}', "by"),
])
def test_an_adjustment_out_of_range_names_its_field(body: bytes, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        decode(body, Adjustment)
    assert exc.value.param == param


def test_multipliers_range_from_zero_to_a_thousand() -> None:
    assert decode(b'{"name": "g", "multiplier": "1000.000", "models": {"m": 0}}', GroupFields).multiplier == "1000.000"
    for bad in (b'"1000.001"', b"1000.5", b'"-0"', b'"1e2"'):
        with pytest.raises(InvalidRequest) as exc:
            decode(b'{"name": "g", "multiplier": ' + bad + b"}", GroupFields)
        assert exc.value.param == "multiplier", bad
