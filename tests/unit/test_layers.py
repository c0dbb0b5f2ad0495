"""The import contract of STYLE.md, checked on the source so the picture cannot rot.

Dependencies point one way: cli -> http -> relay -> (routing, metering, auth, providers) ->
(schema, errors, sse, upstream). Providers never import storage, metering, auth or http. Only
`upstream/` and the server protocol `server/` import httptools, only `cli/` imports uvicorn's server
machinery, and only `config.py` reads the environment.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "sluice"

# layer -> the sluice modules it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "providers": ("sluice.storage", "sluice.metering", "sluice.auth", "sluice.http", "sluice.relay",
                  "sluice.routing", "sluice.cli", "sluice.web"),
    "schema": ("sluice.providers", "sluice.relay", "sluice.http", "sluice.metering", "sluice.storage",
               "sluice.upstream", "sluice.routing", "sluice.auth", "sluice.cli"),
    "errors": ("sluice.providers", "sluice.relay", "sluice.http", "sluice.metering", "sluice.storage",
               "sluice.upstream", "sluice.routing", "sluice.auth", "sluice.cli"),
    "sse": ("sluice.",),
    "upstream": ("sluice.providers", "sluice.relay", "sluice.http", "sluice.metering", "sluice.storage",
                 "sluice.routing", "sluice.auth", "sluice.cli", "sluice.schema"),
    "relay": ("sluice.http", "sluice.cli", "sluice.web"),
    "routing": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.metering", "sluice.storage"),
    "metering": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.providers"),
    "auth": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.providers", "sluice.metering"),
    "storage": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.providers", "sluice.routing"),
    "accounts": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.providers", "sluice.routing"),
    "http": ("sluice.cli",),
    # the server protocol knows HTTP and ASGI, nothing of what is served (the id of a refusal is passed in)
    "server": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.providers", "sluice.routing", "sluice.metering",
               "sluice.storage", "sluice.auth", "sluice.upstream", "sluice.web", "sluice.dialects"),
    "observability": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.providers", "sluice.routing",
                      "sluice.upstream", "sluice.web"),
    "channels": ("sluice.http", "sluice.cli", "sluice.relay", "sluice.web", "sluice.metering", "sluice.auth",
                 "sluice.routing"),
    # front doors are pure translations: inbound request -> canonical, canonical chunks -> their events
    "dialects": ("sluice.storage", "sluice.metering", "sluice.auth", "sluice.http", "sluice.relay",
                 "sluice.routing", "sluice.cli", "sluice.web", "sluice.upstream", "sluice.providers"),
}

# third-party module -> the only files (relative to sluice/) allowed to import it
ONLY_IN: dict[str, tuple[str, ...]] = {
    "httptools": ("upstream/", "server/"),  # the client pool; the server protocol
    "aiohttp": (),
    "httpx": (),
    "uvicorn": ("cli/",),
    "asyncpg": ("storage/postgres.py",),
    "redis": ("metering/redis_limits.py", "channels/rates.py"),
    "prometheus_client": ("observability/",),
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [(p.relative_to(ROOT).as_posix(), ast.parse(p.read_text(), str(p))) for p in sorted(ROOT.rglob("*.py"))]


def _imports(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _layer(rel: str) -> str:
    return rel.split("/", 1)[0].removesuffix(".py")


MODULES = _modules()
Modules = list[tuple[str, ast.Module]]


def layer_offenders(modules: Modules) -> list[str]:
    return [f"sluice/{rel} imports {m}" for rel, tree in modules for m in sorted(_imports(tree))
            for f in FORBIDDEN.get(_layer(rel), ()) if m == f or m.startswith(f if f.endswith(".") else f + ".")]


def boundary_offenders(modules: Modules) -> list[str]:
    return [f"sluice/{rel} imports {mod}" for rel, tree in modules for mod in sorted(_imports(tree))
            if mod.split(".")[0] in ONLY_IN and not rel.startswith(ONLY_IN[mod.split(".")[0]] or ("\0",))]


def environment_offenders(modules: Modules) -> list[str]:
    return [f"sluice/{rel} lines {lines}" for rel, tree in modules if rel != "config.py"
            if (lines := _reads_environment(tree))]


def test_layering() -> None:
    bad = layer_offenders(MODULES)
    assert not bad, "against the layering in STYLE.md:\n" + "\n".join(bad)


def test_third_party_boundaries() -> None:
    bad = boundary_offenders(MODULES)
    assert not bad, "third-party imports outside their module:\n" + "\n".join(bad)


def test_only_config_reads_the_environment() -> None:
    bad = environment_offenders(MODULES)
    assert not bad, "reads the environment outside config.py:\n" + "\n".join(bad)


def _reads_environment(tree: ast.Module) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("getenv", "environb") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            lines.append(node.lineno)
        if isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.ctx, ast.Load):
            parent_store = False
            for outer in ast.walk(tree):
                if isinstance(outer, ast.Subscript) and outer.value is node and isinstance(outer.ctx, ast.Store):
                    parent_store = True
            if not parent_store:
                lines.append(node.lineno)
    return lines


def test_the_checks_can_fail() -> None:
    bad = ast.parse("import os\nimport aiohttp\nx = os.environ.get('X')\nfrom sluice.storage import base\n")
    assert _reads_environment(bad) == [3]
    assert "aiohttp" in _imports(bad) and "sluice.storage" in _imports(bad)


def test_every_offender_is_listed() -> None:
    bad = ast.parse("import os\nimport aiohttp\nimport uvicorn\nx = os.environ.get('X')\n"
                    "from sluice.storage import base\nfrom sluice.http import app\n")
    mods = [("providers/x.py", bad), ("cli/y.py", bad), ("config.py", bad)]
    assert layer_offenders(mods) == ["sluice/providers/x.py imports sluice.http",
                                     "sluice/providers/x.py imports sluice.storage"]
    assert boundary_offenders(mods) == [
        "sluice/providers/x.py imports aiohttp", "sluice/providers/x.py imports uvicorn",
        "sluice/cli/y.py imports aiohttp", "sluice/config.py imports aiohttp", "sluice/config.py imports uvicorn"]
    assert environment_offenders(mods) == ["sluice/providers/x.py lines [4]", "sluice/cli/y.py lines [4]"]


# SSE framing is written by the codec and the one streaming response; everything else asks the codec
FRAMERS = ("sse.py", "http/streaming.py")
_FRAMING = (b"data:", b"event:", b": ", b"id:", b"retry:")


def _framing_literals(tree: ast.Module) -> list[int]:
    return sorted(node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, bytes) and node.value.startswith(_FRAMING))


def test_only_the_codec_and_the_streaming_response_write_sse_framing() -> None:
    offenders = [f"sluice/{rel}:{line}" for rel, tree in MODULES if rel not in FRAMERS
                 for line in _framing_literals(tree)]
    assert not offenders, f"SSE framing bytes written outside {FRAMERS}: {offenders}"


def test_the_framing_check_can_fail() -> None:
    assert _framing_literals(ast.parse('x = b"data: " + p + b"\\n\\n"\ny = b": keep-alive\\n\\n"\n')) == [1, 2]
