"""docs/deploy.md shows what the scale test runs: the nginx config verbatim, and a Sluice config that loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sluice.config import load

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_deploy_doc_includes_the_tested_nginx_config_verbatim() -> None:
    doc = (DOCS / "deploy.md").read_text()
    conf = (DOCS / "nginx-sluice.conf").read_text().strip()
    assert f"```nginx\n{conf}\n```" in doc


def test_deploy_doc_sluice_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (DOCS / "deploy.md").read_text()
    toml = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert toml is not None
    path = tmp_path / "sluice.toml"
    path.write_text(toml.group(1))
    monkeypatch.setenv("SLUICE_PG_URL", "postgresql://sluice@db.internal:5432/sluice")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SLUICE_ADMIN_TOKEN", "from-env")
    monkeypatch.delenv("SLUICE_REDIS_URL", raising=False)
    s = load(path)
    assert s.storage.url.startswith("postgresql://")
    assert s.redis.url == "redis://redis.internal:6379/0"
    assert s.admin.token == "from-env"
    assert s.server.workers == 4 and s.limits.rpm == 6000
