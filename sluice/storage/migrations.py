"""Schema migrations, append-only per dialect: entry N brings the schema from version N to N+1.

Money columns are integer nano-units (BIGINT); timestamps are Unix seconds (REAL / DOUBLE PRECISION);
flags are small integers in both dialects so that rows map the same way.
"""

from __future__ import annotations


def _schema(text: str, real: str, bigint: str) -> str:
    return text.replace("{REAL}", real).replace("{BIGINT}", bigint)


_V1 = """
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    owner TEXT,
    models TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_at {REAL} NOT NULL,
    expires_at {REAL},
    budget {BIGINT},
    spent {BIGINT} NOT NULL DEFAULT 0,
    reserved {BIGINT} NOT NULL DEFAULT 0,
    token_quota {BIGINT},
    tokens_used {BIGINT} NOT NULL DEFAULT 0,
    tokens_reserved {BIGINT} NOT NULL DEFAULT 0,
    period TEXT,
    period_start {REAL} NOT NULL DEFAULT 0,
    rpm INTEGER,
    tpm INTEGER,
    max_concurrency INTEGER,
    metadata TEXT
);
CREATE TABLE ledger (
    request_id TEXT PRIMARY KEY,
    key_id TEXT,
    model TEXT NOT NULL,
    provider TEXT,
    upstream_model TEXT,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    prompt_tokens {BIGINT},
    completion_tokens {BIGINT},
    cached_tokens {BIGINT},
    usage_source TEXT NOT NULL,
    ttft_ms {REAL},
    duration_ms {REAL} NOT NULL,
    disconnected INTEGER NOT NULL,
    error_code TEXT,
    attempts INTEGER NOT NULL,
    cost {BIGINT},
    created_at {REAL} NOT NULL,
    extra TEXT
);
CREATE INDEX ledger_key_time ON ledger (key_id, created_at);
CREATE INDEX ledger_time ON ledger (created_at);
CREATE TABLE reservations (
    request_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    amount {BIGINT} NOT NULL,
    tokens {BIGINT} NOT NULL,
    instance_id TEXT NOT NULL,
    created_at {REAL} NOT NULL
);
CREATE TABLE instances (
    id TEXT PRIMARY KEY,
    started_at {REAL} NOT NULL,
    last_seen {REAL} NOT NULL
);
CREATE TABLE topups (
    key_id TEXT NOT NULL,
    amount {BIGINT} NOT NULL,
    created_at {REAL} NOT NULL
)
"""

# Upstream key states shared by every instance (key_id is a fingerprint of the key, never the key)
UPSTREAM_KEY_STATES = """
CREATE TABLE upstream_key_states (
    provider TEXT NOT NULL,
    key_id TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    changed_at {REAL} NOT NULL,
    PRIMARY KEY (provider, key_id)
)
"""

# Providers and models managed through the admin API (doc: JSON, upstream keys encrypted in it); every
# change bumps the one version row, which instances poll to know when to reload
CHANNEL_CATALOG = """
CREATE TABLE catalog (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    doc TEXT NOT NULL,
    updated_at {REAL} NOT NULL,
    PRIMARY KEY (kind, name)
);
CREATE TABLE catalog_version (
    id INTEGER PRIMARY KEY,
    version {BIGINT} NOT NULL
);
INSERT INTO catalog_version (id, version) VALUES (1, 0)
"""

SQLITE_MIGRATIONS: list[str] = [_schema(_V1, "REAL", "INTEGER"),
                                _schema(UPSTREAM_KEY_STATES, "REAL", "INTEGER"),
                                _schema(CHANNEL_CATALOG, "REAL", "INTEGER")]
POSTGRES_MIGRATIONS: list[str] = [_schema(_V1, "DOUBLE PRECISION", "BIGINT"),
                                  _schema(UPSTREAM_KEY_STATES, "DOUBLE PRECISION", "BIGINT"),
                                  _schema(CHANNEL_CATALOG, "DOUBLE PRECISION", "BIGINT")]
