"""A small synchronous client for paku-iot's HTTP API, used by the admin CLI."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from paku_iot.exceptions import PakuError, Unavailable


class ApiError(PakuError):
    """The API answered with an error: its status, code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.http_status = status


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`token` None: for the few routes anyone may read (the OTA public key). `verify`:
        the TLS context an HTTPS server is verified with (True: httpx's default CAs)."""
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"} if token is not None else {},
            timeout=timeout,
            verify=verify,
        )
        self.base_url = base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        files: dict[str, Any] | None = None,
    ) -> Any:
        try:
            response = self._http.request(
                method, path, json=json, params=params, headers=headers, data=data, files=files
            )
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach the paku-iot API at {self.base_url}: {self._why(exc)}"
            ) from None
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.is_error:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise ApiError(
                response.status_code,
                str(error.get("code", "http_error")),
                str(error.get("message", response.text[:200] or response.reason_phrase)),
            )
        return body

    def _why(self, exc: httpx.TransportError) -> str:
        # Imported here: only a failure needs the device's TLS wording (and its imports).
        from paku_iot.device.tls import explain_tls_failure  # noqa: PLC0415

        url = self._http.base_url
        port = url.port or (443 if url.scheme == "https" else 80)
        return explain_tls_failure(exc, f"{url.host}:{port}") or str(exc)

    def pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a paged listing, following `next` cursors."""
        items: list[dict[str, Any]] = []
        query = dict(params)
        while True:
            page = self.request("GET", path, params=query)
            items.extend(page["items"])
            if not page.get("next"):
                return items
            query["cursor"] = page["next"]
