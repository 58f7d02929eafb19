"""Notification bodies, their Slack and ntfy shapes, the signature, and sending them to a
real HTTP receiver the test starts: one that answers, one that fails then recovers, one
that is slow, and an address where nothing listens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta
from email.header import decode_header
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from paku_iot.alerts.payloads import notification, render, summary
from paku_iot.alerts.sender import (
    DELIVERY_HEADER,
    GIVE_UP_AFTER,
    MAX_RETRY,
    backoff,
    given_up,
    send,
)
from paku_iot.alerts.signing import HEADER, signature_header, verify
from paku_iot.storage.records import (
    AlertDestination,
    AlertEvent,
    AlertKind,
    AlertRecord,
    AlertRuleRecord,
    AlertState,
    DestinationType,
)
from tests.support.receiver import not_listening, receiver

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
SECRET = "whsec-test-0123456789"

RULE = AlertRuleRecord(
    id="rule-1",
    name="Boiler hot",
    kind=AlertKind.THRESHOLD,
    device_id=None,
    model="boiler",
    field="temp",
    above=80.0,
    below=None,
    for_seconds=0,
    silence_seconds=None,
    per_minute=None,
    destinations=(),
    enabled=True,
    created_at=T0,
    updated_at=T0,
)
VALUES = {
    "field": "temp",
    "value": 81.2,
    "above": 80.0,
    "below": None,
    "forSeconds": 0,
    "ts": "2026-12-01T12:00:00Z",
}
OPEN = AlertRecord(
    id=42,
    rule_id="rule-1",
    device_id="kitchen-01",
    state=AlertState.OPEN,
    opened_at=T0,
    resolved_at=None,
    values=VALUES,
)


def body(event: AlertEvent = AlertEvent.OPENED, alert: AlertRecord = OPEN) -> dict[str, Any]:
    return notification(
        event, alert, RULE, {"id": "kitchen-01", "model": "boiler"}, T0 + timedelta(seconds=1)
    )


def webhook(url: str, secret: str | None = SECRET) -> AlertDestination:
    return AlertDestination(DestinationType.WEBHOOK, url, secret)


# ---- bodies ---------------------------------------------------------------------------------


def test_the_body_schema() -> None:
    assert body() == {
        "event": "opened",
        "alert": {
            "id": 42,
            "ruleId": "rule-1",
            "deviceId": "kitchen-01",
            "state": "open",
            "openedAt": "2026-12-01T12:00:00Z",
            "resolvedAt": None,
            "values": VALUES,
        },
        "rule": {"id": "rule-1", "name": "Boiler hot", "kind": "threshold"},
        "device": {"id": "kitchen-01", "model": "boiler"},
        "sentAt": "2026-12-01T12:00:01Z",
    }
    resolved = AlertRecord(
        42,
        "rule-1",
        "kitchen-01",
        AlertState.RESOLVED,
        T0,
        T0 + timedelta(minutes=3, microseconds=250_000),
        VALUES,
    )
    later = notification(AlertEvent.RESOLVED, resolved, RULE, None, T0)
    assert later["event"] == "resolved"
    assert later["alert"]["state"] == "resolved"
    assert later["alert"]["resolvedAt"] == "2026-12-01T12:03:00.250000Z"
    assert later["device"] == {"id": "kitchen-01"}  # no device row: its id only


def test_summary_lines() -> None:
    assert summary(body()) == "[paku] OPENED threshold 'Boiler hot' on kitchen-01: temp 81.2 > 80"
    back = body(AlertEvent.RESOLVED)
    back["alert"]["values"] = {**VALUES, "value": 79}
    assert (
        summary(back)
        == "[paku] RESOLVED threshold 'Boiler hot' on kitchen-01: temp 79 back in range"
    )


def test_webhook_body_is_the_compact_json() -> None:
    content, headers = render(webhook("http://x"), body())
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(content) == body()
    assert b" " not in content.replace(b"Boiler hot", b"")


def test_slack_shape() -> None:
    content, headers = render(AlertDestination(DestinationType.SLACK, "http://x"), body())
    assert headers["Content-Type"] == "application/json"
    message = json.loads(content)
    assert message["text"] == summary(body())
    assert message["blocks"][0] == {
        "type": "section",
        "text": {"type": "plain_text", "text": summary(body())},
    }
    assert message["blocks"][1]["type"] == "context"
    assert "alert 42" in message["blocks"][1]["elements"][0]["text"]


def test_ntfy_shape() -> None:
    destination = AlertDestination(DestinationType.NTFY, "http://x/topic")
    content, headers = render(destination, body())
    assert content.decode() == summary(body())
    assert headers["Title"] == "Boiler hot on kitchen-01"
    assert headers["Priority"] == "high"
    assert headers["Tags"] == "rotating_light,threshold"
    assert headers["Content-Type"].startswith("text/plain")
    _, resolved = render(destination, body(AlertEvent.RESOLVED))
    assert resolved["Priority"] == "default"
    assert resolved["Tags"] == "white_check_mark,threshold"


def test_ntfy_title_outside_ascii_is_encoded() -> None:
    named = body()
    named["rule"]["name"] = "Kühlraum\nzu warm 🔥"
    _, headers = render(AlertDestination(DestinationType.NTFY, "http://x/t"), named)
    title = headers["Title"]
    assert title.isascii()
    assert title.startswith("=?utf-8?")
    decoded = "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in decode_header(title)
    )
    assert decoded == "Kühlraum zu warm 🔥 on kitchen-01"


# ---- signature ----------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_t_dot_body() -> None:
    content = b'{"event":"opened"}'
    expected = hmac.new(SECRET.encode(), b"1764590400." + content, hashlib.sha256).hexdigest()
    assert signature_header(SECRET, content, 1764590400) == f"t=1764590400,v1={expected}"


@pytest.mark.parametrize(
    ("header_of", "secret", "now", "ok"),
    [
        (lambda h: h, SECRET, 1000, True),
        (lambda h: h, SECRET, 1000 + 300, True),
        (lambda h: h, SECRET, 1000 + 301, False),  # a replay, too old
        (lambda h: h, SECRET, 1000 - 301, False),  # from the future
        (lambda h: h, "other-secret", 1000, False),
        (lambda h: h.replace("t=1000", "t=1001"), SECRET, 1000, False),
        (lambda h: h + ",v1=00", SECRET, 1000, True),  # any listed signature may match
        (lambda h: "v1=00," + h, SECRET, 1000, True),
        (lambda h: h.split(",")[1], SECRET, 1000, False),  # no t
        (lambda h: h.split(",")[0], SECRET, 1000, False),  # no v1
        (lambda h: h.replace("t=1000", "t=-1000"), SECRET, -1000, False),
        (lambda h: h.replace("t=1000", "t=1e3"), SECRET, 1000, False),
        (lambda h: h + ",v1=é", SECRET, 1000, True),
        (lambda h: "garbage", SECRET, 1000, False),
        (lambda h: "", SECRET, 1000, False),
    ],
)
def test_verify(header_of: Any, secret: str, now: float, ok: bool) -> None:
    content = b'{"event":"opened"}'
    header = header_of(signature_header(SECRET, content, 1000))
    assert verify(header, secret, content, now) is ok
    if ok:
        assert not verify(header, secret, content + b" ", now)  # the body is signed too


# ---- sending ------------------------------------------------------------------------------------


async def test_a_signed_webhook_reaches_the_receiver() -> None:
    async with receiver() as hook, httpx.AsyncClient() as client:
        content, headers = render(webhook(hook.url), body())
        result = await send(client, webhook(hook.url), content, headers, 5, delivery_id=7)
    assert result.delivered
    assert result.status_code == 200
    assert result.error is None
    assert result.duration_ms > 0
    [request] = hook.requests
    assert request.method == "POST"
    assert request.path == "/hook"
    assert request.headers["content-type"] == "application/json"
    assert request.headers[DELIVERY_HEADER.lower()] == "7"
    assert verify(request.headers[HEADER.lower()], SECRET, request.body, time.time())
    assert not verify(request.headers[HEADER.lower()], "wrong", request.body, time.time())
    sent = json.loads(request.body)
    assert sent["event"] == "opened"
    assert set(sent["alert"]) == {
        "id",
        "ruleId",
        "deviceId",
        "state",
        "openedAt",
        "resolvedAt",
        "values",
    }
    assert sent["device"]["id"] == "kitchen-01"


async def test_no_secret_or_not_a_webhook_no_signature() -> None:
    async with receiver() as hook, httpx.AsyncClient() as client:
        for destination in (
            webhook(hook.url, secret=None),
            AlertDestination(DestinationType.SLACK, hook.url, SECRET),
            AlertDestination(DestinationType.NTFY, hook.url, SECRET),
        ):
            content, headers = render(destination, body())
            assert (await send(client, destination, content, headers, 5)).delivered
    assert len(hook.requests) == 3
    assert all(HEADER.lower() not in r.headers for r in hook.requests)
    assert json.loads(hook.requests[1].body)["text"].startswith("[paku] OPENED")
    assert hook.requests[2].headers["priority"] == "high"
    assert hook.requests[2].body.decode() == summary(body())


async def test_a_receiver_that_fails_then_recovers_gets_it_once_delivered() -> None:
    async with receiver(statuses=[500, 503]) as hook, httpx.AsyncClient() as client:
        destination = webhook(hook.url)
        content, headers = render(destination, body())
        results = []
        t = 1_000_000_000
        # What the outbox does: attempt, and on failure wait backoff(attempts); each attempt
        # signed at its own time.
        for attempt in range(1, 10):
            result = await send(client, destination, content, headers, 5, delivery_id=9, now=t)
            results.append(result)
            if result.delivered:
                break
            t += int(backoff(attempt).total_seconds())
    assert [r.status_code for r in results] == [500, 503, 200]
    assert [r.delivered for r in results] == [False, False, True]
    assert results[0].error == "HTTP 500: ok"
    assert len(hook.requests) == 3
    assert {r.headers[DELIVERY_HEADER.lower()] for r in hook.requests} == {"9"}
    assert {r.body for r in hook.requests} == {content}
    stamps = [int(r.headers[HEADER.lower()].split(",")[0][2:]) for r in hook.requests]
    assert stamps[0] < stamps[1] < stamps[2]
    assert verify(hook.requests[2].headers[HEADER.lower()], SECRET, content, stamps[2])


@pytest.mark.parametrize("status", [301, 400, 404, 410])
async def test_anything_but_2xx_is_not_delivered(status: int) -> None:
    async with receiver(default=status) as hook, httpx.AsyncClient() as client:
        content, headers = render(webhook(hook.url), body())
        result = await send(client, webhook(hook.url), content, headers, 5)
    assert not result.delivered
    assert result.status_code == status
    assert result.error is not None
    assert result.error.startswith(f"HTTP {status}")
    assert len(hook.requests) == 1  # a redirect is not followed


async def test_a_long_error_answer_is_cut_short() -> None:
    async with receiver(default=500) as hook, httpx.AsyncClient() as client:
        hook.answer = b"x" * 100_000
        content, headers = render(webhook(hook.url), body())
        result = await send(client, webhook(hook.url), content, headers, 5)
    assert result.error is not None
    assert len(result.error) <= 220


async def test_connection_refused_is_reported_not_raised() -> None:
    with not_listening() as url:
        async with httpx.AsyncClient() as client:
            content, headers = render(webhook(url), body())
            result = await send(client, webhook(url), content, headers, 5, delivery_id=1)
    assert not result.delivered
    assert result.status_code is None
    assert result.error is not None
    assert "ConnectError" in result.error


async def test_bad_urls_are_reported_not_raised() -> None:
    async with httpx.AsyncClient() as client:
        for url in ("ftp://example.invalid/x", "http://", "not a url"):
            result = await send(client, webhook(url), b"{}", {}, 1)
            assert not result.delivered, url
            assert result.status_code is None
            assert result.error


async def test_a_slow_receiver_times_out() -> None:
    async with receiver(delay_s=5) as hook, httpx.AsyncClient() as client:
        content, headers = render(webhook(hook.url), body())
        started = time.monotonic()
        result = await send(client, webhook(hook.url), content, headers, 0.3)
    assert time.monotonic() - started < 3
    assert not result.delivered
    assert result.status_code is None
    assert result.error is not None
    assert "time" in result.error.lower()


# ---- retries --------------------------------------------------------------------------------


def test_backoff_grows_doubling_and_caps() -> None:
    for attempts, base in [(1, 5), (2, 10), (3, 20), (4, 40), (7, 320)]:
        for _ in range(20):
            delay = backoff(attempts).total_seconds()
            assert base * 0.9 <= delay <= base * 1.1, (attempts, delay)
    for attempts in (8, 9, 20, 1000):
        for _ in range(20):
            delay = backoff(attempts)
            assert MAX_RETRY * 0.9 <= delay <= MAX_RETRY
    # Jitter: deliveries that failed together spread out.
    assert len({backoff(5) for _ in range(20)}) > 1


def test_a_receiver_down_for_an_hour_is_retried_long_enough() -> None:
    assert timedelta(hours=24) <= GIVE_UP_AFTER
    waited = timedelta()
    attempts = 0
    while waited < timedelta(hours=1):
        attempts += 1
        waited += backoff(attempts)
    # Back after an hour: the next attempt comes within the cap, long before giving up.
    assert waited <= timedelta(hours=1) + MAX_RETRY
    assert not given_up(T0, T0 + waited)
    assert given_up(T0, T0 + GIVE_UP_AFTER)


# ---- name resolution ------------------------------------------------------------------------

HOOK_HOST = "hooks.paku.test"  # resolved by `names` below, as a name server would
SLOW_HOST = "slow.paku.test"  # whose name server never answers in time


@pytest.fixture
def names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resolver for two test names: HOOK_HOST (and `other.` of it) is 127.0.0.1,
    SLOW_HOST takes 5 s to fail, as a name server that does not answer does."""
    system = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == SLOW_HOST:
            time.sleep(5)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        if host in (HOOK_HOST, f"other.{HOOK_HOST}"):
            host = "127.0.0.1"
        return system(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):  # direct, unless a test says
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.lower(), raising=False)


def certificate_for(name: str, directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A CA and a server certificate for `name` only (no IP address in it): the server's TLS
    context, and a client's that trusts the CA."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.now(UTC)

    def signed(builder: x509.CertificateBuilder) -> x509.Certificate:
        return (
            builder.issuer_name(ca_name)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
            .sign(ca_key, hashes.SHA256())
        )

    ca = signed(
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .public_key(ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    server = signed(
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .public_key(key.public_key())
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    )
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(
        cadata=ca.public_bytes(serialization.Encoding.PEM).decode()
    )
    return server_context, client_context


async def test_a_host_name_is_resolved_and_sent_as_the_host(names: None) -> None:
    async with receiver(host_name=HOOK_HOST) as hook, httpx.AsyncClient() as client:
        content, headers = render(webhook(hook.url), body())
        result = await send(client, webhook(hook.url), content, headers, 5)
    assert result.delivered, result
    [request] = hook.requests
    assert request.headers["host"] == hook.url.split("/")[2]  # hooks.paku.test:<port>


async def test_https_checks_the_certificate_against_the_host_name(
    names: None, tmp_path: Path
) -> None:
    """Connected by address, the TLS server name and the certificate check are still the
    URL's host: the certificate names only that host, so a check against the address, or
    another name for the same address, fails."""
    server_tls, client_tls = certificate_for(HOOK_HOST, tmp_path)
    async with (
        receiver(tls=server_tls, host_name=HOOK_HOST) as hook,
        httpx.AsyncClient(verify=client_tls) as client,
    ):
        content, headers = render(webhook(hook.url), body())
        result = await send(client, webhook(hook.url), content, headers, 5)
        assert result.delivered, result
        assert hook.requests[0].headers["host"] == hook.url.split("/")[2]

        elsewhere = hook.url.replace(HOOK_HOST, f"other.{HOOK_HOST}")
        refused = await send(client, webhook(elsewhere), content, headers, 5)
        assert not refused.delivered
        assert refused.error is not None
        assert "certificate" in refused.error.lower(), refused.error
    assert len(hook.requests) == 1


def test_a_name_that_does_not_resolve_in_time_holds_neither_the_attempt_nor_the_exit(
    names: None,
) -> None:
    """The attempt gives up on the name after its bound, and the event loop closes without
    waiting for the lookup, which the system's resolver would otherwise hold for its own
    timeout (here 5 s)."""

    async def one_attempt() -> Any:
        async with httpx.AsyncClient() as client:
            url = f"http://{SLOW_HOST}/hook"
            return await send(client, webhook(url), b"{}", {}, 0.5)

    started = time.monotonic()
    result = asyncio.run(one_attempt())
    assert time.monotonic() - started < 2.5
    assert not result.delivered
    assert result.error == f"ResolutionTimeout: {SLOW_HOST} did not resolve within 0.5 s"


async def test_through_a_proxy_the_proxy_resolves_the_name(
    names: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With HTTP_PROXY set, the attempt goes to the proxy with the URL as given: a name only
    the proxy knows still arrives. The receiver plays the proxy (a forward proxy gets the
    whole URL in its request line)."""
    async with receiver() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/hook"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with httpx.AsyncClient() as client:
            url = "http://only-the-proxy-knows.test/hook"
            result = await send(client, webhook(url), b"{}", {}, 5)
    assert result.delivered, result
    assert proxy.requests[0].path == url
