"""Config validation: unknown keys and bad values are rejected with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.config import ConfigError, load


def _write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "sluice.toml"
    p.write_text(text)
    return str(p)


def test_embedded_default_serves_the_simulated_model() -> None:
    s = load(None)
    assert [m.name for m in s.models] == ["sluice-sim"]
    assert s.storage.url.startswith("sqlite:///")


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="colour"):
        load(_write(tmp_path, "[server]\ncolour = 'blue'\n"))


def test_bad_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load(_write(tmp_path, "[server]\nport = 'eighty'\n"))


def test_env_substitution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UP_KEY", "secret-value")
    path = _write(tmp_path, """
[[providers]]
name = "up"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "${UP_KEY}"

[[models]]
name = "m"
targets = [{ provider = "up", model = "m" }]
""")
    assert load(path).providers[0].api_key == "secret-value"


def test_missing_env_var_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    path = _write(tmp_path, '[[providers]]\nname = "up"\nkind = "openai"\nbase_url = "http://x/v1"\n'
                            'api_key = "${NOPE_KEY}"\n')
    with pytest.raises(ConfigError, match=r"providers\[0\]\.api_key.*NOPE_KEY"):
        load(path)


def test_target_must_name_a_known_provider(tmp_path: Path) -> None:
    path = _write(tmp_path, '[[models]]\nname = "m"\ntargets = [{ provider = "ghost", model = "m" }]\n')
    with pytest.raises(ConfigError, match=r"models\[0\]\.targets\[0\]\.provider"):
        load(path)


@pytest.mark.parametrize(("line", "key"), [
    ("max_headers = 0", "server.max_headers"),
    ("max_header_bytes = 1e9", "server.max_header_bytes"),
    ("header_timeout_seconds = 0", "server.header_timeout_seconds"),
    ("keepalive_seconds = -1", "server.keepalive_seconds"),
    ("max_upstream_reply_bytes = 10", "server.max_upstream_reply_bytes"),
    ("max_header_bytes = 65536\nmax_head_bytes = 32768", "server.max_head_bytes"),
])
def test_client_and_upstream_limits_have_ranges(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load(_write(tmp_path, f"[server]\n{line}\n"))


def test_the_total_timeout_must_be_positive(tmp_path: Path) -> None:
    text = "[[providers]]\nname = 'p'\nkind = 'simulated'\ntimeouts = { total = 0 }\n"
    with pytest.raises(ConfigError, match=r"providers\[0\]\.timeouts"):
        load(_write(tmp_path, text))
