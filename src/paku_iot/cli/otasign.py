"""`paku-iot ota sign`: sign a release off the server (on a CI machine that holds the key),
and read that signature back for `paku-iot ota publish --signature-file`.

Signing needs no server, database or admin token: it reads the key and the image and
writes a small JSON document. The server then needs only the public key
(PAKU_OTA_PUBLIC_KEY_FILE, docs/operations.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from paku_iot.exceptions import InvalidInput
from paku_iot.protocol import OTA_SIGNATURE_SCHEME

_CHUNK = 1024 * 1024
MODEL_MAX_CHARS = 64  # as POST /ota/firmware takes it


def add_sign_parser(ota_actions: Any) -> None:
    sign = ota_actions.add_parser(
        "sign",
        help="sign a firmware image offline with the OTA private key (for CI; no server)",
    )
    sign.add_argument("file", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="the Ed25519 private key (PEM)")
    sign.add_argument("--model", required=True)
    sign.add_argument("--version", required=True, help="semantic version, e.g. 1.4.2")
    sign.add_argument(
        "--out", type=Path, help="write the signature document here (default: stdout)"
    )


def _digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as image:
            while chunk := image.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if size == 0:
        raise InvalidInput(f"{path} is empty")
    return digest.hexdigest(), size


def sign_image(key_path: Path, model: str, version: str, image: Path) -> dict[str, Any]:
    """The signature document: the statement's fields and both signatures (the statement's,
    and the bare digest's for firmware built before paku-ota-v1)."""
    # Imported here: the rest of the CLI should not load cryptography to list devices.
    from paku_iot.ota import signing  # noqa: PLC0415
    from paku_iot.ota.versions import parse_version  # noqa: PLC0415

    parse_version(version)  # the server would refuse it; say so before signing
    if not 1 <= len(model) <= MODEL_MAX_CHARS:
        raise InvalidInput(f"model must be 1-{MODEL_MAX_CHARS} characters")
    key = signing.load_signing_key(key_path)
    sha256, size = _digest(image)
    return {
        "scheme": OTA_SIGNATURE_SCHEME,
        "model": model,
        "version": version,
        "sha256": sha256,
        "size": size,
        "statementSignature": signing.sign_release(key, model, version, sha256, size),
        "signature": signing.sign_digest(key, sha256),
        "publicKey": signing.public_key_raw_b64(key.public_key()),
    }


def run_sign(args: argparse.Namespace) -> int:
    document = json.dumps(sign_image(args.key, args.model, args.version, args.file), indent=2)
    if args.out is None:
        print(document)
    else:
        # Not a secret: signatures are public, the manifest serves them to anyone.
        args.out.write_text(document + "\n", encoding="utf-8")
    return 0


def upload_fields(path: Path, model: str, version: str, image: Path) -> dict[str, str]:
    """The form fields `ota publish` adds from a signature document, once it is sure the
    document is for this image, model and version (the server would refuse it anyway, but
    a message naming the field that differs saves a CI run)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the signature document {path}: {exc}") from None
    if not isinstance(document, dict) or document.get("scheme") != OTA_SIGNATURE_SCHEME:
        raise InvalidInput(f"{path} is not a {OTA_SIGNATURE_SCHEME} signature document")
    sha256, size = _digest(image)
    for name, wanted in (("model", model), ("version", version), ("sha256", sha256)):
        if document.get(name) != wanted:
            raise InvalidInput(f"{path} signs {name} {document.get(name)!r}, not {wanted!r}")
    if document.get("size") != size:
        raise InvalidInput(f"{path} signs size {document.get('size')!r}, not {size}")
    fields = {"statementSignature": str(document.get("statementSignature", ""))}
    if isinstance(document.get("signature"), str):
        fields["signature"] = document["signature"]
    return fields
