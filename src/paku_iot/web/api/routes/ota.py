from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile, status
from fastapi.responses import FileResponse

from paku_iot.exceptions import InvalidInput, NotFound
from paku_iot.ota.plans import Criteria, criteria_of
from paku_iot.ota.signing import public_key_pem, public_key_raw_b64
from paku_iot.protocol import OTA_MANIFEST_PATH
from paku_iot.registry.tags import TAG_PATTERN
from paku_iot.security.roles import Permission
from paku_iot.server.service import Service
from paku_iot.storage.records import KEEP, ReleaseRecord
from paku_iot.web.api.auth import Actor, needs
from paku_iot.web.api.device_auth import Caller, identify_caller
from paku_iot.web.api.responses import ADMIN_ONLY, FORBIDDEN, Responses, error
from paku_iot.web.api.schemas import (
    ManifestEntry,
    PublicKey,
    Release,
    ReleaseList,
    ReleaseUpdate,
    ReleaseWithStatus,
    RolloutView,
)
from paku_iot.web.deps import ServiceDep

router = APIRouter(tags=["ota"])
admin = APIRouter(tags=["ota"], responses=ADMIN_ONLY)
NO_RELEASE: Responses = {404: error("No release with this id (`release_not_found`).")}
NO_NUL = r"^[^\x00]*$"  # PostgreSQL cannot store NUL in text


_IMAGE = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_TEXT = {"text/plain": {"schema": {"type": "string"}}}
# The byte-range answers are Starlette's FileResponse's own (plain text, not our JSON errors).
FIRMWARE_RESPONSES: Responses = {
    200: {"description": "The whole image.", "content": _IMAGE},
    206: {"description": "The part `Range` asked for.", "content": _IMAGE},
    400: {"description": "The `Range` header is malformed.", "content": _TEXT},
    404: error("No image with this SHA-256 (`firmware_not_found`)."),
    416: {
        "description": "`Range` starts past the end; `Content-Range` gives the size.",
        "content": _TEXT,
    },
}


def firmware_url(request: Request, service: Service, sha256: str) -> str:
    base = (service.settings.public_url or str(request.base_url)).rstrip("/")
    return f"{base}/ota/firmware/{sha256}.bin"


def _release(request: Request, service: Service, record: ReleaseRecord) -> Release:
    return Release.of(record, firmware_url(request, service, record.sha256))


FIRMWARE_UPLOAD_PATH = "/ota/firmware"


@admin.post(
    FIRMWARE_UPLOAD_PATH,
    status_code=status.HTTP_201_CREATED,
    response_model=Release,
    responses={
        400: error("The multipart body is malformed."),
        409: error("This model already has a release of this version (`release_exists`)."),
        422: error(
            "A bad plan (`invalid_plan`), a bad version, an empty image, no "
            "`statementSignature` on a server that holds only the public key "
            "(`signature_required`), or a signature that does not verify "
            "for this image, model and version (`invalid_signature`)."
        ),
        413: error("The upload is over PAKU_OTA_MAX_FIRMWARE_BYTES (`payload_too_large`)."),
        **FORBIDDEN,
    },
    dependencies=[needs(Permission.RELEASES_WRITE)],
)
async def publish_firmware(
    request: Request,
    service: ServiceDep,
    actor: Actor,
    model: Annotated[str, Form(min_length=1, max_length=64, pattern=NO_NUL)],
    version: Annotated[str, Form(min_length=1, max_length=64, pattern=NO_NUL)],
    file: Annotated[
        UploadFile,
        # `format: binary` beside OpenAPI 3.1's contentMediaType: client generators know it
        # as a file to upload, not a string field.
        File(
            description="The firmware image (firmware.bin).",
            json_schema_extra={"format": "binary"},
        ),
    ],
    notes: Annotated[str | None, Form(max_length=4000, pattern=NO_NUL)] = None,
    rollout_percent: Annotated[int, Form(alias="rolloutPercent", ge=0, le=100)] = 100,
    tag: Annotated[
        str | None,
        Form(
            pattern=TAG_PATTERN,
            description="Offer the release only to devices with this tag (within the "
            "rollout percentage).",
        ),
    ] = None,
    plan: Annotated[
        str | None,
        Form(
            max_length=4000,
            description='Waves as JSON text, `[{"percent": 10, "soakSeconds": 3600}, ...]`: '
            "the autopilot rolls the release out wave by wave (docs/ota.md); rolloutPercent "
            "is then the first wave's.",
        ),
    ] = None,
    min_confirmed: Annotated[int, Form(alias="minConfirmed", ge=0)] = 1,
    min_confirmed_percent: Annotated[int, Form(alias="minConfirmedPercent", ge=0, le=100)] = 50,
    abort_failure_percent: Annotated[int, Form(alias="abortFailurePercent", ge=0, le=100)] = 10,
    abort_min_devices: Annotated[int, Form(alias="abortMinDevices", ge=1)] = 3,
    statement_signature: Annotated[
        str | None,
        Form(
            alias="statementSignature",
            max_length=200,
            description="base64 Ed25519 signature of the release statement, made off the "
            "server by `paku-iot ota sign`. Required when the server holds only the public "
            "key (PAKU_OTA_PUBLIC_KEY_FILE); else the server signs.",
        ),
    ] = None,
    signature: Annotated[
        str | None,
        Form(
            max_length=200,
            description="base64 Ed25519 signature of the bare SHA-256 digest, for firmware "
            "built before paku-ota-v1 (`paku-iot ota sign` makes it too).",
        ),
    ] = None,
) -> Release:
    """Publish a firmware image. It is stored by its SHA-256 and signed (or its signatures,
    made off the server, are checked); `rolloutPercent` stages it (a stable share of the
    model's devices)."""
    # An upload over PAKU_OTA_MAX_FIRMWARE_BYTES (declared or not) was refused before it was
    # read (`web.api.limits`, with the route's path FIRMWARE_UPLOAD_PATH); an image over it
    # by less than the form's framing is refused by the store.
    try:
        record = await service.releases.publish(
            model=model,
            version=version,
            image=file.file,
            notes=notes,
            rollout_percent=rollout_percent,
            statement_signature=statement_signature,
            digest_signature=signature,
            tag=tag,
            plan=plan,
            criteria=Criteria(
                min_confirmed, min_confirmed_percent, abort_failure_percent, abort_min_devices
            ),
            actor=actor.actor,
        )
    finally:
        await file.close()
    await service.audit.record(
        actor,
        "ota.publish",
        record.id,
        {
            "model": model,
            "version": version,
            "sha256": record.sha256,
            "rollout": record.rollout_percent,
            "tag": tag,
            "plan": record.plan,
        },
    )
    return _release(request, service, record)


@admin.get(
    "/ota/releases", response_model=ReleaseList, dependencies=[needs(Permission.RELEASES_READ)]
)
async def list_releases(
    request: Request, service: ServiceDep, model: str | None = None
) -> ReleaseList:
    """Releases, by model, newest version first."""
    records = await service.releases.releases(model)
    return ReleaseList(items=[_release(request, service, r) for r in records])


@admin.get(
    "/ota/releases/{release_id}",
    response_model=ReleaseWithStatus,
    responses=NO_RELEASE,
    dependencies=[needs(Permission.RELEASES_READ)],
)
async def get_release(request: Request, release_id: str, service: ServiceDep) -> ReleaseWithStatus:
    """A release, its plan and state, and where its model's devices stand: `pending`
    (offered, no report yet), `downloading`, `installing`, `installed` (written, not yet
    running it), `updated` (its own state reports this version, or a later one, but it has not
    confirmed it), `confirmed`, `failed`, `rolled_back`; `neverSeen` counts the devices that
    have never connected (docs/ota.md)."""
    record = await service.releases.get(release_id)
    rollout = await service.releases.rollout_status(record)
    return ReleaseWithStatus(
        **_release(request, service, record).model_dump(),
        rollout=RolloutView(
            counts=rollout.counts, devices=rollout.devices, never_seen=len(rollout.never_seen)
        ),
    )


@admin.patch(
    "/ota/releases/{release_id}",
    response_model=Release,
    responses={
        **NO_RELEASE,
        409: error(
            "`rolloutPercent` of a release with a plan (`release_has_plan`), or a plan for a "
            "completed or aborted release (`release_completed`, `release_aborted`)."
        ),
        422: error("A bad plan (`invalid_plan`)."),
        **FORBIDDEN,
    },
    dependencies=[needs(Permission.RELEASES_WRITE)],
)
async def update_release(
    request: Request, release_id: str, body: ReleaseUpdate, service: ServiceDep, actor: Actor
) -> Release:
    """Change the rollout percentage, pause (`paused: true`) and resume the release, restrict
    it to devices with a `tag` (`tag: null` lifts that), or set its `plan` (it starts again at
    the first wave; `plan: null` takes it away) and criteria."""
    sent = body.model_fields_set
    criteria_fields = {
        "min_confirmed",
        "min_confirmed_percent",
        "abort_failure_percent",
        "abort_min_devices",
    }
    if "plan" in sent or sent & criteria_fields:
        current = criteria_of(await service.releases.get(release_id))
        await service.releases.control.set_plan(
            release_id,
            actor.actor,
            body.plan if "plan" in sent else KEEP,
            Criteria(
                _given(body.min_confirmed, current.min_confirmed),
                _given(body.min_confirmed_percent, current.min_confirmed_percent),
                _given(body.abort_failure_percent, current.abort_failure_percent),
                _given(body.abort_min_devices, current.abort_min_devices),
            ),
        )
    record = await service.releases.update(
        release_id,
        actor=actor.actor,
        rollout_percent=body.rollout_percent,
        paused=body.paused,
        tag=body.tag if "tag" in sent else KEEP,
    )
    changes = body.model_dump(exclude_unset=True, by_alias=True)
    await service.audit.record(actor, "ota.update", release_id, changes)
    return _release(request, service, record)


def _given(value: int | None, current: int) -> int:
    return current if value is None else value


@router.get(
    OTA_MANIFEST_PATH,
    response_model=list[ManifestEntry],
    responses={
        401: error(
            "No credentials (unless PAKU_OTA_ALLOW_ANONYMOUS), or wrong ones: a device gets "
            '`WWW-Authenticate: Basic realm="paku-iot"`.'
        ),
        422: error(
            "`current` is not a semantic version, or `model` is not the device's own "
            "(`wrong_model`)."
        ),
    },
)
async def manifest(
    request: Request,
    service: ServiceDep,
    caller: Annotated[Caller, Depends(identify_caller)],
    model: str | None = None,
    current: Annotated[
        str | None,
        Query(
            description="The running version: semver, with or without a leading v, or a "
            "git describe form (1.2.0-3-gabc1234); docs/protocol.md, fwVersion."
        ),
    ] = None,
) -> list[ManifestEntry]:
    """Releases newer than `current`, newest first: a device takes the first. Devices
    authenticate with HTTP Basic (their MQTT credentials) and see their own model only.
    Without credentials (PAKU_OTA_ALLOW_ANONYMOUS=true) `model` is required, and only
    unpaused releases at 100% rollout are listed."""
    if caller.device is not None:
        if model is not None and model != caller.device.model:
            raise InvalidInput(
                f"this device is model {caller.device.model!r}, not {model!r}",
                code="wrong_model",
            )
        model = caller.device.model
    elif not caller.admin and not model:
        # An anonymous caller is taken to be a device that knows its model: without one, the
        # answer would mix every model's firmware, and "take the first" would brick devices.
        raise InvalidInput(
            "model is required without device credentials: "
            f"{OTA_MANIFEST_PATH}?model=<model>&current=<version>",
            code="model_required",
        )
    records = await service.releases.manifest(
        model=model, current=current, device=caller.device, admin=caller.admin
    )
    return [ManifestEntry.of(r, firmware_url(request, service, r.sha256)) for r in records]


@router.get(
    "/ota/firmware/{sha256}.bin",
    operation_id="download_firmware",
    response_class=FileResponse,
    responses=FIRMWARE_RESPONSES,
)
@router.head(
    "/ota/firmware/{sha256}.bin",
    operation_id="firmware_headers",
    response_class=FileResponse,
    responses=FIRMWARE_RESPONSES,
)
async def download_firmware(sha256: str, service: ServiceDep) -> FileResponse:
    """The image, with Content-Length, ETag (its sha256) and byte ranges, so an interrupted
    download resumes with `Range: bytes=<received>-`."""
    path = service.releases.files.path(sha256)
    if path is None:
        raise NotFound("no such firmware image", code="firmware_not_found")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"ETag": f'"{sha256}"', "Cache-Control": "public, max-age=31536000, immutable"},
    )


@router.get("/ota/public-key", response_model=PublicKey)
async def public_key(service: ServiceDep) -> PublicKey:
    """The Ed25519 key that signs every release, for firmware to pin."""
    key = service.ota_public_key
    return PublicKey(public_key=public_key_raw_b64(key), pem=public_key_pem(key))
