"""The real Codex CLI (installed by scripts/agents) through `sluice serve` on `/v1/responses`, non-interactively,
against the OpenAI and the Anthropic simulators behind the translation: a turn that runs a shell tool (`cat`
of a temp file), gets its output back, and answers; the ledger records each request with the upstream's usage."""

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

MARKER = "sluice-marker-c0d3x"
MODEL = "gpt-sluice"



def _shell_call(tools: list[dict[str, Any]], path: Path) -> tuple[str, str] | None:
    """(name, arguments) running `cat path` with whichever shell tool this Codex version offers
    (chat tools, or Anthropic's `input_schema` ones)."""
    for t in tools:
        fn = t.get("function") or t
        schema = fn.get("parameters") or fn.get("input_schema") or {}
        name, props = fn.get("name", ""), schema.get("properties") or {}
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


def anthropic_script(path: Path, thought: dict[str, Any] | None = None) -> Any:
    """The Anthropic side of the turn; with `thought`, the tool call comes after that signed thinking block."""
    def script(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        results = [b for b in last if isinstance(b, dict) and b.get("type") == "tool_result"] \
            if isinstance(last, list) else []
        if results:
            text = json.dumps(results[-1].get("content"))
            return answer(body, [{"type": "text", "text": f"The file says: {MARKER}" if MARKER in text
                                  else "no marker"}])
        call = _shell_call(body.get("tools") or [], path)
        if call is not None:
            return answer(body, [*([thought] if thought else []), {"type": "tool_use", "id": "toolu_codex_1",
                                  "name": call[0], "input": json.loads(call[1])}], stop_reason="tool_use")
        return answer(body, [{"type": "text", "text": "ok"}])
    return script


def _env(home: Path, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "ANTHROPIC_"))}
    env.update(HOME=str(home), CODEX_HOME=str(home / ".codex"), SLUICE_TEST_KEY=key, CI="1",
               DISABLE_TELEMETRY="1", NO_COLOR="1")
    return env


def _codex_config(home: Path, port: int, effort: str | None) -> None:
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(f"""
model = "{MODEL}"
model_provider = "sluice"
{f'model_reasoning_effort = "{effort}"' if effort else ""}

[model_providers.sluice]
name = "Sluice"
base_url = "http://127.0.0.1:{port}/v1"
env_key = "SLUICE_TEST_KEY"
wire_api = "responses"
""")





async def _codex_turn(s: SluiceProcess, tmp_path: Path, target: Path, effort: str | None = None) -> None:
    """One `codex exec` turn against `s`; it must end with the answer built from the file's contents."""
    codex = agent_binary("codex", "Codex CLI")
    home, out = tmp_path / "home", tmp_path / "last.txt"
    _codex_config(home, s.port, effort)
    args = [str(codex), "exec", "--skip-git-repo-check", "-s", "read-only", "-o", str(out),
            f"Run cat {target} and tell me what the file says."]
    proc = await asyncio.to_thread(subprocess.run, args, cwd=target.parent, env=_env(home, s.create_key("codex")),
                                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:], s.log.read_text()[-3000:])
    assert out.read_text().strip() == f"The file says: {MARKER}"



def _toml(kind: str, url: str, upstream_model: str) -> dict[str, Any]:
    return one_upstream(url, {MODEL: upstream_model}, kind=kind, api_key="sk-upstream-secret",
                        pricing={"input": "1.00", "output": "2.00"})

async def test_codex_runs_a_shell_tool_through_sluice(tmp_path: Path) -> None:
    agent_binary("codex", "Codex CLI")
    target = note_file(tmp_path, MARKER)
    async with OpenAISim() as sim, SluiceProcess(tmp_path, _toml("openai", sim.base_url, "gpt-sim")) as s:
        sim.always(Fault(script=codex_script(target)))
        await _codex_turn(s, tmp_path, target)
        turns = [r.body for r in sim.requests if r.body.get("tools")]
        assert any(MARKER in m["content"] for t in turns for m in t["messages"] if m["role"] == "tool")
        assert turns[0]["messages"][0]["role"] == "system"  # Codex's instructions
        assert all("reasoning" not in t and "store" not in t and "include" not in t for t in turns)
        rows = ledger_rows(s.db)
        assert all(r["status"] == 200 and r["usage_source"] == "reported" for r in rows), rows
        usage = sorted((r["prompt_tokens"], r["completion_tokens"]) for r in rows)
        assert (100, 9) in usage and (120, 11) in usage, usage
        # Codex names its session in prompt_cache_key: every turn of the run is recorded under one session
        assert len({r["session_id"] for r in rows}) == 1 and rows[0]["session_id"], rows


async def test_codex_through_an_anthropic_upstream(tmp_path: Path) -> None:
    agent_binary("codex", "Codex CLI")
    target = note_file(tmp_path, MARKER)
    async with AnthropicSim() as sim, SluiceProcess(
            tmp_path, _toml("anthropic", sim.base_url, "claude-sonnet-4-5")) as s:
        sim.script = anthropic_script(target)
        await _codex_turn(s, tmp_path, target)
        turns = [r.body for r in sim.received if r.body.get("tools")]
        assert any(MARKER in json.dumps(t["messages"][-1]) for t in turns)  # the tool's output went up
        assert all(r.headers["x-api-key"] == "sk-upstream-secret" for r in sim.received)
        rows = ledger_rows(s.db)
        assert rows and all(r["status"] == 200 and r["provider"] == "up" for r in rows), rows
        assert all((r["prompt_tokens"], r["completion_tokens"]) == (10, 7) for r in rows), rows


async def test_codex_with_thinking_through_an_anthropic_upstream(tmp_path: Path) -> None:
    """Codex asks for reasoning: Claude thinks (signed) before the tool call, and Codex's next turn must carry
    that block back through `encrypted_content`, or the simulator refuses it as the real API does."""
    agent_binary("codex", "Codex CLI")
    target = note_file(tmp_path, MARKER)
    thought = {"type": "thinking", "thinking": "I should read the file.", "signature": "EqQBCgIYAhIMc0d3x+/=="}
    async with AnthropicSim() as sim, SluiceProcess(
            tmp_path, _toml("anthropic", sim.base_url, "claude-sonnet-4-5")) as s:
        sim.script = anthropic_script(target, thought)
        await _codex_turn(s, tmp_path, target, effort="medium")
        turns = [r for r in sim.received if r.body.get("tools")]
        assert all(t.body["thinking"]["type"] == "enabled" for t in turns)
        answered = [t for t in turns if MARKER in json.dumps(t.body["messages"][-1])]
        assert answered and answered[0].body["messages"][-2]["content"][0] == thought
        assert b'"signature":"EqQBCgIYAhIMc0d3x+/=="' in answered[0].raw

