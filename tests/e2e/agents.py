"""The real agent CLIs the agent tests drive: where scripts/agents installs them, and skip-or-fail when absent."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT


def agent_binary(name: str, what: str) -> Path:
    """`.agents/node_modules/.bin/<name>`; a skip when it is missing, a failure under CI (which installs it)."""
    path = ROOT / ".agents" / "node_modules" / ".bin" / name
    if not os.access(path, os.X_OK):
        reason = f"{what} is not installed at {path} (run scripts/agents)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def note_file(tmp_path: Path, marker: str) -> Path:
    """`work/note.txt` holding `marker`: the file an agent is asked to read (its folder is the agent's cwd)."""
    work = tmp_path / "work"
    work.mkdir()
    target = work / "note.txt"
    target.write_text(marker + "\n")
    return target


def ledger_rows(db_path: Path) -> list[dict[str, Any]]:
    """Every ledger row of a Sluice's SQLite store, oldest first, read without taking a write lock."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY created_at")]
    finally:
        db.close()
