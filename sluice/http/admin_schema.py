"""What the admin API accepts, declared once: msgspec structs with ranges that both validate requests and
generate the OpenAPI document (http/openapi.py), so the two cannot drift apart."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType

from sluice.errors import InvalidRequest, invalid_field
from sluice.metering.pricing import to_nanos
from sluice.storage.base import LedgerQuery

# Money as a decimal string ("10.00") or a number, in currency units: at most 999,999,999.999999999 so
# that budgets, in nano-units, stay below 10^18 (metering/pricing.py MAX_NANOS) and sums inside BIGINT.
_MONEY = r"^[0-9]{1,9}(\.[0-9]{1,9})?$"
_POSITIVE_MONEY = r"^(?=.*[1-9])[0-9]{1,9}(\.[0-9]{1,9})?$"
Money = Annotated[str, Meta(pattern=_MONEY)] | Annotated[float, Meta(ge=0, lt=1e9)]
PositiveMoney = Annotated[str, Meta(pattern=_POSITIVE_MONEY)] | Annotated[float, Meta(gt=0, lt=1e9)]
Int32 = Annotated[int, Meta(ge=1, le=2**31 - 1)]        # rpm, tpm, max_concurrency are INTEGER columns
Name = Annotated[str, Meta(min_length=1, max_length=200)]
Time = Annotated[float, Meta(ge=0, le=1e11)]            # Unix seconds (until the year 5138)


class KeyFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Key fields an admin may set; absent fields stay as they are, `null` clears a limit."""

    name: Name | UnsetType = UNSET
    owner: Annotated[str, Meta(max_length=200)] | UnsetType | None = UNSET
    models: Annotated[list[Name], Meta(max_length=1000)] | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET
    expires_at: Time | UnsetType | None = UNSET
    budget: Money | UnsetType | None = UNSET
    token_quota: Annotated[int, Meta(ge=1, le=10**15)] | UnsetType | None = UNSET
    period: Literal["day", "week", "month"] | UnsetType | None = UNSET
    rpm: Int32 | UnsetType | None = UNSET
    tpm: Int32 | UnsetType | None = UNSET
    max_concurrency: Int32 | UnsetType | None = UNSET
    metadata: dict[str, Any] | UnsetType | None = UNSET
    account_id: Annotated[str, Meta(max_length=64)] | UnsetType | None = UNSET


class NewKey(KeyFields, forbid_unknown_fields=True, kw_only=True):
    """A new key's fields: the same, with a name."""

    name: Name


class TopUp(msgspec.Struct, forbid_unknown_fields=True):
    amount: PositiveMoney


class LedgerParams(msgspec.Struct):
    """The query of /admin/usage and /admin/requests (and the dashboard's own); `status=0`: any error.
    UNSET, not None, for absent: a query value is a string, and "null" is not a number."""

    key_id: str | UnsetType = UNSET
    model: str | UnsetType = UNSET
    status: Annotated[int, Meta(ge=0, le=599)] | UnsetType = UNSET
    since: Time | UnsetType = UNSET
    until: Time | UnsetType = UNSET
    limit: Annotated[int, Meta(ge=1, le=10_000)] | UnsetType = UNSET
    group: Literal["hour", "day"] | UnsetType = UNSET


S = TypeVar("S", bound=msgspec.Struct)
T = TypeVar("T")


def decode(body: bytes, kind: type[S]) -> S:
    """A JSON body as `kind`, or a 400 naming the field that is wrong."""
    try:
        doc = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if isinstance(doc, dict):   # JSON has one number type: 10.0 is the integer 10 to a JSON Schema client
        doc = {k: int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**63 else v
               for k, v in doc.items()}
    try:
        return msgspec.convert(doc, kind)
    except msgspec.ValidationError as exc:
        raise invalid_field(str(exc)) from None


def ledger_params(q: dict[str, str]) -> tuple[LedgerQuery, str | None]:
    """The ledger query and the grouping, from query parameters (strings, converted and ranged)."""
    if "key" in q and "key_id" not in q:      # the short name the CLI and older links use
        q = {**q, "key_id": q["key"]}
    try:
        p = msgspec.convert(q, LedgerParams, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid_field(str(exc)) from None
    def given(v: T | UnsetType) -> T | None:
        return None if isinstance(v, UnsetType) else v
    lq = LedgerQuery(key_id=given(p.key_id) or None, model=given(p.model) or None, status=given(p.status),
                     since=given(p.since), until=given(p.until), limit=given(p.limit) or 100)
    return lq, given(p.group)


def changes(f: KeyFields) -> dict[str, Any]:
    """The fields set, as the store takes them (money in nano-units)."""
    out = {k: getattr(f, k) for k in f.__struct_fields__ if getattr(f, k) is not UNSET}
    if out.get("budget") is not None:
        out["budget"] = money_nanos(out["budget"])
    return out


def money_nanos(v: str | float) -> int:
    """A validated Money value in nano-units."""
    return to_nanos(Decimal(str(v)))


class ProbeRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A test of a provider's key pool on demand: one key (by fingerprint id) or the next, one model."""

    key_id: Name | None = None
    model: Name | None = None


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body for a struct checked further in (the catalog's config tables), with every integral
    float an integer at any depth, as `decode` does at the top."""
    try:
        doc = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    return _integral(doc)  # type: ignore[no-any-return]


def _integral(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    if isinstance(v, dict):
        return {k: _integral(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_integral(x) for x in v]
    return v
