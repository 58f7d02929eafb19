"""Firmware updates over the air (OTA), the device side: the reference for firmware authors.

One update, in the order `OtaUpdater.update` does it:

1. **Check.** `GET <api>/ota/manifest.json?current=<running version>` with HTTP Basic auth:
   the device's MQTT username (its id) and password. The answer is a JSON list of
   `{"model", "version", "url", "sha256", "size", "signatureScheme", "statementSignature",
   ...}`, newest first; take the first. An empty list means "up to date" (or: not in this
   release's rollout yet, or the release is paused). 401 means wrong credentials; nothing else
   is worth retrying with them. Before downloading, refuse an entry for another `model` than
   the one the firmware is built for, or a `version` not newer than the one running: the
   server never offers those, so a manifest that does is lying (a compromised server).
2. **Download** `url` (no auth) into a partial file, hashing (SHA-256) as the bytes arrive.
   Report `{"version", "status": "downloading"}` on `paku/<id>/event/ota` first.
   If a partial file is left from an interrupted attempt, resume it: hash what is already on
   disk, then ask for the rest with `Range: bytes=<size>-` and `If-Range: "<sha256>"`.
   - `206 Partial Content`: append (after checking that `Content-Range` starts where asked).
   - `200 OK`: the server sends the whole image (no range support, or the image changed):
     start over from byte 0.
   - `416 Range Not Satisfiable`: the partial file does not fit this image: delete it and
     download from scratch.
   A dropped connection leaves the partial file for the next attempt (`OtaInterrupted`).
3. **Verify**, before anything is written where it would boot from: the size and SHA-256
   must equal the manifest's, `signatureScheme` must be `paku-ota-v1`, and
   `statementSignature` (base64) must be a valid Ed25519 signature, by the public key pinned
   in the firmware, over the **statement** `protocol.ota_statement(model, version, sha256,
   size)` rebuilt from those fields (the sha256 the device computed, the size it received).
   The statement binds the version and model to the image: a manifest cannot relabel an old
   signed image as a newer one, or give one model another's. Any mismatch: report
   `"failed"` with an `error`, delete the partial file (it would only fail again), refuse
   the image.
   Never fetch the key from the server at update time: a key served next to the image proves
   nothing. `GET /ota/public-key` exists so that it can be copied into the firmware build.
4. **Install.** Report `"installing"`, write the image to the inactive slot (the reference
   device keeps it as a file in its work directory and checks it once more there, as a
   bootloader would), mark it as the next boot image, report `"installed"`.
5. **Reboot** into the new version, in pending verify. After the restart the device connects
   as always, and its retained state carries `"fwVersion": <new version>`: that, not the
   `"installed"` report, is what makes the backend count the device as `updated`.
6. **Confirm or roll back** (firmware.py): `"confirmed"` after the first healthy run within
   the confirmation window; otherwise back to the previous image, reporting
   `"rolled_back"` with `"runningVersion"`: the version it returned to. A version rolled
   back from is not installed again.

Progress reports are QoS 1 events on `paku/<id>/event/ota`:
`{"version": <target version>, "status": "downloading" | "installing" | "installed" |
"confirmed" | "failed" | "rolled_back", "runningVersion"?: <returned to, with rolled_back>,
"error"?: <why>, "ts": <epoch ms>}`. They are best effort: an update does not stop
because a report could not be sent (the link may be down while the download resumes later).

The reference device does it all in one call::

    version = await device.update_firmware(api_url, public_key_b64, workdir)

(the device must know its `model`: `ReferenceDevice(..., model="lamp")`)

and `OtaUpdater` offers each step on its own (tests drive an interrupted download with
`download(..., stop_after=n)`, which stops like a dropped link after `n` bytes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx
import semver
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from paku_iot.device.tls import explain_tls_failure
from paku_iot.protocol import (
    OTA_EVENT,
    OTA_MANIFEST_PATH,
    OTA_SIGNATURE_SCHEME,
    FirmwareVersionError,
    ota_statement,
    parse_fw_version,
)

if TYPE_CHECKING:
    from hashlib import _Hash as Sha256

    from paku_iot.device.client import ReferenceDevice

log = logging.getLogger("paku_iot.device.ota")

DEFAULT_CHUNK_BYTES = 64 * 1024
DEFAULT_TIMEOUT_S = 30.0
ED25519_PUBLIC_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HASH_READ_BYTES = 1024 * 1024

HTTP_OK = 200
HTTP_PARTIAL_CONTENT = 206
HTTP_UNAUTHORIZED = 401
HTTP_RANGE_NOT_SATISFIABLE = 416
HTTP_SERVER_ERROR = 500


# ---- errors ---------------------------------------------------------------------------


class OtaError(Exception):
    """Something kept this update from completing. The message says what, for a person."""


class OtaUnauthorized(OtaError):
    """The manifest answered 401: the device's credentials are wrong (or were rotated)."""


class OtaServerError(OtaError):
    """The server could not be reached or gave an answer a device cannot use. Try later."""


class OtaInterrupted(OtaError):
    """The download stopped before the end (link lost, server error, or `stop_after`). The
    partial file is kept: the next `download` resumes from `received` bytes."""

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


class OtaDownloadError(OtaError):
    """The server refused the download for good (404: no such image). Reported as failed."""


class OtaVerificationError(OtaError):
    """The image is not the one the manifest describes. Reported as failed, never installed."""


class SizeMismatch(OtaVerificationError):
    """The image does not have the manifest's size."""


class DigestMismatch(OtaVerificationError):
    """The image's SHA-256 is not the manifest's."""


class SignatureInvalid(OtaVerificationError):
    """The signature does not verify with the pinned public key over the statement of this
    model, version, digest and size: the image is not from the holder of the signing key,
    or the manifest describes it as something it was not signed as. Never install it."""


class OfferRefused(OtaVerificationError):
    """The manifest offers what this device must never take, however well signed: another
    model's firmware, or a version not newer than the one running. Nothing is downloaded."""


# ---- the manifest ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One release offered to the device: `GET /ota/manifest.json` lists these."""

    model: str
    version: str
    url: str
    sha256: str
    size: int
    # The signed statement's scheme and signature; None when the release has none (it was
    # published before paku-ota-v1): the device then refuses it at verification.
    signature_scheme: str | None
    statement_signature: str | None

    @classmethod
    def from_json(cls, document: Any, base_url: str | None = None) -> ManifestEntry:
        """Parse one manifest entry, refusing what a device could not act on safely. A
        relative `url` is resolved against `base_url`."""
        if not isinstance(document, Mapping):
            raise OtaServerError(f"manifest entry is not an object: {document!r}")
        fields: dict[str, Any] = {}
        for name in ("model", "version", "url", "sha256"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise OtaServerError(f"manifest entry without a {name!r} string")
            fields[name] = value
        # Absent or not a string: verification refuses it with a reason the backend shows.
        for name, key in (
            ("signature_scheme", "signatureScheme"),
            ("statement_signature", "statementSignature"),
        ):
            value = document.get(key)
            fields[name] = value if isinstance(value, str) else None
        size = document.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise OtaServerError(f"manifest entry size is not a positive integer: {size!r}")
        if not _SHA256_RE.fullmatch(fields["sha256"]):
            raise OtaServerError("manifest entry sha256 is not 64 lowercase hex digits")
        try:
            semver.Version.parse(fields["version"])
        except ValueError:
            raise OtaServerError(
                f"manifest entry version {fields['version']!r} is not a semantic version"
            ) from None
        if base_url is not None:
            fields["url"] = str(httpx.URL(base_url).join(fields["url"]))
        return cls(size=size, **fields)


def load_public_key(public_key_b64: str | bytes) -> Ed25519PublicKey:
    """The pinned key, as `GET /ota/public-key` gives it in `publicKey`: the raw 32-byte
    Ed25519 public key, base64 (raw bytes are accepted too)."""
    if isinstance(public_key_b64, bytes) and len(public_key_b64) == ED25519_PUBLIC_KEY_BYTES:
        raw = public_key_b64
    else:
        try:
            raw = base64.b64decode(public_key_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the OTA public key is not base64") from None
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise ValueError(
            f"the OTA public key is {len(raw)} bytes; an Ed25519 key is "
            f"{ED25519_PUBLIC_KEY_BYTES} (use `publicKey` from GET /ota/public-key, not `pem`)"
        )
    return Ed25519PublicKey.from_public_bytes(raw)


def _http_failure(exc: httpx.HTTPError, url: str) -> str:
    """Why a request to `url` failed: a TLS failure named as such, else httpx's words."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    explained = explain_tls_failure(exc, f"{parsed.host}:{port}")
    return explained or str(exc) or type(exc).__name__


def verify_image(
    entry: ManifestEntry, size: int, sha256_digest: bytes, public_key: Ed25519PublicKey
) -> None:
    """Step 3: check a received image against its manifest entry. `sha256_digest` is the
    32-byte digest computed while receiving. Raises a `OtaVerificationError` subclass.

    The order matters only for the message: a short image has the wrong digest too, and the
    size says more. The statement is rebuilt from the digest and size the device measured
    (which the manifest's must also equal) and the manifest's model and version, so a valid
    signature over anything else (another digest, version or model) is refused."""
    if size != entry.size:
        raise SizeMismatch(
            f"firmware {entry.version}: received {size} bytes, the manifest says {entry.size}"
        )
    if sha256_digest.hex() != entry.sha256:
        raise DigestMismatch(
            f"firmware {entry.version}: SHA-256 {sha256_digest.hex()} is not the manifest's "
            f"{entry.sha256}"
        )
    if entry.signature_scheme != OTA_SIGNATURE_SCHEME or entry.statement_signature is None:
        raise SignatureInvalid(
            f"firmware {entry.version}: not signed under {OTA_SIGNATURE_SCHEME} (scheme "
            f"{entry.signature_scheme!r}); a release published before signed statements must "
            "be published again"
        )
    try:
        signature = base64.b64decode(entry.statement_signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(f"firmware {entry.version}: the signature is not base64") from None
    if len(signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureInvalid(
            f"firmware {entry.version}: the signature is {len(signature)} bytes, not "
            f"{ED25519_SIGNATURE_BYTES}"
        )
    statement = ota_statement(entry.model, entry.version, sha256_digest.hex(), size)
    try:
        public_key.verify(signature, statement)
    except InvalidSignature:
        raise SignatureInvalid(
            f"firmware {entry.version}: the signature does not verify with the pinned public "
            f"key for model {entry.model!r}, version {entry.version}, this image's sha256 and "
            "size; refusing the image"
        ) from None


def check_offer(entry: ManifestEntry, model: str, running: str) -> None:
    """Refuse what no honest manifest offers (raises `OfferRefused`): another model's
    firmware, or a version not newer than `running`, which is read by the contract's rule
    (`protocol.parse_fw_version`) as the server reads it. A running version no rule reads
    (a developer's build) sets no floor, as on the server."""
    if entry.model != model:
        raise OfferRefused(
            f"firmware {entry.version} is for model {entry.model!r}, this device is "
            f"{model!r}; refusing it"
        )
    try:
        floor = parse_fw_version(running)
    except FirmwareVersionError:
        return
    if semver.Version.parse(entry.version) <= floor:
        raise OfferRefused(
            f"firmware {entry.version} is not newer than {running}, the version running; "
            "refusing a downgrade"
        )


# ---- the updater ----------------------------------------------------------------------


def partial_path(dest_path: Path) -> Path:
    """Where `download` keeps the bytes received so far for `dest_path`."""
    return dest_path.with_name(dest_path.name + ".part")


def _hash_file(path: Path) -> tuple[int, bytes]:
    """(size, SHA-256 digest) of a file, read in chunks. Blocking: run it in a thread."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while chunk := source.read(_HASH_READ_BYTES):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.digest()


def _hash_prefix(path: Path, expected: ManifestEntry) -> tuple[int, Sha256] | None:
    """(size, running SHA-256) of a partial file, to continue hashing where it stops; None
    when there is no partial file or it is longer than the image (useless). Blocking."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size > expected.size:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_HASH_READ_BYTES):
            digest.update(chunk)
    return size, digest


def _size_on_disk(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _open_partial(path: Path, *, append: bool) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab" if append else "wb")


def _finish_file(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


class OtaUpdater:
    """OTA for one `ReferenceDevice`: its credentials for the manifest, its MQTT link for
    progress reports, and the public key pinned in its firmware.

    Usage::

        async with OtaUpdater(device, public_key_b64) as ota:
            entry = await ota.check(api_url)                # None: up to date
            if entry is not None:
                image = await ota.download(entry, workdir / f"firmware-{entry.version}.bin")
                await ota.install(entry, image)
                await ota.reboot(entry)

    or `await ota.update(api_url, workdir)` for all of it. Every method may raise an
    `OtaError` subclass; what was reported on `event/ota` is in `reports`.

    HTTPS servers are verified with the device's TLS context when it has one (the CA bundle
    firmware carries serves MQTT and HTTPS alike), else with httpx's default CAs.
    """

    def __init__(
        self,
        device: ReferenceDevice,
        public_key: Ed25519PublicKey | str | bytes,
        *,
        model: str | None = None,
        client: httpx.AsyncClient | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.device = device
        # The model the firmware is built for, as firmware knows it: never taken from the
        # server, whose manifest is what is being checked.
        resolved_model = model or device.model
        if not resolved_model:
            raise ValueError(
                "OTA needs the model the firmware is built for: ReferenceDevice(..., model=...)"
            )
        self.model = resolved_model
        self.public_key = (
            public_key if isinstance(public_key, Ed25519PublicKey) else load_public_key(public_key)
        )
        self.chunk_bytes = chunk_bytes
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=timeout_s, verify=device.tls if device.tls is not None else True
        )
        self.reports: list[dict[str, Any]] = []

    async def aclose(self) -> None:
        """Close the HTTP client, when this updater made it."""
        if self._own_client:
            await self._client.aclose()

    async def __aenter__(self) -> OtaUpdater:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # ---- step 1 ------------------------------------------------------------------------

    async def check(self, api_url: str, current_version: str | None = None) -> ManifestEntry | None:
        """Step 1: the newest release offered to this device, or None when it is up to date.

        `current_version` defaults to the device's running `fw_version`. An entry that is
        not newer than the running version, or for another model, is still returned: the
        server never offers one, so `download` refuses it and reports the refusal.
        """
        current = self.device.fw_version if current_version is None else current_version
        username, password = self.device.credentials
        url = api_url.rstrip("/") + OTA_MANIFEST_PATH
        try:
            response = await self._client.get(
                url, params={"current": current}, auth=httpx.BasicAuth(username, password)
            )
        except httpx.HTTPError as exc:
            raise OtaServerError(f"cannot reach {url}: {_http_failure(exc, url)}") from exc
        if response.status_code == HTTP_UNAUTHORIZED:
            raise OtaUnauthorized(
                f"{url}: 401, the server refused the device credentials of {username!r}"
            )
        if response.status_code != HTTP_OK:
            raise OtaServerError(f"{url}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            document = response.json()
        except ValueError:
            raise OtaServerError(f"{url}: the manifest is not JSON") from None
        if not isinstance(document, list):
            raise OtaServerError(f"{url}: the manifest is not a JSON list")
        if not document:
            return None
        # The first entry is the one to take. It is not vetted here: `download` refuses
        # another model's firmware or a downgrade, and reports why, where the operator sees it.
        return ManifestEntry.from_json(document[0], base_url=str(response.url))

    # ---- steps 2 and 3 -----------------------------------------------------------------

    async def download(
        self,
        entry: ManifestEntry,
        dest_path: Path,
        *,
        resume: bool = True,
        stop_after: int | None = None,
    ) -> Path:
        """Steps 2 and 3: download `entry` into `dest_path` and verify it; returns `dest_path`.

        The bytes go to `partial_path(dest_path)` first, and only a verified image is renamed
        to `dest_path`. With `resume` (the default) an existing partial file is continued
        with a range request; `resume=False` discards it. `stop_after=n` simulates a link
        that drops after `n` more bytes: the partial file is kept and `OtaInterrupted` is
        raised, as for a real network error.

        Reports `"failed"` without downloading when the entry is another model's or not
        newer than the running version (`OfferRefused`). Reports `"downloading"` when it
        starts, `"failed"` when the image is refused or the server has no such image.
        Raises `OtaInterrupted` (resume later),
        `OtaVerificationError` (the image is refused and its partial file deleted),
        `OtaDownloadError` (4xx), `OtaServerError`.
        """
        partial = partial_path(dest_path)
        try:
            check_offer(entry, self.model, self.device.fw_version)
        except OfferRefused as exc:
            await self.report(entry.version, "failed", str(exc))
            raise
        await self.report(entry.version, "downloading")
        prefix = await asyncio.to_thread(_hash_prefix, partial, entry) if resume else None
        if prefix is None:
            offset, digest = 0, hashlib.sha256()
        else:
            offset, digest = prefix
            log.info(
                "%s: resuming %s at byte %d of %d",
                self.device.device_id,
                entry.version,
                offset,
                entry.size,
            )
        if offset < entry.size:
            offset, digest = await self._fetch(entry, partial, offset, digest, stop_after)
        try:
            verify_image(entry, offset, digest.digest(), self.public_key)
        except OtaVerificationError as exc:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            await self.report(entry.version, "failed", str(exc))
            raise
        await asyncio.to_thread(os.replace, partial, dest_path)
        log.info("%s: firmware %s downloaded and verified", self.device.device_id, entry.version)
        return dest_path

    async def _fetch(
        self,
        entry: ManifestEntry,
        partial: Path,
        offset: int,
        digest: Sha256,
        stop_after: int | None,
    ) -> tuple[int, Sha256]:
        """Receive the image from `offset` on, appending to `partial` and to `digest`;
        returns the new (size, digest). At most one restart from byte 0 (a 416)."""
        for _attempt in range(2):
            headers = {}
            if offset:
                headers = {"Range": f"bytes={offset}-", "If-Range": f'"{entry.sha256}"'}
            try:
                async with self._client.stream("GET", entry.url, headers=headers) as response:
                    status = response.status_code
                    if status == HTTP_RANGE_NOT_SATISFIABLE:
                        log.warning(
                            "%s: the server cannot resume at byte %d (416); starting over",
                            self.device.device_id,
                            offset,
                        )
                        offset, digest = 0, hashlib.sha256()
                        await asyncio.to_thread(partial.unlink, missing_ok=True)
                        continue
                    if status == HTTP_PARTIAL_CONTENT:
                        self._check_content_range(response, offset)
                    elif status == HTTP_OK:
                        if offset:
                            log.info(
                                "%s: the server sent the whole image; starting over",
                                self.device.device_id,
                            )
                        offset, digest = 0, hashlib.sha256()
                    else:
                        await self._refused(entry, response, partial)
                    return await self._receive(
                        response, partial, offset, digest, stop_after, limit=entry.size
                    )
            except httpx.HTTPError as exc:  # the link dropped, a timeout, a broken reply
                received = _size_on_disk(partial)
                raise OtaInterrupted(
                    f"firmware {entry.version}: download interrupted at byte {received}: "
                    f"{_http_failure(exc, entry.url)}",
                    received,
                ) from exc
        raise OtaServerError(f"firmware {entry.version}: the server refuses every range")

    @staticmethod
    def _check_content_range(response: httpx.Response, offset: int) -> None:
        content_range = response.headers.get("content-range", "")
        if not content_range.startswith(f"bytes {offset}-"):
            raise OtaServerError(
                f"asked for bytes from {offset}, the server sent {content_range!r}"
            )

    async def _refused(self, entry: ManifestEntry, response: httpx.Response, partial: Path) -> None:
        await response.aread()
        message = f"firmware {entry.version}: GET {entry.url}: HTTP {response.status_code}"
        if response.status_code >= HTTP_SERVER_ERROR:
            # Transient: the partial file stays and the next attempt resumes.
            raise OtaInterrupted(message, _size_on_disk(partial))
        await self.report(entry.version, "failed", message)
        raise OtaDownloadError(message)

    async def _receive(
        self,
        response: httpx.Response,
        partial: Path,
        offset: int,
        digest: Sha256,
        stop_after: int | None,
        *,
        limit: int,
    ) -> tuple[int, Sha256]:
        """Append the response body to `partial` (truncated first when `offset` is 0),
        hashing as it goes. Writes are small and local, so they are done inline; a device
        writes each chunk to its OTA flash partition at this point. Reading stops once past
        `limit` bytes (the manifest's size): the size check then refuses the image, and a
        wrong answer cannot fill the flash."""
        out = await asyncio.to_thread(_open_partial, partial, append=offset > 0)
        received_now = 0
        try:
            async for received in response.aiter_bytes(self.chunk_bytes):
                chunk = received
                if stop_after is not None and received_now + len(chunk) > stop_after:
                    chunk = chunk[: stop_after - received_now]
                out.write(chunk)
                digest.update(chunk)
                offset += len(chunk)
                received_now += len(chunk)
                if offset > limit:
                    break
                if stop_after is not None and received_now >= stop_after:
                    raise OtaInterrupted(
                        f"download stopped after {received_now} bytes (stop_after), "
                        f"{offset} bytes in {partial.name}",
                        offset,
                    )
        finally:
            await asyncio.to_thread(_finish_file, out)
        return offset, digest

    # ---- steps 4 and 5 -----------------------------------------------------------------

    async def install(self, entry: ManifestEntry, image: Path) -> None:
        """Step 4: report `"installing"`, check the image once more where it will boot from
        (a flash write can fail; a bootloader checks too), report `"installed"`."""
        await self.report(entry.version, "installing")
        try:
            check_offer(entry, self.model, self.device.fw_version)
            size, digest = await asyncio.to_thread(_hash_file, image)
            verify_image(entry, size, digest, self.public_key)
        except (OSError, OtaVerificationError) as exc:
            await self.report(entry.version, "failed", f"install: {exc}")
            if isinstance(exc, OtaError):
                raise
            raise OtaError(f"firmware {entry.version}: cannot read {image}: {exc}") from exc
        await self.report(entry.version, "installed")
        log.info("%s: firmware %s installed", self.device.device_id, entry.version)

    async def reboot(self, entry: ManifestEntry) -> None:
        """Step 5: restart running `entry.version` in pending verify; the state sent after
        reconnecting reports the new `fwVersion`. The device then confirms it or rolls back
        (firmware.py)."""
        await self.device.firmware.boot_new(entry.version)

    async def update(self, api_url: str, workdir: Path) -> str | None:
        """Steps 1-5. Returns the version now running, or None when already up to date.

        The image is kept as `workdir/firmware-<version>.bin` (its partial file next to it,
        so an interrupted update resumes at the next call)."""
        if self.device.firmware.pending_verify:
            # As esp_ota_begin refuses: the running image must be confirmed (or rolled back)
            # before another is written over the slot it would roll back to.
            raise OtaError(
                f"firmware {self.device.fw_version} awaits confirmation; no update until then"
            )
        entry = await self.check(api_url)
        if entry is None:
            return None
        if self.device.firmware.refuses(entry.version):
            log.info(
                "%s: not installing %s again: this device rolled back from it",
                self.device.device_id,
                entry.version,
            )
            return None
        image = await self.download(entry, Path(workdir) / f"firmware-{entry.version}.bin")
        await self.install(entry, image)
        await self.reboot(entry)
        return entry.version

    # ---- reports -----------------------------------------------------------------------

    async def report(self, version: str, status: str, error: str | None = None) -> bool:
        """Publish `{"version", "status", "error"?}` on `event/ota` (QoS 1). Best effort:
        returns False, and logs, when the device is offline or the broker does not answer."""
        document: dict[str, Any] = {"version": version, "status": status}
        if error is not None:
            document["error"] = error[:1000]
        if status == "failed":
            log.error("%s: OTA %s failed: %s", self.device.device_id, version, error)
        try:
            sent = await self.device.send_event(OTA_EVENT, document)
        except (ConnectionError, TimeoutError) as exc:
            log.warning("%s: OTA report %s not sent: %s", self.device.device_id, status, exc)
            return False
        self.reports.append(sent)
        return True
