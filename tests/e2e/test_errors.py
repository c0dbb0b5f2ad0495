"""Every bad-input path gets the right status, an OpenAI-shaped error body and an x-request-id; and config
validation names what is wrong."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    PY,
    ROOT,
    SluiceServer,
    free_port,
    run_cli,
    sluice_env,
    stop_process,
    wait_health,
    write_config,
)
from tests.e2e.rawhttp import Head, RawConn, chat_body
from tests.harness import one_upstream, write_toml
from tests.sim.openai_sim import ThreadedSim

SERVER_OPTIONS = {"max_body_bytes": 2048}


async def call(sluice: SluiceServer, method: str, path: str, body: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[Head, bytes]:
    conn = await RawConn.open(sluice.port)
    try:
        await conn.send(method, path, body=body, headers=headers)
        head = await conn.head()
        return head, await conn.body(head)
    finally:
        conn.close()


def assert_openai_error(head: Head, body: bytes, status: int, *, code: str | type[Any] | None = Any,
                        param: str | type[Any] | None = Any) -> dict[str, Any]:
    assert head.status == status, body
    assert (head.get("content-type") or "").startswith("application/json")
    assert (head.get("x-request-id") or "").startswith("req_")
    doc = json.loads(body)
    assert "detail" not in doc
    assert set(doc) == {"error"}
    err: dict[str, Any] = doc["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert isinstance(err["type"], str)
    assert err["code"] is None or isinstance(err["code"], str)
    if code is not Any:
        assert err["code"] == code, err
    if param is not Any:
        assert err["param"] == param, err
    return err


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("body", "param", "code"), [
    (b'{"model": "gpt-4o", "messages": [', None, "invalid_json"),
    (b"[1, 2, 3]", None, "invalid_json"),
    (b'"just a string"', None, "invalid_json"),
    (b"", None, "invalid_json"),
    (json.dumps({"messages": MSG}).encode(), "model", Any),
    (json.dumps({"model": 42, "messages": MSG}).encode(), "model", Any),
    (json.dumps({"model": "gpt-4o"}).encode(), "messages", Any),
    (json.dumps({"model": "gpt-4o", "messages": []}).encode(), "messages", Any),
    (json.dumps({"model": "gpt-4o", "messages": "hi"}).encode(), "messages", Any),
    (json.dumps({"model": "gpt-4o", "messages": ["hi"]}).encode(), "messages[0]", Any),
    (json.dumps({"model": "gpt-4o", "messages": MSG, "stream": "true"}).encode(), "stream", Any),
    (json.dumps({"model": "gpt-4o", "messages": MSG, "max_tokens": "10"}).encode(), "max_tokens", Any),
    (json.dumps({"model": "gpt-4o", "messages": MSG, "max_tokens": 0}).encode(), "max_tokens", Any),
    (json.dumps({"model": "gpt-4o", "messages": MSG, "temperature": "0.5"}).encode(), "temperature", Any),
    (json.dumps({"model": "gpt-4o", "messages": MSG, "n": 1.5}).encode(), "n", Any),
    (json.dumps({"model": "gpt-4o", "messages": MSG, "stream": True,
                 "stream_options": {"include_usage": "yes"}}).encode(), "stream_options.include_usage", Any),
], ids=["malformed", "array", "string", "empty", "no-model", "model-int", "no-messages", "empty-messages",
        "messages-string", "message-not-object", "stream-string", "max_tokens-string", "max_tokens-zero",
        "temperature-string", "n-float", "include_usage-string"])
async def test_bad_bodies_are_400(sluice: SluiceServer, api_key: str, sim: ThreadedSim, body: bytes,
                                  param: str | None, code: Any) -> None:
    head, raw = await call(sluice, "POST", "/v1/chat/completions", body, auth(api_key))
    err = assert_openai_error(head, raw, 400, code=code, param=param)
    assert err["type"] == "invalid_request_error"
    assert sim.requests == []


async def test_oversized_body_is_413(sluice: SluiceServer, api_key: str) -> None:
    big = chat_body(messages=[{"role": "user", "content": "x" * 5000}])
    head, raw = await call(sluice, "POST", "/v1/chat/completions", big, auth(api_key))
    assert_openai_error(head, raw, 413, code="request_too_large")


async def test_oversized_chunked_body_without_content_length_is_413(sluice: SluiceServer, api_key: str) -> None:
    conn = await RawConn.open(sluice.port)
    try:
        await conn.send("POST", "/v1/chat/completions", body=None,
                        headers={**auth(api_key), "Transfer-Encoding": "chunked"})
        part = b"x" * 1000
        for _ in range(5):
            conn.writer.write(b"%x\r\n%s\r\n" % (len(part), part))
        conn.writer.write(b"0\r\n\r\n")
        await conn.writer.drain()
        head = await conn.head()
        assert_openai_error(head, await conn.body(head), 413, code="request_too_large")
    finally:
        conn.close()


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer"}, {"Authorization": "Bearer sk-garbage"}, {"Authorization": "Basic dXNlcjpwdw=="},
    {"Authorization": "Bearer sk-sluice-abc.def"},
], ids=["missing", "empty-bearer", "garbage", "basic", "malformed-sluice"])
async def test_missing_or_garbage_key_is_401(sluice: SluiceServer, headers: dict[str, str]) -> None:
    head, raw = await call(sluice, "POST", "/v1/chat/completions", chat_body(),
                           {**headers, "Content-Type": "application/json"})
    err = assert_openai_error(head, raw, 401, code="invalid_api_key")
    assert "sk-garbage" not in err["message"]  # never echo the key
    head, raw = await call(sluice, "GET", "/v1/models", None, headers)
    assert_openai_error(head, raw, 401)


async def test_revoked_key_is_401_soon_after_revocation(sluice: SluiceServer) -> None:
    made = sluice.create_key("to-revoke")
    head, _ = await call(sluice, "POST", "/v1/chat/completions", chat_body("sim-local", stream=False),
                         auth(made["key"]))
    assert head.status == 200
    res = await asyncio.to_thread(sluice.cli, "keys", "revoke", made["id"])
    assert res.returncode == 0, res.stderr
    end = time.monotonic() + 5  # key cache is 0.1 s in this config
    while True:
        head, raw = await call(sluice, "POST", "/v1/chat/completions", chat_body("sim-local", stream=False),
                               auth(made["key"]))
        if head.status != 200 or time.monotonic() > end:
            break
        await asyncio.sleep(0.05)
    assert_openai_error(head, raw, 401, code="key_revoked")


async def test_unknown_model_is_404_model_not_found(sluice: SluiceServer, api_key: str) -> None:
    for stream in (True, False):
        head, raw = await call(sluice, "POST", "/v1/chat/completions", chat_body("gpt-404", stream=stream),
                               auth(api_key))
        assert_openai_error(head, raw, 404, code="model_not_found", param="model")
    head, raw = await call(sluice, "GET", "/v1/models/gpt-404", None, auth(api_key))
    assert_openai_error(head, raw, 404, code="model_not_found")


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nothing"), ("POST", "/v1/images/generations"),
                                              ("GET", "/nope"), ("POST", "/v1/audio/speech")])
async def test_unknown_path_is_404(sluice: SluiceServer, api_key: str, method: str, path: str) -> None:
    head, raw = await call(sluice, method, path, b"{}" if method == "POST" else None, auth(api_key))
    assert_openai_error(head, raw, 404)


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/chat/completions"), ("PUT", "/v1/chat/completions"),
                                              ("DELETE", "/v1/models"), ("POST", "/v1/models")])
async def test_wrong_method_is_405(sluice: SluiceServer, api_key: str, method: str, path: str) -> None:
    head, raw = await call(sluice, method, path, b"{}" if method in ("POST", "PUT") else None, auth(api_key))
    assert_openai_error(head, raw, 405)


async def test_cors_preflight_allows_sdk_headers(sluice: SluiceServer) -> None:
    asked = "authorization, content-type, x-stainless-os, x-stainless-lang, x-stainless-retry-count"
    for req_headers in (asked, None):
        h = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"}
        if req_headers:
            h["Access-Control-Request-Headers"] = req_headers
        head, _ = await call(sluice, "OPTIONS", "/v1/chat/completions", None, h)
        assert head.status in (200, 204)
        allow = (head.get("access-control-allow-headers") or "").lower()
        for name in ("authorization", "content-type", "x-stainless-os", "x-stainless-retry-count"):
            assert name in allow
        assert "POST" in (head.get("access-control-allow-methods") or "")
        assert head.get("access-control-allow-origin") in ("*", "http://localhost:5173")
        assert head.get("x-request-id")


async def test_cors_on_actual_request_exposes_request_id(sluice: SluiceServer, api_key: str) -> None:
    head, _ = await call(sluice, "POST", "/v1/chat/completions", chat_body("sim-local", stream=False),
                         {**auth(api_key), "Origin": "http://localhost:5173"})
    assert head.status == 200
    assert head.get("access-control-allow-origin") in ("*", "http://localhost:5173")
    assert "x-request-id" in (head.get("access-control-expose-headers") or "").lower()


async def test_stream_options_without_stream_is_never_forwarded(sluice: SluiceServer, api_key: str,
                                                                 sim: ThreadedSim) -> None:
    body = json.dumps({"model": "gpt-4o", "messages": MSG, "stream_options": {"include_usage": True}}).encode()
    head, raw = await call(sluice, "POST", "/v1/chat/completions", body, auth(api_key))
    if head.status == 200:
        assert "stream_options" not in sim.last.body
    else:
        assert_openai_error(head, raw, 400, param="stream_options")


# --- configuration ---

def _bad(tmp_path: Path, text: str) -> str:
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    res = run_cli("serve", "--config", str(p), timeout=20)
    assert res.returncode != 0
    return res.stderr


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    err = _bad(tmp_path, "[server]\nprot = 8000\n")
    assert "prot" in err
    err = _bad(tmp_path, "[servr]\nport = 8000\n")
    assert "servr" in err
    err = _bad(tmp_path, '[[providers]]\nname = "a"\nkind = "openai"\nbase_url = "http://x/v1"\napi_kee = "k"\n')
    assert "api_kee" in err


def test_bad_config_values_are_named(tmp_path: Path) -> None:
    assert "server.port" in _bad(tmp_path, '[server]\nport = "eighty"\n')
    assert "server.port" in _bad(tmp_path, "[server]\nport = 70000\n")
    assert "kind" in _bad(tmp_path, '[[providers]]\nname = "a"\nkind = "openia"\n')
    assert "base_url" in _bad(tmp_path, '[[providers]]\nname = "a"\nkind = "openai"\n')
    err = _bad(tmp_path, '[[models]]\nname = "m"\ntargets = [{ provider = "nope", model = "x" }]\n')
    assert "nope" in err and "models[0]" in err
    assert "invalid TOML" in _bad(tmp_path, "[server\n")
    res = run_cli("serve", "--config", str(tmp_path / "missing.toml"))
    assert res.returncode != 0 and "not found" in res.stderr


def test_env_var_substitution(tmp_path: Path, sim: ThreadedSim) -> None:
    db = tmp_path / "from-env.db"
    port = free_port()
    cfg = tmp_path / "env.toml"
    write_toml(cfg, {"server": {"host": "${E2E_HOST}", "port": port}, "storage": {"url": "sqlite:///${E2E_DB}"},
                     **one_upstream("${E2E_SIM_URL:-http://127.0.0.1:1/v1}", {"m": "fx-text"},
                                    api_key="${E2E_UPSTREAM_KEY}")})
    # a variable that is not set, with no default, is an error naming it
    res = run_cli("keys", "create", "--name", "x", "--json", "--config", str(cfg),
                  env=sluice_env(E2E_DB=str(db), E2E_HOST="127.0.0.1"))
    assert res.returncode != 0 and "E2E_UPSTREAM_KEY" in res.stderr
    env = sluice_env(E2E_DB=str(db), E2E_HOST="127.0.0.1", E2E_UPSTREAM_KEY="sk-from-the-env",
                     E2E_SIM_URL=sim.base_url)
    res = run_cli("keys", "create", "--name", "x", "--json", "--config", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    assert db.exists()  # the storage URL came from the environment
    key = json.loads(res.stdout)["key"]
    # a server started from it reaches the upstream named by the environment, with the key from it
    with (tmp_path / "log").open("wb") as out:
        proc = subprocess.Popen([PY, "-m", "sluice", "serve", "--config", str(cfg)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_health(f"http://127.0.0.1:{port}", proc)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions",
                                     data=json.dumps({"model": "m", "messages": MSG}).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        assert sim.last.headers["Authorization"] == "Bearer sk-from-the-env"
    finally:
        stop_process(proc)


def test_write_config_helper_produces_a_valid_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "ok.toml", sim_url="http://127.0.0.1:9/v1", port=free_port(), db=tmp_path / "d.db")
    res = run_cli("keys", "list", "--json", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []
