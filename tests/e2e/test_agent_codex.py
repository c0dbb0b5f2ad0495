"""The real Codex CLI (installed by scripts/agents) through `sluice serve` on `/v1/responses`, non-interactively,
against the OpenAI simulator behind the chat translation: a turn that runs a shell tool (`cat` of a temp
file), gets its output back, and answers; the ledger records each request with the upstream's usage."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.sluice_proc import ROOT, SluiceProcess
from tests.sim.openai_sim import Fault, OpenAISim, chat_events

pytestmark = pytest.mark.agents

CODEX = ROOT / ".agents" / "node_modules" / ".bin" / "codex"
MARKER = "sluice-marker-c0d3x"
MODEL = "gpt-sluice"


def _codex_binary() -> Path:
    if not os.access(CODEX, os.X_OK):
        reason = f"Codex CLI is not installed at {CODEX} (run scripts/agents)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return CODEX


def _shell_call(tools: list[dict[str, Any]], path: Path) -> tuple[str, str] | None:
    """(name, arguments) running `cat path` with whichever shell tool this Codex version offers."""
    for t in tools:
        fn = t.get("function") or {}
        name, props = fn.get("name", ""), (fn.get("parameters") or {}).get("properties") or {}
        if "command" in props and props["command"].get("type") == "array":
            return name, json.dumps({"command": ["cat", str(path)]})
        if "command" in props:
            return name, json.dumps({"command": f"cat {path}"})
        if "cmd" in props:
            return name, json.dumps({"cmd": f"cat {path}"})
    return None


def codex_script(path: Path) -> Any:
    def script(body: dict[str, Any]) -> list[bytes]:
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if results:
            return chat_events(text=f"The file says: {MARKER}" if MARKER in results[-1] else "no marker",
                               usage=(120, 11))
        call = _shell_call(body.get("tools") or [], path)
        if call is not None:
            return chat_events(text="", calls=(("call_codex_1", *call),), usage=(100, 9))
        return chat_events(text="ok", usage=(5, 1))
    return script


def _env(home: Path, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "ANTHROPIC_"))}
    env.update(HOME=str(home), CODEX_HOME=str(home / ".codex"), SLUICE_TEST_KEY=key, CI="1",
               DISABLE_TELEMETRY="1", NO_COLOR="1")
    return env


def _codex_config(home: Path, port: int) -> None:
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(f"""
model = "{MODEL}"
model_provider = "sluice"

[model_providers.sluice]
name = "Sluice"
base_url = "http://127.0.0.1:{port}/v1"
env_key = "SLUICE_TEST_KEY"
wire_api = "responses"
""")


async def test_codex_runs_a_shell_tool_through_sluice(tmp_path: Path) -> None:
    codex = _codex_binary()
    work = tmp_path / "work"
    work.mkdir()
    target = work / "note.txt"
    target.write_text(MARKER + "\n")
    async with OpenAISim() as sim, SluiceProcess(tmp_path, f"""
[[providers]]
name = "oai"
kind = "openai"
base_url = "{sim.base_url}"
api_key = "sk-oai-upstream"

[[models]]
name = "{MODEL}"
targets = [{{ provider = "oai", model = "gpt-sim" }}]
""") as s:
        sim.always(Fault(script=codex_script(target)))
        home = tmp_path / "home"
        _codex_config(home, s.port)
        out = tmp_path / "last.txt"
        args = [str(codex), "exec", "--skip-git-repo-check", "-s", "read-only", "-o", str(out),
                f"Run cat {target} and tell me what the file says."]
        proc = await asyncio.to_thread(subprocess.run, args, cwd=work, env=_env(home, s.create_key("codex")),
                                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:], s.log.read_text()[-3000:])
        assert out.read_text().strip() == f"The file says: {MARKER}"
        turns = [r.body for r in sim.requests if r.body.get("tools")]
        assert any(MARKER in m["content"] for t in turns for m in t["messages"] if m["role"] == "tool")
        assert turns[0]["messages"][0]["role"] == "system"  # Codex's instructions
        assert all("reasoning" not in t and "store" not in t and "include" not in t for t in turns)
        rows = _ledger(s)
        assert all(r["status"] == 200 and r["usage_source"] == "reported" for r in rows), rows
        usage = sorted((r["prompt_tokens"], r["completion_tokens"]) for r in rows)
        assert (100, 9) in usage and (120, 11) in usage, usage


def _ledger(s: SluiceProcess) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{s.db}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM ledger ORDER BY created_at")]
    finally:
        db.close()
