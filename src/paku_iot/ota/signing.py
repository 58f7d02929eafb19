"""Firmware signatures: Ed25519 over the image's SHA-256 digest.

A device hashes the image as it downloads it (it has to check the sha256 anyway), then
verifies the 64-byte signature over those 32 digest bytes with the pinned public key. Signing
the digest rather than the whole image keeps both sides streaming: neither ever holds a 16 MB
image in memory, which an ESP32 could not.
"""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from paku_iot.exceptions import SettingsError
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
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise SettingsError(
            f"PAKU_OTA_SIGNING_KEY_FILE {path}: not a usable PEM key ({exc})"
        ) from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SettingsError(f"PAKU_OTA_SIGNING_KEY_FILE {path}: not an Ed25519 key")
    return loaded


def sign_digest(key: Ed25519PrivateKey, sha256_hex: str) -> str:
    return base64.b64encode(key.sign(bytes.fromhex(sha256_hex))).decode()


def verify_digest(public_key: Ed25519PublicKey, sha256_hex: str, signature_b64: str) -> bool:
    try:
        public_key.verify(base64.b64decode(signature_b64), bytes.fromhex(sha256_hex))
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_raw_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def public_key_pem(key: Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
