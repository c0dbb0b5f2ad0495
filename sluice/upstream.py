"""The shared upstream HTTP client pool, and the ONE place that catches the HTTP client's exceptions.

aiohttp stays behind this module: providers see `UpstreamClient.request()` and `UpstreamResponse`,
and every transport failure comes out as a `sluice.errors.UpstreamError` subclass.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator, Mapping

import aiohttp

from sluice.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from sluice.providers.base import Timeouts

_MAX_ERROR_BODY = 1 << 20


class UpstreamResponse:
    """An upstream's answer. Close it (`close()`) in a `finally`; iterating to the end releases it."""

    __slots__ = ("_idle", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse, idle: float) -> None:
        self._resp = resp
        self._idle = idle
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def read(self, limit: int = 64 << 20) -> bytes:
        """The whole body (bounded). Used for plain replies and error bodies."""
        try:
            async with asyncio.timeout(self._idle):
                data = bytearray()
                while True:
                    part = await self._resp.content.read(1 << 16)
                    if not part:
                        return bytes(data)
                    data += part
                    if len(data) > limit:
                        raise UpstreamError("the upstream reply exceeded the size limit")
        except TimeoutError:
            raise UpstreamTimeout("the upstream stopped sending before its reply was complete") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the upstream connection failed while reading: {_describe(exc)}") from None
        finally:
            self._resp.release()

    async def read_error_body(self) -> bytes:
        try:
            return await self.read(_MAX_ERROR_BODY)
        except UpstreamError:
            return b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; each read waits at most the idle timeout."""
        content = self._resp.content
        complete = False
        try:
            while True:
                # aiohttp applies sock_read (= idle) to every read; no per-read timer of our own
                data = await content.readany()
                if not data:
                    complete = True
                    return
                yield data
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(f"the upstream sent nothing for {self._idle:g}s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the upstream connection failed mid-stream: {_describe(exc)}") from None
        finally:
            if complete:
                self._resp.release()  # body read to the end: the connection goes back to the pool
            else:
                self.close()

    def close(self) -> None:
        """Drop the connection (not back to the pool: the body may be unread)."""
        self._resp.close()


class UpstreamClient:
    """A keep-alive connection pool shared by every provider of one Sluice process."""

    def __init__(self, *, limit: int = 0, limit_per_host: int = 0) -> None:
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._session: aiohttp.ClientSession | None = None

    def _get(self) -> aiohttp.ClientSession:
        if self._session is None:
            conn = aiohttp.TCPConnector(limit=self._limit, limit_per_host=self._limit_per_host,
                                        ttl_dns_cache=300, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=conn, auto_decompress=True, skip_auto_headers=(
                "User-Agent",), cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], body: bytes | None,
                      timeouts: Timeouts) -> UpstreamResponse:
        """Send and wait for the status line and headers (bounded by connect and first_byte)."""
        session = self._get()
        timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect,
                                        sock_read=timeouts.idle)
        try:
            async with asyncio.timeout(timeouts.first_byte + timeouts.connect):
                resp = await session.request(method, url, data=body, headers=headers, timeout=timeout,
                                             allow_redirects=False, compress=None)
        except TimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except aiohttp.ServerTimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
            raise UpstreamUnavailable(f"the upstream could not be reached: {_describe(exc)}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"the upstream request failed: {_describe(exc)}") from None
        return UpstreamResponse(resp, timeouts.idle)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """An upstream's `retry-after-ms` / `retry-after` (seconds or HTTP date) in seconds, if any."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(ra)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
