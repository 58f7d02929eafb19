"""Request bodies are capped before anything reads them.

Starlette and FastAPI read a whole body (JSON into memory, multipart spooled to disk) before
any route or dependency runs, authentication included, so without a cap one anonymous
request could exhaust memory or disk. Each request gets a limit by route (`BodyCap`): a body
whose Content-Length is over it is answered 413 without reading a byte, and one without
Content-Length (chunked) is counted as it arrives and refused the moment it goes over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paku_iot.web.api.errors import error_response

TOO_LARGE_CODE = "payload_too_large"


@dataclass(frozen=True, slots=True)
class BodyCap:
    max_bytes: int  # what the body may hold, framing (multipart) included
    shown_bytes: int  # the limit as the operator set it, for the message
    setting: str  # the environment variable that sets it

    @property
    def message(self) -> str:
        return f"the request body is over the {self.shown_bytes}-byte limit ({self.setting})"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body goes over its cap. An HTTPException, so that
    FastAPI's body parsing passes it on as it is (any other error there becomes a 400) and
    the error handlers answer 413 with the usual body."""

    def __init__(self, cap: BodyCap) -> None:
        super().__init__(status_code=413, detail=cap.message)
        self.cap = cap


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


class LimitRequestBody:
    """ASGI middleware: `cap_for` says each request's cap (by method and path)."""

    def __init__(self, app: ASGIApp, cap_for: Callable[[Scope], BodyCap]) -> None:
        self.app = app
        self.cap_for = cap_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope)
        declared = _declared_length(scope)
        if declared is not None and declared > cap.max_bytes:
            await self._refuse(cap, scope, receive, send)
            return

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap.max_bytes:
                    raise BodyTooLarge(cap)
            return message

        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            # Read somewhere the error handlers do not reach (a middleware, say).
            if started:
                raise
            await self._refuse(cap, scope, receive, send)

    @staticmethod
    async def _refuse(cap: BodyCap, scope: Scope, receive: Receive, send: Send) -> None:
        # The server closes the connection after this answer, as the body was not read.
        response = error_response(413, TOO_LARGE_CODE, cap.message, {"Connection": "close"})
        await response(scope, receive, send)
