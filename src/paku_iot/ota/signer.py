"""Which signatures a release gets when it is published.

Two ways to run a server (docs/operations.md, "The OTA signing key"):
- it holds the private key and signs every upload itself (the default), or
- it holds only the public key (PAKU_OTA_PUBLIC_KEY_FILE) and every upload must bring a
  signature made elsewhere (`paku-iot ota sign` on a CI machine). Then nothing on the server,
  not even an admin token, can get an image signed: stealing the server is not enough to
  make devices install something.

Either way a signature the upload brings is checked against the release as it will be
stored, so a release in the database always carries a signature over its own fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from paku_iot.exceptions import InvalidInput
from paku_iot.ota.signing import sign_digest, sign_release, verify_digest, verify_release


@dataclass(frozen=True, slots=True)
class ReleaseSignatures:
    statement: str  # over protocol.ota_statement: what current firmware verifies
    digest: str | None  # over the bare digest, for firmware built before the statement


class ReleaseSigner:
    def __init__(self, public_key: Ed25519PublicKey, private_key: Ed25519PrivateKey | None):
        self.public_key = public_key
        self._private = private_key

    @property
    def signs(self) -> bool:
        """True when this server holds the private key and signs uploads itself."""
        return self._private is not None

    def signatures(
        self,
        *,
        model: str,
        version: str,
        sha256: str,
        size: int,
        statement: str | None,
        digest: str | None,
    ) -> ReleaseSignatures:
        """The signatures to store with a release: those the upload brought, once checked,
        else the server's own. Raises InvalidInput (`signature_required`,
        `invalid_signature`)."""
        if statement is None:
            if self._private is None:
                raise InvalidInput(
                    "this server holds only the public key (PAKU_OTA_PUBLIC_KEY_FILE): upload "
                    "with statementSignature from `paku-iot ota sign --key KEY.pem --model "
                    f"{model} --version {version} FILE`",
                    code="signature_required",
                )
            statement = sign_release(self._private, model, version, sha256, size)
        elif not verify_release(self.public_key, model, version, sha256, size, statement):
            raise InvalidInput(
                f"statementSignature does not verify for model {model!r}, version {version}, "
                f"sha256 {sha256}, size {size} with this server's public key: sign exactly "
                "this image, model and version with the key whose public half the server has",
                code="invalid_signature",
            )
        if digest is None:
            digest = None if self._private is None else sign_digest(self._private, sha256)
        elif not verify_digest(self.public_key, sha256, digest):
            raise InvalidInput(
                f"signature does not verify over the SHA-256 {sha256} with this server's "
                "public key",
                code="invalid_signature",
            )
        return ReleaseSignatures(statement=statement, digest=digest)
