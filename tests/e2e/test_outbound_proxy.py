"""A provider reached through a real forward proxy (Debian's tinyproxy, started here on a free port with
its own config) over TLS, with a CA the test makes: the proxy sees the CONNECT, the upstream the request,
and without the provider's `ca_file` the same upstream is refused (so the CA is really what is trusted)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.sluice_proc import SluiceProcess, free_port
from tests.harness import one_upstream
from tests.sim.openai_sim import OpenAISim


def _cert(tmp: Path) -> tuple[Path, ssl.SSLContext]:
    """A test CA and a server certificate for 127.0.0.1 signed by it: (CA file, server context)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sluice test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_file, key_file)
    return ca_file, ctx


@pytest.fixture
def tinyproxy(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    if not Path(binary).exists():
        pytest.skip("tinyproxy is not installed (scripts/services installs it)")
    port, log = free_port(), tmp_path / "tinyproxy.log"
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(f'Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogLevel Info\n'
                    f'LogFile "{log}"\nPidFile "{tmp_path / "tinyproxy.pid"}"\nMaxClients 20\n')
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # until it accepts connections (bounded; it starts in milliseconds)
            assert proc.poll() is None, log.read_text() if log.exists() else "tinyproxy exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port, log
    finally:
        proc.terminate()
        proc.wait(10)


def _config(base_url: str, proxy_port: int, ca_file: Path | None) -> dict[str, Any]:
    ca = {"ca_file": ca_file} if ca_file else {}
    return one_upstream(base_url, ["gpt-4o"], name="tls", api_key="sk-through-the-proxy",
                        proxy=f"http://127.0.0.1:{proxy_port}", timeouts={"connect": 10, "first_byte": 20, "idle": 20},
                        **ca)


async def test_through_a_forward_proxy_to_a_tls_upstream_with_a_test_ca(
        tmp_path: Path, tinyproxy: tuple[int, Path]) -> None:
    proxy_port, proxy_log = tinyproxy
    ca_file, server_ctx = _cert(tmp_path)
    async with OpenAISim(ssl_context=server_ctx) as sim:
        assert sim.base_url.startswith("https://")
        (tmp_path / "ok").mkdir()
        async with SluiceProcess(tmp_path / "ok", _config(sim.base_url, proxy_port, ca_file)) as s:
            client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
            s.closers.append(client.close)
            msgs: Any = [{"role": "user", "content": "hi"}]
            done = await client.chat.completions.create(model="gpt-4o", messages=msgs)
            assert done.choices[0].message.content
            stream = await client.chat.completions.create(model="gpt-4o", messages=msgs,
                                                          stream=True)
            assert [c async for c in stream]
        assert len(sim.requests) == 2 and sim.last.headers["Authorization"] == "Bearer sk-through-the-proxy"
        assert f"CONNECT 127.0.0.1:{sim.port}" in await asyncio.to_thread(proxy_log.read_text)

        (tmp_path / "no-ca").mkdir()
        async with SluiceProcess(tmp_path / "no-ca", _config(sim.base_url, proxy_port, None)) as s:
            client = openai.AsyncOpenAI(base_url=s.base_url, api_key=s.create_key(), max_retries=0)
            s.closers.append(client.close)
            with pytest.raises(openai.APIStatusError) as err:
                await client.chat.completions.create(model="gpt-4o", messages=msgs)
            assert err.value.status_code == 503 and "certificate" in err.value.message.lower()
        assert len(sim.requests) == 2  # the untrusted upstream never got a request
