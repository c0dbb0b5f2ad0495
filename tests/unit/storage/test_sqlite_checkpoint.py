"""No commit checkpoints the WAL by itself (the fsyncs of a checkpoint, or of the restart after it, stalled every
stream on the loop); the store's thread checkpoints after every so many commits and restarts the WAL, so it stays
small. Without that checkpoint the WAL would grow without bound; with SQLite's own (every 1,000 pages, in
whichever commit crosses the mark) it reaches ~4 MB."""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from sluice.storage.sqlite import _CHECKPOINT_EVERY, _INLINE_MAX, SQLiteStore
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



def _wal_index(shm: int) -> tuple[int, int]:
    """(`mxFrame`, `nBackfill`) from the wal-index (`-shm`): the WAL's last valid frame (offset 16) and the
    frames checkpointed so far (offset 96), native u32s. A restart sets both back."""
    head = os.pread(shm, 100, 0)
    return int.from_bytes(head[16:20], sys.byteorder), int.from_bytes(head[96:100], sys.byteorder)


async def test_commits_on_the_stores_thread_checkpoint_only_every_so_many(tmp_path: Path) -> None:
    """Batches too large for the loop's thread commit on the store's: SQLite's own checkpoint would run inside
    one of them and leave the WAL's restart (an fsync) to the next writer, often the loop's connection. Only
    `_checkpoint` copies the WAL, which restarts it at once, after every `_CHECKPOINT_EVERY` commits."""
    db = tmp_path / "sluice.db"
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    await store.create_key(key())
    shm = os.open(f"{db}-shm", os.O_RDONLY)
    try:
        restarts, copied, sizes, last = [], [], [], 0
        for i in range(3 * _CHECKPOINT_EVERY):
            await store.write_ledger([entry(f"r{i}-{j}") for j in range(_INLINE_MAX + 1)])  # the thread's
            frames, backfilled = _wal_index(shm)
            if frames < last:
                restarts.append(i)
            last = frames
            copied.append(backfilled)
            sizes.append(os.stat(f"{db}-wal").st_size)
    finally:
        os.close(shm)
        await store.close()
    assert set(copied) == {0}  # never copied without the restart that follows in `_checkpoint`
    assert len(restarts) >= 2 and {b - a for a, b in itertools.pairwise(restarts)} == {_CHECKPOINT_EVERY}
    assert max(sizes) < 8_000_000  # ~11 pages a commit of 65 records: ~1,100 pages between restarts
