"""Responses tools -> chat function tools, and the way back for the calls the model makes.

Freeform `custom` tools (Codex's `apply_patch`) become a function with one string argument; tools grouped
in a `namespace` become functions named `<namespace>__<name>`. `ToolNames` turns a chat call's function
name back into the Responses item's `name` (and `namespace`), and says whether it was a freeform tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sluice.errors import InvalidRequest

# the single argument a freeform tool's text travels in when the upstream only has function tools
CUSTOM_ARG = "input"
_CUSTOM_PARAMS = {"type": "object", "properties": {CUSTOM_ARG: {"type": "string"}}, "required": [CUSTOM_ARG]}
_SEP = "__"


def chat_name(namespace: Any, name: str) -> str:
    return f"{namespace}{_SEP}{name}" if isinstance(namespace, str) and namespace else name


@dataclass(frozen=True, slots=True)
class ToolNames:
    custom: frozenset[str] = frozenset()                                   # chat names of freeform tools
    namespaced: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # chat name -> (namespace, name)

    def identity(self, name: str) -> dict[str, str]:
        """A call item's `name` (and `namespace`) for the chat function `name` the model called."""
        found = self.namespaced.get(name)
        return {"name": found[1], "namespace": found[0]} if found else {"name": name}


def chat_tools(v: Any) -> tuple[list[dict[str, Any]], ToolNames]:
    if v is None:
        return [], ToolNames()
    if not isinstance(v, list):
        raise InvalidRequest("'tools' must be an array", param="tools", code="invalid_type")
    out: list[dict[str, Any]] = []
    custom: set[str] = set()
    namespaced: dict[str, tuple[str, str]] = {}
    for i, t in enumerate(v):
        kind = t.get("type") if isinstance(t, dict) else None
        if kind == "namespace" and isinstance(t.get("name"), str) and isinstance(t.get("tools"), list):
            for j, inner in enumerate(t["tools"]):
                fn = _function(inner, f"tools[{i}].tools[{j}]", t["name"], custom)
                if fn is not None:
                    namespaced[fn["function"]["name"]] = (t["name"], inner["name"])
                    out.append(fn)
            continue
        fn = _function(t, f"tools[{i}]", None, custom)
        if fn is not None:
            out.append(fn)
    return out, ToolNames(frozenset(custom), namespaced)


def _function(t: Any, where: str, namespace: str | None, custom: set[str]) -> dict[str, Any] | None:
    kind = t.get("type") if isinstance(t, dict) else None
    if kind not in ("function", "custom"):
        return None  # built-in tools (web_search, ...) only OpenAI itself runs; a translated upstream cannot
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.name must be a non-empty string", param=f"{where}.name",
                             code="invalid_value")
    fn: dict[str, Any] = {"name": chat_name(namespace, name)}
    if isinstance(t.get("description"), str):
        fn["description"] = t["description"]
    if kind == "custom":
        custom.add(fn["name"])
        fn["parameters"] = _CUSTOM_PARAMS
    else:
        fn["parameters"] = t.get("parameters") or {"type": "object", "properties": {}}
        if t.get("strict") is not None:
            fn["strict"] = t["strict"]
    return {"type": "function", "function": fn}


def chat_tool_choice(v: Any) -> Any:
    if v is None or v in ("auto", "none", "required"):
        return v
    if isinstance(v, dict) and v.get("type") in ("function", "custom") and isinstance(v.get("name"), str):
        return {"type": "function", "function": {"name": chat_name(v.get("namespace"), v["name"])}}
    if isinstance(v, dict):
        return None  # allowed_tools, built-in tool choices: the upstream decides
    raise InvalidRequest("'tool_choice' must be auto, none, required or a tool", param="tool_choice",
                         code="invalid_value")
