"""The commits on the loop's thread never checkpoint the WAL (the fsyncs of a checkpoint stalled every stream
on the loop); the store's thread checkpoints after every so many of them and restarts the WAL, so it stays
small. Without that checkpoint the WAL would grow without bound; with SQLite's own (every 1,000 pages, in
whichever commit crosses the mark) it reaches ~4 MB."""

from __future__ import annotations

import os
from pathlib import Path

from sluice.storage.sqlite import SQLiteStore
from tests.unit.storage.conftest import entry, key


async def test_the_wal_is_checkpointed_and_restarted_off_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "sluice.db"
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        await store.create_key(key())
        sizes = []
        for i in range(1_000):
            await store.write_ledger([entry(f"r{i}")])
            if i % 100 == 99:
                await store.count_keys()  # the store's thread runs jobs in order: after the checkpoint
                sizes.append(os.stat(f"{db}-wal").st_size)
    finally:
        await store.close()
    # ~5.4 pages a commit: restarted every 100 commits the WAL holds ~550 pages (2.2 MB at 4 KiB)
    assert max(sizes) < 3_000_000
