"""Firmware signatures: Ed25519 over a statement of the release, and the keys that make them.

The signed statement (`protocol.ota_statement`: scheme tag, model, version, SHA-256, size)
names the image by its digest, so a device hashes the image as it downloads it and then
verifies 64 bytes over a short statement: neither side ever holds a 16 MB image in memory,
which an ESP32 could not. Signing model and version too is what stops a manifest from
offering an old signed image as a newer one, or one model's image to another.

The bare-digest signature (`sign_digest`) is kept only for firmware built before the
statement existed (docs/protocol.md, 8a): it proves the bytes, not what they are for.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from paku_iot.exceptions import SettingsError
from paku_iot.protocol import ota_statement
from paku_iot.secretfiles import write_private_file


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in `path` (PEM, PKCS#8, unencrypted); generated there (0600) if absent."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private_file(path, pem.decode())
        return key
    return _load_private_key(path, f"PAKU_OTA_SIGNING_KEY_FILE {path}")


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in `path` (PEM); never generated. For `paku-iot ota sign`,
    where a missing key is a mistake to report, not a reason to make a new one."""
    if not path.is_file():
        raise SettingsError(f"{path}: no such key file")
    return _load_private_key(path, str(path))


def _load_private_key(path: Path, what: str) -> Ed25519PrivateKey:
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise SettingsError(f"{what}: not a usable PEM key ({exc})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SettingsError(f"{what}: not an Ed25519 key")
    return loaded


def load_public_key_file(path: Path) -> Ed25519PublicKey:
    """The Ed25519 public key in `path` (PEM, SubjectPublicKeyInfo: the `pem` of
    GET /ota/public-key, or `openssl pkey -pubout`)."""
    try:
        loaded = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise SettingsError(
            f"PAKU_OTA_PUBLIC_KEY_FILE {path}: not a usable PEM public key ({exc})"
        ) from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise SettingsError(f"PAKU_OTA_PUBLIC_KEY_FILE {path}: not an Ed25519 public key")
    return loaded


def sign_release(key: Ed25519PrivateKey, model: str, version: str, sha256: str, size: int) -> str:
    """base64 Ed25519 signature of the release's statement (`protocol.ota_statement`)."""
    return base64.b64encode(key.sign(ota_statement(model, version, sha256, size))).decode()


def verify_release(
    public_key: Ed25519PublicKey,
    model: str,
    version: str,
    sha256: str,
    size: int,
    signature_b64: str,
) -> bool:
    try:
        statement = ota_statement(model, version, sha256, size)
        public_key.verify(base64.b64decode(signature_b64, validate=True), statement)
    except (InvalidSignature, ValueError):
        return False
    return True


def sign_digest(key: Ed25519PrivateKey, sha256_hex: str) -> str:
    return base64.b64encode(key.sign(bytes.fromhex(sha256_hex))).decode()


def verify_digest(public_key: Ed25519PublicKey, sha256_hex: str, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64, validate=True), bytes.fromhex(sha256_hex))
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_raw_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
