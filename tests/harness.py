"""The one test harness: a config builder that writes TOML from a dict, and settings loaded from it.

Everything that needs a Sluice config (in-process apps, `sluice serve` processes) builds it here, so
the TOML a test writes and the TOML the loader validates are the same text."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sluice.config import Settings, load


def toml_value(v: Any) -> str:
    """One TOML value: strings and numbers, booleans, inline tables and arrays (what configs use)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Path):
        return json.dumps(str(v))
    return json.dumps(v)


def toml(doc: Mapping[str, Any]) -> str:
    """A config document as TOML: a mapping value is a table, a list of mappings an array of tables
    (`providers`, `models`), anything else a top-level key."""
    top = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not _table(v) and not _tables(v)]
    out = [*top, ""] if top else []
    for k, v in doc.items():
        if _table(v):
            out += [f"[{k}]", *(f"{json.dumps(str(kk))} = {toml_value(vv)}" for kk, vv in v.items()), ""]
        elif _tables(v):
            for item in v:
                out += [f"[[{k}]]", *(f"{json.dumps(str(kk))} = {toml_value(vv)}" for kk, vv in item.items()), ""]
    return "\n".join(out)


def write_toml(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(toml(doc), encoding="utf-8")
    return path


def settings(tmp: Path, doc: Mapping[str, Any]) -> Settings:
    """Validated settings from `doc` (a SQLite store in `tmp` unless `doc` names one), as `sluice serve`
    would load them from the same TOML."""
    full = {"storage": {"url": f"sqlite:///{tmp / 'sluice.db'}"}, **doc}
    return load(write_toml(tmp / "sluice.toml", full))


def _table(v: Any) -> bool:
    return isinstance(v, Mapping)


def _tables(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)
