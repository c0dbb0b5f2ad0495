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

# Accounts (a balance that keys spend from), groups with price multipliers, redemption codes (hashed)
# and balance events (top-ups, redemptions, adjustments; request charges are summed from the ledger).
ACCOUNTS = """
CREATE TABLE groups (
    name TEXT PRIMARY KEY,
    multiplier TEXT NOT NULL,
    model_multipliers TEXT,
    created_at {REAL} NOT NULL
);
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    group_name TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    credit {BIGINT} NOT NULL DEFAULT 0,
    spent {BIGINT} NOT NULL DEFAULT 0,
    reserved {BIGINT} NOT NULL DEFAULT 0,
    created_at {REAL} NOT NULL
);
ALTER TABLE keys ADD COLUMN account_id TEXT;
ALTER TABLE reservations ADD COLUMN account_id TEXT;
ALTER TABLE ledger ADD COLUMN account_id TEXT;
CREATE INDEX ledger_account_time ON ledger (account_id, created_at);
CREATE TABLE balance_events (
    account_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount {BIGINT} NOT NULL,
    note TEXT,
    ref TEXT,
    created_at {REAL} NOT NULL
);
CREATE INDEX balance_events_account_time ON balance_events (account_id, created_at);
CREATE TABLE redemption_codes (
    code_hash TEXT PRIMARY KEY,
    batch_id TEXT NOT NULL,
    amount {BIGINT} NOT NULL,
    group_name TEXT,
    expires_at {REAL},
    created_at {REAL} NOT NULL,
    redeemed_at {REAL},
    redeemed_by TEXT,
    account_id TEXT
)
"""

# Retention: request-log rows older than the configured age become per-day sums (several rows of one
# day, key and model may exist: readers sum them) and are deleted; a lease row lets one instance do it.
RETENTION = """
CREATE TABLE usage_daily (
    day {REAL} NOT NULL,
    key_id TEXT,
    account_id TEXT,
    model TEXT NOT NULL,
    requests {BIGINT} NOT NULL,
    prompt_tokens {BIGINT} NOT NULL,
    completion_tokens {BIGINT} NOT NULL,
    errors {BIGINT} NOT NULL,
    cost {BIGINT} NOT NULL
);
CREATE INDEX usage_daily_day ON usage_daily (day);
CREATE INDEX usage_daily_account_day ON usage_daily (account_id, day);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until {REAL} NOT NULL
);
INSERT INTO leases (name, holder, until) VALUES ('retention', '', 0)
"""

# Ledger records a store could not write (data no batch should carry: a value beyond BIGINT ...), set aside
# whole as JSON with the error so that the rest of their batch commits and an operator can settle them.
_LEDGER_QUARANTINE = """
CREATE TABLE ledger_quarantine (
    request_id TEXT PRIMARY KEY,
    key_id TEXT,
    record TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at {REAL} NOT NULL
)
"""

# Prompt-cache writes priced apart from reads (cached_tokens), and the client's session id.
_LEDGER_CACHE_SESSION = """
ALTER TABLE ledger ADD COLUMN cache_write_5m_tokens {BIGINT};
ALTER TABLE ledger ADD COLUMN cache_write_1h_tokens {BIGINT};
ALTER TABLE ledger ADD COLUMN session_id TEXT
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

# main's migrations first (released order), then the channels ones
_ALL = (_V1, ACCOUNTS, RETENTION, _LEDGER_QUARANTINE, _LEDGER_CACHE_SESSION, UPSTREAM_KEY_STATES, CHANNEL_CATALOG)
SQLITE_MIGRATIONS: list[str] = [_schema(m, "REAL", "INTEGER") for m in _ALL]
POSTGRES_MIGRATIONS: list[str] = [_schema(m, "DOUBLE PRECISION", "BIGINT") for m in _ALL]
