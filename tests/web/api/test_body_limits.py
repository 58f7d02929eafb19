"""Request bodies are capped before anything reads them, and admin routes refuse a caller
without a good token before reading a byte of the body: an anonymous client cannot make the
server hold or spool a large upload. Over a real socket (uvicorn), because what matters is
what the server does while the body is still on its way."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass

import httpx
import pytest

from paku_iot.settings import Settings
from tests.support import ADMIN_TOKEN

BODY_LIMIT = 64 * 1024
FIRMWARE_LIMIT = 256 * 1024
# Long enough for a server that waits for the rest of the body to show it: the answers that
# must come without the body come in milliseconds.
PATIENCE_S = 5.0

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"http_max_body_bytes": BODY_LIMIT, "ota_max_firmware_bytes": FIRMWARE_LIMIT}
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, str]:
        error: dict[str, str] = json.loads(self.body)["error"]
        return error


def _raw_request(url: str, head: str, chunks: list[bytes]) -> Answer:
    """Send `head` and whatever of `chunks` the server takes before it answers, then read the
    answer. A server that stops reading (it has answered) ends the sending, not the test."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=PATIENCE_S) as conn:
        conn.sendall(head.encode("latin-1"))
        try:
            for chunk in chunks:
                conn.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while b"\r\n\r\n" not in received or not _complete(received):
                data = conn.recv(65536)
                if not data:
                    break
                received += data
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(
                f"no answer within {PATIENCE_S} s: the server waited for the body"
            ) from None
    head_part, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_part.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n"):
        if line.lower().startswith("content-length:"):
            return len(body) >= int(line.split(":")[1])
    return False


async def raw_request(url: str, head: str, chunks: list[bytes] | None = None) -> Answer:
    return await asyncio.to_thread(_raw_request, url, head, chunks or [])


def chunked(data: bytes, size: int = 16 * 1024) -> list[bytes]:
    parts = [
        f"{len(data[i : i + size]):x}\r\n".encode() + data[i : i + size] + b"\r\n"
        for i in range(0, len(data), size)
    ]
    return [*parts, b"0\r\n\r\n"]


def multipart(image: bytes, boundary: str = "paku-boundary") -> bytes:
    fields = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nm\r\n',
        f'--{boundary}\r\nContent-Disposition: form-data; name="version"\r\n\r\n1.0.0\r\n',
    ]
    file_head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        'filename="firmware.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    return ("".join(fields) + file_head).encode() + image + f"\r\n--{boundary}--\r\n".encode()


async def test_a_declared_oversize_body_is_refused_before_it_is_read(live_server: str) -> None:
    # 400 MB announced, one byte sent: the answer cannot wait for the rest.
    answer = await raw_request(
        live_server,
        "POST /claim HTTP/1.1\r\nHost: paku.test\r\nContent-Type: application/json\r\n"
        "Content-Length: 400000000\r\n\r\n{",
    )
    assert answer.status == 413
    assert answer.headers["content-type"] == "application/json"
    error = answer.error()
    assert error["code"] == "payload_too_large"
    assert str(BODY_LIMIT) in error["message"]
    assert "PAKU_HTTP_MAX_BODY_BYTES" in error["message"]


async def test_a_chunked_body_over_the_limit_is_refused(live_server: str) -> None:
    big = json.dumps({"claimCode": "x" * (BODY_LIMIT * 4)}).encode()
    answer = await raw_request(
        live_server,
        "POST /claim HTTP/1.1\r\nHost: paku.test\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n",
        chunked(big),
    )
    assert answer.status == 413
    assert answer.error()["code"] == "payload_too_large"


async def test_a_chunked_body_under_the_limit_is_read(live_server: str) -> None:
    body = json.dumps({"model": "paku-sensor", "id": "chunked-01"}).encode()
    answer = await raw_request(
        live_server,
        "POST /devices HTTP/1.1\r\nHost: paku.test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n",
        chunked(body, size=7),
    )
    assert answer.status == 201, answer.body
    assert json.loads(answer.body)["id"] == "chunked-01"


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token", "Basic YTpi"])
async def test_a_firmware_upload_without_the_admin_token_is_refused_unread(
    live_server: str, settings: Settings, authorization: str | None
) -> None:
    # Under the firmware limit and announced in full, but only its first bytes are sent:
    # a 401 that comes back anyway was decided before the body was read.
    body = multipart(b"\xaa" * (FIRMWARE_LIMIT // 2))
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    answer = await raw_request(
        live_server,
        "POST /ota/firmware HTTP/1.1\r\nHost: paku.test\r\n"
        f"Content-Type: multipart/form-data; boundary=paku-boundary\r\n{auth}"
        f"Content-Length: {len(body)}\r\n\r\n",
        [body[:1000]],
    )
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.error()["code"] in {"unauthorized", "invalid_token"}
    firmware_dir = settings.firmware_dir
    assert not firmware_dir.exists() or list(firmware_dir.iterdir()) == []


async def test_an_admin_json_route_refuses_an_anonymous_body_unread(live_server: str) -> None:
    answer = await raw_request(
        live_server,
        "POST /devices HTTP/1.1\r\nHost: paku.test\r\nContent-Type: application/json\r\n"
        "Content-Length: 5000\r\n\r\n{",
    )
    assert answer.status == 401
    assert answer.error()["code"] == "unauthorized"


async def test_firmware_has_its_own_larger_limit(live_server: str) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=live_server, headers=headers, timeout=30) as client:
        # Over the default body limit, under the firmware one: published.
        image = b"\x01" * (BODY_LIMIT * 2)
        published = await client.post(
            "/ota/firmware",
            data={"model": "m", "version": "1.0.0"},
            files={"file": ("firmware.bin", image, "application/octet-stream")},
        )
        assert published.status_code == 201, published.text
        assert published.json()["size"] == len(image)
    # Over the firmware limit, announced: refused before it is read (a few bytes are sent).
    body = multipart(b"\x02" * (FIRMWARE_LIMIT * 2))
    too_big = await raw_request(
        live_server,
        "POST /ota/firmware HTTP/1.1\r\nHost: paku.test\r\n"
        "Content-Type: multipart/form-data; boundary=paku-boundary\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n",
        [body[:1000]],
    )
    assert too_big.status == 413
    assert str(FIRMWARE_LIMIT) in too_big.error()["message"]
    assert "PAKU_OTA_MAX_FIRMWARE_BYTES" in too_big.error()["message"]
    # Over the default limit elsewhere, with the admin token: refused all the same.
    metadata = json.dumps({"model": "m", "metadata": {"note": "x" * (BODY_LIMIT * 2)}})
    refused = await raw_request(
        live_server,
        "POST /devices HTTP/1.1\r\nHost: paku.test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: {len(metadata)}\r\n\r\n",
        [metadata[:1000].encode()],
    )
    assert refused.status == 413
    assert "PAKU_HTTP_MAX_BODY_BYTES" in refused.error()["message"]
    # The same over the firmware limit without Content-Length (chunked): refused as it comes.
    body = multipart(b"\x03" * (FIRMWARE_LIMIT * 2))
    answer = await raw_request(
        live_server,
        "POST /ota/firmware HTTP/1.1\r\nHost: paku.test\r\n"
        "Content-Type: multipart/form-data; boundary=paku-boundary\r\n"
        f"Authorization: Bearer {ADMIN_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n",
        chunked(body),
    )
    assert answer.status == 413
    assert answer.error()["code"] == "payload_too_large"
