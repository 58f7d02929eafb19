"""One delivery attempt over HTTP, and when to try again (docs/alerts.md, "Guarantees").

`send` posts a rendered notification and reports what happened; it never raises for what a
network does (refused, timeout, TLS, a reset): the outbox records the attempt and retries.
Only a 2xx answer is delivered. `backoff` spaces the retries, and a delivery is retried for
GIVE_UP_AFTER before it is given up, so a receiver down for an hour gets everything once back.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from paku_iot.alerts.resolve import ResolutionTimeout, resolve
from paku_iot.alerts.signing import HEADER as SIGNATURE_HEADER
from paku_iot.alerts.signing import signature_header
from paku_iot.storage.records import AlertDestination, DestinationType

# The delivery's id in every attempt: the same notification retried carries the same key,
# so a receiver that got it but whose answer was lost can drop the repeat.
DELIVERY_HEADER = "X-Paku-Delivery"
USER_AGENT = "paku-iot-alerts"

FIRST_RETRY = timedelta(seconds=5)
MAX_RETRY = timedelta(minutes=10)
JITTER = 0.1  # +-10%: deliveries that failed together do not all retry in the same second
GIVE_UP_AFTER = timedelta(hours=24)

# What a failed answer's body may add to the attempt's error, for the operator to read.
ERROR_BODY_CHARS = 200
ERROR_CHARS = 500

_jitter = random.Random()  # noqa: S311 - spreads retries; nothing secret depends on it


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None  # None: no HTTP answer
    error: str | None
    duration_ms: float
    delivered: bool


async def send(
    client: httpx.AsyncClient,
    destination: AlertDestination,
    body: bytes,
    headers: dict[str, str],
    timeout: float,  # noqa: ASYNC109 - a bound on the whole attempt, see below
    *,
    delivery_id: int | str | None = None,
    now: float | None = None,
) -> SendResult:
    """POST `body` with `headers` (from payloads.render) to the destination. A webhook
    with a secret is signed at `now` (unix seconds, default the clock): each attempt anew,
    so a retry hours later still passes a receiver's replay window."""
    request_headers = {"User-Agent": USER_AGENT, **headers}
    if delivery_id is not None:
        request_headers[DELIVERY_HEADER] = str(delivery_id)
    if destination.type is DestinationType.WEBHOOK and destination.secret:
        t = int(time.time() if now is None else now)
        request_headers[SIGNATURE_HEADER] = signature_header(destination.secret, body, t)
    started = time.perf_counter()
    resolving = True
    try:
        # httpx's timeout bounds each phase (connect, each read); the outer one bounds the
        # whole attempt, so a receiver that answers a byte a second cannot hold it.
        async with asyncio.timeout(timeout):
            url, extensions = await _resolved(destination.url, timeout, request_headers)
            resolving = False
            async with client.stream(
                "POST",
                url,
                content=body,
                headers=request_headers,
                timeout=timeout,
                extensions=extensions,
                follow_redirects=False,  # a redirect is not a delivery (nor a reason to re-POST)
            ) as response:
                status = response.status_code
                snippet = b""
                if not 200 <= status < 300:
                    # At most a little of the answer: a receiver could send anything.
                    async for chunk in response.aiter_bytes():
                        snippet += chunk
                        if len(snippet) >= ERROR_BODY_CHARS:
                            break
    except (ResolutionTimeout, TimeoutError):
        # The lookup's own bound and the attempt's are the same: whichever fires first.
        error = (
            _describe(
                ResolutionTimeout(f"{_host(destination.url)} did not resolve within {timeout:g} s")
            )
            if resolving
            else f"timed out after {timeout:g} s"
        )
        return SendResult(None, error, _ms(started), delivered=False)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        return SendResult(None, _describe(exc), _ms(started), delivered=False)
    if 200 <= status < 300:
        return SendResult(status, None, _ms(started), delivered=True)
    text = snippet[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
    error = f"HTTP {status}" + (f": {text}" if text else "")
    return SendResult(status, error[:ERROR_CHARS], _ms(started), delivered=False)


async def _resolved(
    url: str,
    timeout: float,  # noqa: ASYNC109 - the attempt's bound, also the lookup's
    headers: dict[str, str],
) -> tuple[httpx.URL, dict[str, Any]]:
    """The URL with its host resolved here (alerts/resolve.py) rather than by httpx, the
    original host in `headers` (Host) and, for HTTPS, in the extensions (the TLS server
    name, which the certificate is checked against)."""
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return parsed, {}  # httpx says what is wrong with it
    if _through_proxy(parsed):
        return parsed, {}  # the proxy resolves the name (httpx takes HTTPS_PROXY and the like)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    address = await resolve(parsed.host, port, timeout)
    if address == parsed.host:
        return parsed, {}
    headers["Host"] = parsed.netloc.decode("ascii")
    extensions: dict[str, Any] = {}
    if parsed.scheme == "https":
        extensions["sni_hostname"] = parsed.host
    return parsed.copy_with(host=address), extensions


def _through_proxy(url: httpx.URL) -> bool:
    """Whether the environment sends requests to this URL through a proxy, as httpx reads
    it (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY)."""
    proxies = urllib.request.getproxies()
    wanted = url.scheme in proxies or "all" in proxies
    return wanted and not urllib.request.proxy_bypass(url.host)


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or url
    except httpx.InvalidURL:
        return url


def backoff(attempts: int) -> timedelta:
    """How long to wait after `attempts` failed attempts: 5 s, 10 s, 20 s... doubling up
    to 10 minutes, each within +-10%, never over the cap."""
    exponent = min(max(attempts, 1) - 1, 16)  # 2**16 x 5 s is far past the cap already
    base = min(FIRST_RETRY * 2**exponent, MAX_RETRY)
    delay: timedelta = base * _jitter.uniform(1 - JITTER, 1 + JITTER)
    return min(delay, MAX_RETRY)


def given_up(created_at: datetime, now: datetime) -> bool:
    """Whether a delivery created at `created_at` and still failing is to be given up."""
    return now - created_at >= GIVE_UP_AFTER


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _describe(exc: BaseException) -> str:
    """A short reason for the attempt log: the kind of failure first (ConnectError,
    ReadTimeout...), then what the library said, which may be empty for timeouts."""
    text = str(exc).strip()
    name = type(exc).__name__
    return (f"{name}: {text}" if text else name)[:ERROR_CHARS]
