"""What a key pool adds to one upstream attempt on the request path (rotation, counters), in process.

    python -m bench.channels        # prints microseconds per attempt: no pool vs a pool of three keys
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sluice import config
from sluice.channels.hub import ChannelHub
from sluice.config import ProviderConfig

N = 200_000


async def _fn(key: str | None) -> str | None:
    return key


async def main() -> None:
    s = config.load()
    s.providers.append(ProviderConfig(name="pool", kind="openai", base_url="http://127.0.0.1:9/v1",
                                      api_keys=["sk-a-0000000000001", "sk-b-0000000000002", "sk-c-0000000000003"]))
    store: Any = None  # the success path never writes
    hub = ChannelHub(s, {}, store)
    for name in ("simulated", "pool"):
        t = time.perf_counter()
        for _ in range(N):
            await hub.call(name, _fn)
        per = (time.perf_counter() - t) / N * 1e6
        t = time.perf_counter()
        for _ in range(N):
            await _fn(None)
        base = (time.perf_counter() - t) / N * 1e6
        print(f"{name:9s}: {per:.2f} us per attempt through the hub, {base:.2f} us direct: +{per - base:.2f} us")


if __name__ == "__main__":
    asyncio.run(main())
