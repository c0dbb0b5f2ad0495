"""Storage: store protocols, the SQLite (embedded default) and PostgreSQL implementations, migrations."""

from __future__ import annotations

from sluice.config import Settings
from sluice.storage.base import Store


def open_store(settings: Settings) -> Store:
    url = settings.storage.url
    if url.startswith("sqlite:///"):
        from sluice.storage.sqlite import SQLiteStore

        return SQLiteStore(url)
    from sluice.storage.postgres import PostgresStore

    store: Store = PostgresStore(url)
    return store
