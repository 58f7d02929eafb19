"""Certificates for MQTT over TLS: a development CA with a server certificate it signs, and
the check a configured certificate and key pass before a broker is given them.

`paku-iot dev --tls` makes the development pair here, in Python, so it works wherever paku-iot
does; scripts/gen-certs.sh makes the same four files with openssl for operators. Either one
reuses what the other wrote: the CA is kept once it exists (devices pin it), the server
certificate is issued again when it is missing, no longer matches the CA, is about to expire,
does not name a requested host, or when asked (`force`).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from paku_iot.exceptions import SettingsError
from paku_iot.secretfiles import write_private_file

# Names every development server certificate carries; more can be asked for.
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CA_VALIDITY = timedelta(days=3650)
# 825 days is the longest validity Apple platforms accept for a server certificate.
SERVER_VALIDITY = timedelta(days=825)
RENEW_BEFORE = timedelta(days=30)
CA_COMMON_NAME = "paku-iot development CA"

HostName = x509.DNSName | x509.IPAddress
# A CA made elsewhere (an operator's own openssl run) may have an RSA key instead of ours.
_ISSUER_KEY_TYPES = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)
_IssuerKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True, slots=True)
class CertFiles:
    """The four files of a development TLS setup, in one directory."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"


def ensure_dev_certs(
    root: Path, hostnames: Iterable[str] = (), *, force: bool = False
) -> CertFiles:
    """Make (or keep) a development CA and a server certificate for localhost, 127.0.0.1,
    ::1 and `hostnames` in `root`. Keys are written 0600, certificates 0644."""
    files = CertFiles(root)
    names = _unique([*DEFAULT_NAMES, *hostnames])
    ca = _load_ca(files)
    ca_is_new = ca is None
    if ca is None:
        ca = _create_ca(files)
    ca_key, ca_cert = ca
    if ca_is_new or force or not _server_still_good(files, ca_cert, names):
        _issue_server_cert(files, ca_key, ca_cert, names)
    return files


def check_server_pair(
    cert_file: Path, key_file: Path, *, cert_setting: str, key_setting: str
) -> None:
    """Raise `SettingsError` naming the setting unless `cert_file` is a PEM certificate (chain)
    and `key_file` its unencrypted private key: Mosquitto would otherwise fail to start, or
    ask for a passphrase on a terminal nobody watches."""
    try:
        certs = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except OSError as exc:
        raise SettingsError(
            f"{cert_setting}={cert_file}: cannot read it ({exc.strerror})"
        ) from None
    except ValueError:
        raise SettingsError(f"{cert_setting}={cert_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except OSError as exc:
        raise SettingsError(f"{key_setting}={key_file}: cannot read it ({exc.strerror})") from None
    except TypeError:
        raise SettingsError(
            f"{key_setting}={key_file}: the key is encrypted; the broker needs it unencrypted "
            "(keep the file readable by its owner only)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SettingsError(f"{key_setting}={key_file}: not a PEM private key") from None
    if _public_der(certs[0].public_key()) != _public_der(key.public_key()):
        raise SettingsError(
            f"{key_setting}={key_file} is not the key of the certificate in {cert_setting}="
            f"{cert_file}"
        )


def _unique(names: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def _general_name(name: str) -> HostName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _public_der(key: object) -> bytes:
    public_bytes = getattr(key, "public_bytes", None)
    if public_bytes is None:
        return b""
    der: bytes = public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(path, pem.decode("ascii"))


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    # Certificates are public: readable by the broker's user and copied onto devices.
    write_private_file(path, cert.public_bytes(serialization.Encoding.PEM).decode("ascii"))
    os.chmod(path, 0o644)


def _load_ca(files: CertFiles) -> tuple[_IssuerKey, x509.Certificate] | None:
    """The existing CA, or None when there is none (or only half of one) to keep."""
    if not (files.ca_cert.is_file() and files.ca_key.is_file()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            f"{files.root}: ca.crt / ca.key are not a usable CA ({exc}); move them away to "
            "make a new CA (devices that trust the old one must then get the new ca.crt)"
        ) from None
    if not isinstance(key, _ISSUER_KEY_TYPES):
        raise SettingsError(f"{files.ca_key}: unsupported CA key type")
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        raise SettingsError(f"{files.ca_key} is not the key of {files.ca_cert}")
    return key, cert


def _create_ca(files: CertFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "paku-iot"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        ]
    )
    now = datetime.now(UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(files.ca_key, key)
    _write_cert(files.ca_cert, cert)
    return key, cert


def _server_still_good(files: CertFiles, ca_cert: x509.Certificate, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
        alt_names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.now(UTC):
        return False
    if _public_der(cert.public_key()) != _public_der(key.public_key()):
        return False
    present = set(alt_names)
    return all(_general_name(name) in present for name in names)


def _issue_server_cert(
    files: CertFiles,
    ca_key: _IssuerKey,
    ca_cert: x509.Certificate,
    names: list[str],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(files.server_key, key)
    _write_cert(files.server_cert, cert)
