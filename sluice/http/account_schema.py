"""What the accounts, groups and codes admin routes accept: msgspec structs with ranges that validate the
requests (http/account_routes.py) and generate their part of the OpenAPI document (http/openapi.py)."""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from sluice.errors import invalid_field
from sluice.http.admin_schema import Money, PositiveMoney, Time

# A name holds a visible character (the handlers strip the ends): the class excludes what Python's
# str.strip() and ECMAScript's \s call white space, which differ (U+0085, U+FEFF), and control characters.
_VISIBLE = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
Label = Annotated[str, Meta(min_length=1, max_length=200, pattern=_VISIBLE)]
AccountId = Annotated[str, Meta(max_length=64)]
# Signed money for adjustments: never zero (a correction of nothing is a mistake), at most 10^9 units.
_SIGNED_MONEY = r"^-?(?=[0-9.]*[1-9])[0-9]{1,9}(\.[0-9]{1,9})?$"
SignedMoney = (Annotated[str, Meta(pattern=_SIGNED_MONEY)]
               | Annotated[float, Meta(gt=-1e9, lt=1e9, extra_json_schema={"not": {"const": 0}})])
# A price multiplier, 0 (free) to 1000, as a decimal string or a number.
_MULTIPLIER = r"^(1000(\.0{1,9})?|[0-9]{1,3}(\.[0-9]{1,9})?)$"
Multiplier = Annotated[str, Meta(pattern=_MULTIPLIER)] | Annotated[float, Meta(ge=0, le=1000)]
Note = Annotated[str, Meta(max_length=500)]
Count = Annotated[int, Meta(ge=1, le=10_000)]


class AccountFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What an admin may change on an account; absent fields stay as they are."""

    name: Label | UnsetType = UNSET
    group: Label | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET


class NewAccount(AccountFields, forbid_unknown_fields=True, kw_only=True):
    """A new account: a name, and an opening balance (a top-up) when given."""

    name: Label
    balance: Money | UnsetType = UNSET


class Credit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A top-up of an account's balance."""

    amount: PositiveMoney
    note: Note | None = None


class Adjustment(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A correction of an account's balance, up or down."""

    amount: SignedMoney
    note: Note | None = None


class GroupFields(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A group's price multiplier, and per-model multipliers over it."""

    name: Label
    multiplier: Multiplier = "1"
    models: Annotated[dict[Label, Multiplier], Meta(max_length=1000)] = msgspec.field(default_factory=dict)


class CodeBatch(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A batch of redemption codes of one amount."""

    count: Count
    amount: PositiveMoney
    expires_at: Time | None = None
    group: Label | None = None


class HistoryParams(msgspec.Struct):
    """The query of an account's balance history (admin and owner)."""

    since: Time | UnsetType = UNSET
    limit: Count = 200


class CodeParams(msgspec.Struct):
    """The query of the code listing."""

    batch_id: AccountId | UnsetType = UNSET
    limit: Count = 1000


S = TypeVar("S", bound=msgspec.Struct)


def query(q: dict[str, str], kind: type[S]) -> S:
    """Query parameters (strings) as `kind`, converted and ranged, or a 400 naming the one that is wrong."""
    try:
        return msgspec.convert({k: v for k, v in q.items() if k in kind.__struct_fields__}, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise invalid_field(str(exc)) from None
