"""The real Claude Code CLI (installed by scripts/agents) through `sluice serve`, non-interactively, against
the Anthropic simulator: a turn that calls a tool (Read on a temp file), gets its result, and answers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.agents import agent_binary, note_file
from tests.e2e.sluice_proc import SluiceProcess
from tests.harness import ledger_rows, one_upstream
from tests.sim.anthropic_sim import AnthropicSim, Reply, answer
from tests.sim.openai_sim import Fault, OpenAISim, chat_events

pytestmark = pytest.mark.agents

MARKER = "sluice-marker-7f3a"
MODEL = "claude-sluice"



def _tool_results(body: dict[str, Any]) -> list[str]:
    out: list[str] = []
    last = body["messages"][-1]
    content = last.get("content")
    for block in content if isinstance(content, list) else []:
        if block.get("type") == "tool_result":
            inner = block.get("content")
            texts = [inner] if isinstance(inner, str) else [b.get("text", "") for b in inner or []]
            out.append("".join(texts))
    return out


def agent_script(path: Path) -> Any:
    """Read the file when the Read tool is offered and no result came yet; then answer from the result."""
    def script(body: dict[str, Any]) -> Reply:
        results = _tool_results(body)
        if results:
            return answer(body, [{"type": "text", "text": f"The file says: {results[0].strip()}"}])
        if any(t.get("name") == "Read" for t in body.get("tools") or []):
            call = {"type": "tool_use", "id": "toolu_sim_1", "name": "Read", "input": {"file_path": str(path)}}
            return answer(body, [{"type": "text", "text": "Reading it."}, call], stop_reason="tool_use",
                          usage={"cache_creation_input_tokens": 20, "cache_read_input_tokens": 30,
                                 "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                                    "ephemeral_1h_input_tokens": 20}})
        return answer(body, [{"type": "text", "text": "ok"}])
    return script


def _env(home: Path, port: int, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_", "CLAUDE_"))}
    env.update(HOME=str(home), CLAUDE_CONFIG_DIR=str(home / ".claude"), ANTHROPIC_BASE_URL=f"http://127.0.0.1:{port}",
               ANTHROPIC_API_KEY=key, ANTHROPIC_MODEL=MODEL, ANTHROPIC_SMALL_FAST_MODEL=MODEL,
               ANTHROPIC_DEFAULT_HAIKU_MODEL=MODEL, ANTHROPIC_DEFAULT_SONNET_MODEL=MODEL,
               ANTHROPIC_DEFAULT_OPUS_MODEL=MODEL, DISABLE_TELEMETRY="1", DISABLE_AUTOUPDATER="1",
               CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1", DISABLE_ERROR_REPORTING="1", CI="1")
    return env


async def test_claude_code_reads_a_file_through_sluice(tmp_path: Path) -> None:
    claude = agent_binary("claude", "Claude Code")
    target = note_file(tmp_path, MARKER)
    work = target.parent
    async with AnthropicSim() as sim, SluiceProcess(
            tmp_path, one_upstream(sim.base_url, [MODEL], kind="anthropic", api_key="sk-ant-upstream")) as s:
        sim.script = agent_script(target)
        key = s.create_key("claude-code")
        proc = await _run(claude, work, _env(tmp_path / "home", s.port, key), str(target))
        assert proc.returncode == 0, (proc.stdout, proc.stderr, s.log.read_text())
        result = json.loads(proc.stdout)
        assert result["is_error"] is False, result
        assert result["result"].startswith("The file says:") and MARKER in result["result"]
        turns = [r for r in sim.received if r.path == "/v1/messages" and r.body.get("tools")]
        assert any(MARKER in "".join(_tool_results(r.body)) for r in turns)  # the tool really ran
        first = turns[0]
        assert first.body["thinking"]["type"] == "adaptive"  # what current Claude Code sends, passed through
        assert "system" in [m["role"] for m in first.body["messages"]]
        assert "claude-code-20250219" in first.headers["anthropic-beta"]
        assert first.headers["x-api-key"] == "sk-ant-upstream"  # the provider's key, never the client's
        rows = ledger_rows(s.db)
        assert len(rows) >= 2 and all(r["status"] == 200 and r["usage_source"] == "reported" for r in rows)
        tool_turn = [r for r in rows if r["cache_write_1h_tokens"] == 20]
        assert len({r["session_id"] for r in rows}) == 1 and rows[0]["session_id"]  # one session, recorded
        assert len(tool_turn) == 1
        assert tool_turn[0]["prompt_tokens"] == 10 + 20 + 30 and tool_turn[0]["cached_tokens"] == 30
        assert tool_turn[0]["completion_tokens"] == 7


def openai_script(path: Path) -> Any:
    """The same turn from an OpenAI-compatible upstream (Sluice translates Claude Code's requests)."""
    def script(body: dict[str, Any]) -> list[bytes]:
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if results:
            return chat_events(text=f"The file says: {results[0].strip()}")
        if any(t["function"]["name"] == "Read" for t in body.get("tools") or []):
            return chat_events(text="Reading it.", calls=(("call_1", "Read", json.dumps({"file_path": str(path)})),),
                               usage=(40, 9))
        return chat_events(text="ok")
    return script


async def test_claude_code_through_a_translated_openai_upstream(tmp_path: Path) -> None:
    claude = agent_binary("claude", "Claude Code")
    target = note_file(tmp_path, MARKER)
    work = target.parent
    async with OpenAISim() as sim, SluiceProcess(
            tmp_path, one_upstream(sim.base_url, {MODEL: "gpt-sim"}, api_key="sk-oai-upstream")) as s:
        sim.always(Fault(script=openai_script(target)))
        proc = await _run(claude, work, _env(tmp_path / "home", s.port, s.create_key("claude-code")), str(target))
        assert proc.returncode == 0, (proc.stdout, proc.stderr, s.log.read_text())
        result = json.loads(proc.stdout)
        assert result["is_error"] is False and result["result"].startswith("The file says:"), result
        assert MARKER in result["result"]
        turns = [r.body for r in sim.requests if r.body.get("tools")]
        assert turns[0]["messages"][0]["role"] == "system"  # Claude Code's system entries, hoisted
        assert all(m["role"] != "system" for t in turns for m in t["messages"][1:])
        assert any(MARKER in m["content"] for t in turns for m in t["messages"] if m["role"] == "tool")
        rows = ledger_rows(s.db)
        assert any(r["prompt_tokens"] == 40 and r["completion_tokens"] == 9 for r in rows), rows
        assert all(r["status"] == 200 for r in rows)


async def _run(claude: Path, cwd: Path, env: dict[str, str], path: str) -> subprocess.CompletedProcess[str]:
    args = [str(claude), "-p", f"Read the file {path} and tell me what it says.", "--output-format", "json",
            "--model", MODEL, "--max-turns", "4", "--allowedTools", "Read"]
    return await asyncio.to_thread(subprocess.run, args, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, timeout=180)

