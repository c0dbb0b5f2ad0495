"""The real agent CLIs the agent tests drive: where scripts/agents installs them, and skip-or-fail when absent."""

from __future__ import annotations

import os
from pathlib import Path

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

