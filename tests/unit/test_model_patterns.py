"""Model patterns: matching, suffix stripping, upstream-name rewriting, listing, and their pricing."""

from __future__ import annotations

import pytest

from sluice import config
from sluice.config import ConfigError, ModelConfig, ProviderConfig, TargetConfig
from sluice.routing.patterns import candidates, match, public_name, upstream_name
from sluice.routing.table import ModelTable

P = [ProviderConfig(name="or", kind="simulated"), ProviderConfig(name="an", kind="simulated")]


def _m(name: str, provider: str, model: str, strip: list[str] | None = None) -> ModelConfig:
    return ModelConfig(name=name, targets=[TargetConfig(provider=provider, model=model)],
                       strip_suffixes=strip or [])


def test_match_and_rewrite() -> None:
    assert match("claude-*", "claude-sonnet-4") == "sonnet-4"
    assert match("claude-*", "claud") is None
    assert match("openrouter/*", "openrouter/") == ""
    assert match("a*a", "a") is None  # head and tail may not overlap
    assert match("exact", "exact") == "" and match("exact", "other") is None
    assert candidates("claude-x[1m]", ["[1m]"]) == ["claude-x"]
    assert candidates("claude-x", ["[1m]"]) == ["claude-x"]
    assert candidates("[1m]", ["[1m]"]) == ["[1m]"]
    assert upstream_name("*", "openrouter/a/b", "a/b") == "a/b"
    assert upstream_name("{model}", "claude-x", "x") == "claude-x"
    assert public_name("openrouter/*", "*", "a/b") == "openrouter/a/b"
    assert public_name("claude-*", "{model}", "claude-opus") == "claude-opus"
    assert public_name("claude-*", "{model}", "gpt-4o") is None
    assert public_name("claude-*", "fixed", "claude-opus") is None


def test_table_exact_first_then_patterns_in_order_with_suffixes_stripped() -> None:
    table = ModelTable([_m("claude-special", "an", "claude-special-2"),
                        _m("claude-*", "an", "{model}", ["[1m]"]),
                        _m("openrouter/*", "or", "*"),
                        _m("*", "or", "fallback")], P)
    r = table.get("claude-special")
    assert r is not None and r.tiers[0][0].model == "claude-special-2" and r.rule is None
    r = table.get("claude-opus-4[1m]")
    assert r is not None and r.name == "claude-opus-4[1m]" and r.rule == "claude-*"
    assert (r.tiers[0][0].provider, r.tiers[0][0].model) == ("an", "claude-opus-4")
    r = table.get("openrouter/meta/llama-3")
    assert r is not None and (r.tiers[0][0].provider, r.tiers[0][0].model) == ("or", "meta/llama-3")
    r = table.get("anything-else")
    assert r is not None and r.tiers[0][0].model == "fallback"
    assert table.names() == ["claude-special"]
    assert table.listed({"or": ["x/y"], "an": ["claude-a", "gpt-4o"]}) == ["claude-a", "openrouter/x/y"]


def test_unknown_names_stay_unknown_and_the_cache_is_bounded() -> None:
    table = ModelTable([_m("gpt-4o*", "or", "{model}")], P)
    for i in range(ModelTable._CACHE_MAX + 10):
        assert table.get(f"nope-{i}") is None
    assert len(table._cache) <= ModelTable._CACHE_MAX


def test_config_rejects_bad_patterns(tmp_path: object) -> None:
    from pathlib import Path

    def load(models: str) -> None:
        p = Path(str(tmp_path)) / "c.toml"
        p.write_text('[[providers]]\nname = "s"\nkind = "simulated"\n' + models)
        config.load(p)

    with pytest.raises(ConfigError, match="at most one"):
        load('[[models]]\nname = "a*b*"\ntargets = [{ provider = "s", model = "x" }]\n')
    with pytest.raises(ConfigError, match="only in the targets of a pattern"):
        load('[[models]]\nname = "a"\ntargets = [{ provider = "s", model = "*" }]\n')
    with pytest.raises(ConfigError, match="strip_suffixes"):
        load('[[models]]\nname = "a*"\nstrip_suffixes = [""]\ntargets = [{ provider = "s", model = "*" }]\n')
