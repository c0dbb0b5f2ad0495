"""Which store failures come from the data of one record (retry the batch one by one, set that record
aside) rather than from the database itself (keep everything, try again later)."""

from __future__ import annotations

import sqlite3

# OverflowError: sqlite3 binding an int beyond int64. ValueError: asyncpg's client-side DataError (an
# argument it cannot encode, e.g. out of int8 range) is one.
_RECORD_ERRORS: tuple[type[BaseException], ...] = (OverflowError, ValueError, TypeError, sqlite3.IntegrityError,
                                                   sqlite3.DataError)
# PostgreSQL's SQLSTATE classes 22 (data exception: numeric value out of range ...) and 23 (integrity
# constraint violation) are about the rows written, not the connection (read without importing asyncpg,
# which only storage/postgres.py may).
_RECORD_SQLSTATES = ("22", "23")


def is_record_error(exc: BaseException) -> bool:
    """True when `exc`, raised by a store write, is caused by what was written (a poison record)."""
    if isinstance(exc, _RECORD_ERRORS):
        return True
    state = getattr(exc, "sqlstate", None)
    return isinstance(state, str) and state[:2] in _RECORD_SQLSTATES
