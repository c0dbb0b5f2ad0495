"""Schema migrations, append-only: entry N brings the schema from version N to N+1."""

from __future__ import annotations

SQLITE_MIGRATIONS: list[str] = [
    """
    CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL,
        models TEXT,
        enabled INTEGER NOT NULL DEFAULT 1,
        revoked INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE TABLE ledger (
        request_id TEXT PRIMARY KEY,
        key_id TEXT,
        model TEXT NOT NULL,
        provider TEXT,
        upstream_model TEXT,
        stream INTEGER NOT NULL,
        status INTEGER NOT NULL,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        usage_source TEXT NOT NULL,
        ttft_ms REAL,
        duration_ms REAL NOT NULL,
        disconnected INTEGER NOT NULL,
        error_code TEXT,
        attempts INTEGER NOT NULL,
        created_at REAL NOT NULL,
        extra TEXT
    );
    CREATE INDEX ledger_key_time ON ledger (key_id, created_at);
    CREATE INDEX ledger_time ON ledger (created_at)
    """,
]
