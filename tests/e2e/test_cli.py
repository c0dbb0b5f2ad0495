"""The CLI: keys create/list/revoke, usage, and the embedded default's first start (a key and a ready curl)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import PY, ROOT, SluiceServer, free_port, run_cli, sluice_env, stop_process, wait_health

MSG = [{"role": "user", "content": "Hello there"}]


def _post(base: str, key: str, body: dict[str, object]) -> tuple[int, bytes]:
    req = urllib.request.Request(base + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as r:
        return r.status, r.read()


def test_keys_create_list_revoke(sluice: SluiceServer) -> None:
    a = sluice.create_key("alice")
    b = sluice.create_key("bob", models=["gpt-4o", "sim-local"])
    for made, name in ((a, "alice"), (b, "bob")):
        assert made["name"] == name and made["key"].startswith("sk-") and made["id"] in made["key"]
    assert b["models"] == ["gpt-4o", "sim-local"]

    table = sluice.cli("keys", "list")
    as_json = sluice.cli("keys", "list", "--json")
    assert table.returncode == 0 and as_json.returncode == 0
    for out in (table.stdout, as_json.stdout):
        assert a["key"] not in out and b["key"] not in out  # secrets are never listed
        assert a["key"][len("sk-") + 12:] not in out
    assert "alice" in table.stdout and a["id"] in table.stdout and "gpt-4o,sim-local" in table.stdout
    listed = {k["id"]: k for k in json.loads(as_json.stdout)}
    assert listed[a["id"]]["revoked"] is False and listed[b["id"]]["models"] == ["gpt-4o", "sim-local"]
    assert all("hash" not in field for k in listed.values() for field in k)

    res = sluice.cli("keys", "revoke", a["id"])
    assert res.returncode == 0 and a["id"] in res.stdout
    listed = {k["id"]: k for k in json.loads(sluice.cli("keys", "list", "--json").stdout)}
    assert listed[a["id"]]["revoked"] is True and listed[b["id"]]["revoked"] is False
    assert "revoked" in sluice.cli("keys", "list").stdout
    again = sluice.cli("keys", "revoke", a["id"])
    assert again.returncode != 0  # nothing active to revoke
    assert sluice.cli("keys", "revoke", "nosuchkeyid0").returncode != 0


def test_usage_after_a_few_requests(sluice: SluiceServer) -> None:
    made = sluice.create_key("metered")
    for body in ({"model": "sim-local", "messages": MSG},
                 {"model": "sim-local", "messages": MSG, "stream": True},
                 {"model": "gpt-4o", "messages": MSG, "stream": True}):
        status, _ = _post(sluice.base_url, made["key"], body)
        assert status == 200

    def rows() -> list[dict[str, object]]:
        res = sluice.cli("usage", "--json")
        assert res.returncode == 0, res.stderr
        return [r for r in json.loads(res.stdout) if r["key_id"] == made["id"]]
    end = time.monotonic() + 5
    got = rows()
    while sum(int(r["requests"]) for r in got) < 3 and time.monotonic() < end:  # type: ignore[call-overload]
        time.sleep(0.1)
        got = rows()
    by_model = {r["model"]: r for r in got}
    assert by_model["sim-local"]["requests"] == 2 and by_model["gpt-4o"]["requests"] == 1
    assert by_model["gpt-4o"]["prompt_tokens"] == 14 and by_model["gpt-4o"]["completion_tokens"] == 6
    assert int(by_model["sim-local"]["completion_tokens"]) > 0  # type: ignore[call-overload]
    assert all(r["errors"] == 0 and r["key_name"] == "metered" for r in got)
    table = sluice.cli("usage")
    assert table.returncode == 0 and "metered" in table.stdout and "sim-local" in table.stdout
    assert made["key"] not in table.stdout


def test_usage_show_and_requests_for_a_real_request(sluice: SluiceServer) -> None:
    made = sluice.create_key("looked-up")
    req = urllib.request.Request(sluice.base_url + "/chat/completions", headers={
        "Authorization": f"Bearer {made['key']}", "Content-Type": "application/json"},
        data=json.dumps({"model": "sim-local", "messages": MSG, "stream": True}).encode())
    with urllib.request.urlopen(req, timeout=20) as r:
        rid = r.headers["x-request-id"]
        assert r.read().endswith(b"data: [DONE]\n\n")
    assert sluice.ledger_for(rid)  # committed before [DONE]; waits only if the ledger is not durable

    shown = sluice.cli("usage", "show", rid, "--json")
    assert shown.returncode == 0, shown.stderr
    rec = json.loads(shown.stdout)
    assert (rec["request_id"], rec["key_id"], rec["model"], rec["stream"], rec["status"]) == (
        rid, made["id"], "sim-local", True, 200)
    text = sluice.cli("usage", "show", rid)
    assert text.returncode == 0 and f"looked-up ({made['id']})" in text.stdout and "sim-local" in text.stdout
    log = sluice.cli("usage", "requests", "--key", "looked-up")
    assert log.returncode == 0 and rid in log.stdout and made["key"] not in log.stdout
    today = sluice.cli("usage", "--key", made["id"], "--since", "1h", "--group", "day,model", "--json")
    assert [(r["model"], r["requests"]) for r in json.loads(today.stdout)] == [("sim-local", 1)]
    missing = sluice.cli("usage", "show", "req_nosuchrequest")
    assert missing.returncode == 1 and "no request" in missing.stderr


def _start_default(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([PY, "-m", "sluice", "serve", "--data-dir", str(data_dir), "--port", str(port)],
                                cwd=data_dir.parent, env=sluice_env(PYTHONUNBUFFERED="1"), stdout=out,
                                stderr=subprocess.STDOUT)


def _banner(log: Path) -> str:
    end = time.monotonic() + 20
    while time.monotonic() < end:
        text = log.read_text(errors="replace")
        if "Sluice listening" in text:
            return text
        time.sleep(0.05)
    raise AssertionError(log.read_text(errors="replace"))


def test_embedded_default_first_start_prints_a_key_and_a_curl_that_works(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    log1 = tmp_path / "first.log"
    proc = _start_default(data, port, log1)
    try:
        wait_health(f"http://127.0.0.1:{port}", proc)
        out = _banner(log1)
        keys = re.findall(r"sk-[A-Za-z0-9]{52}", out)
        assert len(set(keys)) == 1, out
        key = keys[0]
        m = re.search(r"(curl http://127\.0\.0\.1:\d+/v1/chat/completions.*?\}')", out, re.S)
        assert m is not None, out
        curl = m.group(1)
        assert f"127.0.0.1:{port}" in curl and key in curl and '"stream": true' in curl
        assert (data / "sluice.db").exists()
        if shutil.which("curl"):
            res = subprocess.run(["bash", "-c", curl + " --silent --show-error --max-time 20"],
                                 capture_output=True, timeout=30)
            assert res.returncode == 0, res.stderr
            body = res.stdout
        else:  # the same request, by hand
            payload = json.loads(re.search(r"-d '(.*)'", curl, re.S).group(1))  # type: ignore[union-attr]
            body = _post(f"http://127.0.0.1:{port}/v1", key, payload)[1]
        assert body.endswith(b"data: [DONE]\n\n")
        text = "".join(json.loads(p)["choices"][0]["delta"].get("content") or ""
                       for p in re.findall(rb"^data: (\{.*\})$", body, re.M) if json.loads(p)["choices"])
        assert text.startswith("Hello! This is Sluice's simulated model")
        assert b'"model":"sluice-sim"' in body
    finally:
        stop_process(proc)
    # uvicorn shuts down gracefully, then re-raises the captured SIGTERM: -15 is its normal exit here
    assert proc.returncode in (0, -15)
    assert "Traceback" not in log1.read_text(errors="replace")

    log2 = tmp_path / "second.log"
    proc = _start_default(data, port, log2)
    try:
        wait_health(f"http://127.0.0.1:{port}", proc)
        out2 = _banner(log2)
        assert not re.search(r"sk-[A-Za-z0-9]{52}", out2), out2  # no new key on a second start
        status, _ = _post(f"http://127.0.0.1:{port}/v1", key, {"model": "sluice-sim", "messages": MSG})
        assert status == 200  # the first key still works
    finally:
        stop_process(proc)
    listed = json.loads(run_cli("keys", "list", "--json", "--data-dir", str(data)).stdout)
    assert len(listed) == 1


@pytest.mark.parametrize("args", [["keys", "create"], ["nope"], []])
def test_cli_usage_errors_exit_non_zero(args: list[str]) -> None:
    res = run_cli(*args)
    assert res.returncode != 0 and res.stderr


def test_version(tmp_path: Path) -> None:
    res = subprocess.run([PY, "-m", "sluice", "--version"], cwd=ROOT, env=sluice_env(), capture_output=True,
                         text=True, timeout=20)
    assert res.returncode == 0 and res.stdout.startswith("sluice ")
