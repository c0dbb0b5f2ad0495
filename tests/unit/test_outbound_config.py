"""Per-provider outbound proxy and CA file: explicit settings, HTTPS_PROXY/HTTP_PROXY and NO_PROXY."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice import config
from sluice.config import ConfigError

PROVIDERS = """
[[providers]]
name = "https"
kind = "openai"
base_url = "https://api.example.com/v1"
[[providers]]
name = "plain"
kind = "openai"
base_url = "http://vllm.internal:8000/v1"
[[providers]]
name = "exempt"
kind = "openai"
base_url = "https://llm.corp.example/v1"
[[providers]]
name = "direct"
kind = "openai"
base_url = "https://api.other.com/v1"
proxy = ""
[[providers]]
name = "own"
kind = "openai"
base_url = "https://api.other.com/v1"
proxy = "http://user:pw@proxy.b:3128"
"""


def _load(tmp_path: Path, text: str) -> config.Settings:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return config.load(p)


def test_environment_proxies_with_no_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.a:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.h:80")
    monkeypatch.setenv("NO_PROXY", "localhost, .corp.example")
    s = _load(tmp_path, PROVIDERS)
    got = {p.name: p.proxy for p in s.providers}
    assert got == {"https": "http://proxy.a:3128", "plain": "http://proxy.h:80", "exempt": None,
                   "direct": "", "own": "http://user:pw@proxy.b:3128"}


def test_bad_proxy_or_ca_file_is_refused(tmp_path: Path) -> None:
    base = '[[providers]]\nname = "x"\nkind = "openai"\nbase_url = "https://h/v1"\n'
    with pytest.raises(ConfigError, match="proxy"):
        _load(tmp_path, base + 'proxy = "socks5://h:1"\n')
    with pytest.raises(ConfigError, match="ca_file"):
        _load(tmp_path, base + f'ca_file = "{tmp_path / "missing.pem"}"\n')
