"""The runtime catalog: database entries over the file, disabled providers hidden, keys sealed at rest."""

from __future__ import annotations

import orjson
import pytest

from sluice import config
from sluice.channels.catalog import merge
from sluice.channels.secrets import SecretBox
from sluice.config import ConfigError
from sluice.errors import Conflict
from sluice.storage.base import CatalogEntry


def _entry(kind: str, name: str, fields: dict[str, object], *, enabled: bool = True,
           keys: str | None = None) -> CatalogEntry:
    return CatalogEntry(kind, name, orjson.dumps({"enabled": enabled, "fields": fields, "keys": keys}).decode(), 0)


def test_database_entries_replace_add_and_hide() -> None:
    base = config.load()  # the embedded default: provider `simulated`, model `sluice-sim`
    box = SecretBox("s3cret-for-tests")
    sealed = box.seal(orjson.dumps({"api_keys": ["sk-one-0123456789"]}).decode())
    assert "sk-one" not in sealed and box.open(sealed) is not None
    merged = merge(base, [
        _entry("provider", "up", {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}, keys=sealed),
        _entry("model", "m", {"targets": [{"provider": "up", "model": "x"}, {"provider": "simulated",
                                                                              "model": "sluice-sim"}]}),
    ], box)
    assert [p.name for p in merged.providers] == ["simulated", "up"]
    assert merged.provider("up").api_keys == ["sk-one-0123456789"]
    hidden = merge(base, [_entry("provider", "simulated", {"kind": "simulated"}, enabled=False)], box)
    assert hidden.providers == [] and hidden.models == []  # its only model went with it


def test_invalid_or_unreadable_entries_are_refused() -> None:
    base = config.load()
    box = SecretBox("s3cret-for-tests")
    with pytest.raises(ConfigError, match="unknown provider"):
        merge(base, [_entry("model", "m", {"targets": [{"provider": "nope", "model": "x"}]})], box)
    with pytest.raises(ConfigError, match="decrypted"):
        merge(base, [_entry("provider", "up", {"kind": "openai", "base_url": "http://h/v1"},
                            keys=SecretBox("another-secret").seal("{}"))], box)
    with pytest.raises(Conflict):   # well-formed, refused while the server has no secret
        SecretBox(None).seal("{}")
