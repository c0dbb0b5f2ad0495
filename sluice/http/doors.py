"""Each front door's way of stating a failure, for the request scope: a response before the 200 in its
envelope, and the last event of a stream that failed after it."""

from __future__ import annotations

from sluice.dialects.anthropic_messages.reply import error_body, error_event
from sluice.dialects.chat_completions import error_event as chat_error_event
from sluice.dialects.responses.reply import error_event as responses_error_event
from sluice.errors import SluiceError
from sluice.http.asgi import JSON_CT, Headers, Send, send_bytes, send_error
from sluice.http.lifecycle import Door


async def _send_anthropic_error(send: Send, exc: SluiceError, headers: Headers) -> None:
    await send_bytes(send, exc.status, error_body(exc), [JSON_CT, *exc.headers(), *headers])


OPENAI = Door(send_error, chat_error_event)
ANTHROPIC = Door(_send_anthropic_error, error_event)
RESPONSES = Door(send_error, responses_error_event)
