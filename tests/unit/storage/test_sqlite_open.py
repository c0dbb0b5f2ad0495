"""Instances starting together on a new SQLite file: every one opens, whichever migrates. SQLite answers the
journal-mode switch with "database is locked" at once, without its busy handler, when it meets another
connection's lock at the wrong moment (about 1 start in 12 with 8 openers before the fix); one round that hits
it is enough to fail this test."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sluice.storage.sqlite import SQLiteStore


async def test_many_rounds_of_eight_openers_on_a_new_file(tmp_path: Path) -> None:
    for i in range(100):
        url = f"sqlite:///{tmp_path / f'r{i}.db'}"
        stores = [SQLiteStore(url) for _ in range(8)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            assert await stores[-1].count_keys() == 0
        finally:
            for s in stores:
                await s.close()
