"""Type and range checks of an inbound Anthropic Messages body, before anything reads it.

Every field Sluice reads or translates is checked here, so that malformed input is a 400 naming the
field (`param` in dotted form, as Anthropic's own messages do) and never a crash further in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sluice.errors import InvalidRequest

MAX_TOKENS_LIMIT = 1_000_000     # above any model's output window; keeps reservations in range
MAX_BUDGET_TOKENS = 1_000_000
ROLES = ("user", "assistant", "system")
THINKING_TYPES = ("enabled", "disabled", "adaptive", "between_tools")
EFFORTS = ("low", "medium", "high", "xhigh", "max")


def _bad(param: str, text: str, code: str = "invalid_type") -> InvalidRequest:
    return InvalidRequest(f"{param}: {text}", param=param, code=code)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _opt(body: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    v = body.get(name)
    if v is not None and not isinstance(v, kind):
        raise _bad(name, f"must be {what}")
    return v


def check_messages_request(body: Mapping[str, Any], *, count_only: bool = False) -> None:
    """Raise InvalidRequest for the first field of a Messages (or count_tokens) body that is malformed."""
    required = ("model", "messages") if count_only else ("model", "max_tokens", "messages")
    for name in required:
        if body.get(name) is None:
            raise _bad(name, "Field required", "missing_required_parameter")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _bad("model", "must be a non-empty string")
    if not count_only:
        mt = body["max_tokens"]
        if not _is_int(mt):
            raise _bad("max_tokens", "must be an integer")
        if not 1 <= mt <= MAX_TOKENS_LIMIT:
            raise _bad("max_tokens", f"must be between 1 and {MAX_TOKENS_LIMIT}", "invalid_value")
    _check_scalars(body)
    _check_system(body.get("system"))
    msgs = body["messages"]
    if not isinstance(msgs, list):
        raise _bad("messages", "must be an array")
    for i, m in enumerate(msgs):
        _check_message(m, f"messages.{i}")
    _check_tools(body)
    _check_thinking(body.get("thinking"))
    oc = _opt(body, "output_config", dict, "an object")
    if oc is not None and oc.get("effort") is not None and oc["effort"] not in EFFORTS:
        raise _bad("output_config.effort", f"must be one of {', '.join(EFFORTS)}", "invalid_value")
    _opt(body, "context_management", dict, "an object")


def _check_scalars(body: Mapping[str, Any]) -> None:
    _opt(body, "stream", bool, "a boolean")
    for name, top in (("temperature", 1.0), ("top_p", 1.0)):
        v = body.get(name)
        if v is not None and (not _is_num(v) or not 0 <= v <= top):
            raise _bad(name, f"must be a number between 0 and {top:g}", "invalid_value")
    k = body.get("top_k")
    if k is not None and (not _is_int(k) or k < 0):
        raise _bad("top_k", "must be a non-negative integer", "invalid_value")
    stops = _opt(body, "stop_sequences", list, "an array of strings")
    if stops is not None and not all(isinstance(s, str) for s in stops):
        raise _bad("stop_sequences", "must be an array of strings")
    meta = _opt(body, "metadata", dict, "an object")
    if meta is not None and meta.get("user_id") is not None and not isinstance(meta["user_id"], str):
        raise _bad("metadata.user_id", "must be a string")
    _opt(body, "service_tier", str, "a string")


def _check_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    if not isinstance(system, list):
        raise _bad("system", "must be a string or an array of text blocks")
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _bad(f"system.{j}", "must be a text block with a string `text`")


def _check_message(m: Any, param: str) -> None:
    if not isinstance(m, dict):
        raise _bad(param, "must be an object")
    if m.get("role") not in ROLES:
        raise _bad(f"{param}.role", f"must be one of {', '.join(ROLES)}", "invalid_value")
    content = m.get("content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _bad(f"{param}.content", "must be a string or an array of content blocks")
    for j, block in enumerate(content):
        check_block(block, f"{param}.content.{j}")


def check_block(block: Any, param: str) -> None:
    """One content block: an object with a string `type`, and the fields translation reads well typed."""
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise _bad(param, "must be an object with a string `type`")
    kind = block["type"]
    if kind == "text" and not isinstance(block.get("text"), str):
        raise _bad(f"{param}.text", "must be a string")
    elif kind == "tool_use":
        if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
            raise _bad(param, "a tool_use block needs string `id` and `name`")
        if block.get("input") is not None and not isinstance(block["input"], dict):
            raise _bad(f"{param}.input", "must be an object")
    elif kind == "tool_result":
        if not isinstance(block.get("tool_use_id"), str):
            raise _bad(f"{param}.tool_use_id", "must be a string")
        inner = block.get("content")
        if isinstance(inner, list):
            for k, b in enumerate(inner):
                check_block(b, f"{param}.content.{k}")
        elif inner is not None and not isinstance(inner, str):
            raise _bad(f"{param}.content", "must be a string or an array of content blocks")
    elif kind in ("image", "document"):
        source = block.get("source")
        if not isinstance(source, dict) or not isinstance(source.get("type"), str):
            raise _bad(f"{param}.source", "must be an object with a string `type`")
    elif kind in ("thinking", "redacted_thinking"):
        for name in ("thinking", "signature", "data"):
            if block.get(name) is not None and not isinstance(block[name], str):
                raise _bad(f"{param}.{name}", "must be a string")


def _check_tools(body: Mapping[str, Any]) -> None:
    tools = _opt(body, "tools", list, "an array of tools")
    for i, t in enumerate(tools or []):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"]:
            raise _bad(f"tools.{i}", "must be an object with a non-empty string `name`")
        if t.get("type") is not None and not isinstance(t["type"], str):
            raise _bad(f"tools.{i}.type", "must be a string")
        if t.get("input_schema") is not None and not isinstance(t["input_schema"], dict):
            raise _bad(f"tools.{i}.input_schema", "must be an object")
        if t.get("description") is not None and not isinstance(t["description"], str):
            raise _bad(f"tools.{i}.description", "must be a string")
    choice = _opt(body, "tool_choice", dict, "an object")
    if choice is None:
        return
    if choice.get("type") not in ("auto", "any", "none", "tool"):
        raise _bad("tool_choice.type", "must be one of auto, any, none, tool", "invalid_value")
    if choice["type"] == "tool" and not isinstance(choice.get("name"), str):
        raise _bad("tool_choice.name", "must be a string")


def _check_thinking(thinking: Any) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_TYPES:
        raise _bad("thinking", f"must be an object with `type` one of {', '.join(THINKING_TYPES)}")
    if thinking["type"] == "enabled":
        budget: Any = thinking.get("budget_tokens")
        if not _is_int(budget):
            raise _bad("thinking.budget_tokens", "must be an integer")
        if not 1 <= budget <= MAX_BUDGET_TOKENS:
            raise _bad("thinking.budget_tokens", f"must be between 1 and {MAX_BUDGET_TOKENS}", "invalid_value")
