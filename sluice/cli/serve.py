"""`sluice serve`: prepare storage (migrations, a first key on an empty store), then run uvicorn."""

from __future__ import annotations

import asyncio
import logging
import math
import os

import uvicorn

from sluice.config import DEFAULT_MODEL, Settings, load
from sluice.http.app import App, create_app
from sluice.storage import open_store


def app_from_env() -> App:
    """The factory each worker process calls (`--workers N`); config comes from the environment."""
    return create_app(load())


async def _prepare(settings: Settings) -> str | None:
    """Run migrations; on a first start with no keys, create one and return its secret."""
    from sluice.cli.main import create_key

    store = open_store(settings)
    await store.open()
    try:
        if await store.count_keys() == 0:
            _, secret = await create_key(store, "default", None)
            return secret
        return None
    finally:
        await store.close()


def serve(settings: Settings, *, config_path: str | None, data_dir: str | None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    secret = asyncio.run(_prepare(settings))
    host, port, workers = settings.server.host, settings.server.port, settings.server.workers
    base = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}/v1"
    if secret:
        model = settings.models[0].name if settings.models else DEFAULT_MODEL
        print(_first_key_banner(secret, base, model), flush=True)
    print(f"Sluice listening on {base} ({workers} worker{'s' if workers > 1 else ''}, "
          f"storage {settings.storage.url.split('://')[0]})", flush=True)
    common = dict(host=host, port=port, loop="uvloop", http="httptools", lifespan="on", access_log=False,
                  log_level="warning", timeout_keep_alive=75, backlog=4096, server_header=False, proxy_headers=False,
                  timeout_graceful_shutdown=math.ceil(settings.server.shutdown_grace_seconds))
    if workers > 1:
        # each worker process builds its own app from the same configuration
        if config_path:
            os.environ["SLUICE_CONFIG"] = os.path.abspath(config_path)
        if data_dir:
            os.environ["SLUICE_DATA_DIR"] = os.path.abspath(data_dir)
        uvicorn.run("sluice.cli.serve:app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    else:
        uvicorn.run(create_app(settings), **common)  # type: ignore[arg-type]
    return 0


def _first_key_banner(secret: str, base: str, model: str) -> str:
    return f"""
First start: created an API key. It is shown only this once; keep it somewhere safe.

    {secret}

Try it:

    curl {base}/chat/completions \\
      -H "Authorization: Bearer {secret}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "{model}", "stream": true, "messages": [{{"role": "user", "content": "Hello"}}]}}'
"""
