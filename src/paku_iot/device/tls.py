"""TLS for a device: how it trusts a server, and what a failed handshake means in words.

A paku device always verifies the server it talks to (docs/protocol.md section 2): the
certificate must chain up to a CA the device trusts, and must name the host the device
connected to. That is the whole point of TLS on a device, so `client_context` makes a
context that does both, and `require_verification` refuses one that does not.

One context serves MQTT and HTTPS alike, as one certificate bundle does in firmware: gmqtt's
`connect(ssl=context)` hands it to `loop.create_connection(host, port, ssl=context)`, which
sends `host` as the server name (SNI) and checks the certificate against it; httpx does the
same with the URL's host. A context may be shared by any number of connections.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from paku_iot.exceptions import InvalidInput

# OpenSSL's X509_V_ERR_* codes a person can act on: the chain does not reach a trusted CA
# (unable to get issuer certificate, self-signed certificate, self-signed certificate in
# certificate chain, unable to get local issuer certificate), or the name does not match.
_NOT_TRUSTED = {2, 18, 19, 20}
_NAME_MISMATCH = {62, 64}  # hostname mismatch, IP address mismatch
_TRUST_HINT = "the server's certificate is not issued by a CA trusted here"
_NAME_HINT = "the certificate does not name the host connected to; connect by a name it carries"
_NOT_TLS_HINT = "is this a TLS port?"
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "UNEXPECTED_EOF_WHILE_READING"}


def client_context(cafile: Path | str | None = None) -> ssl.SSLContext:
    """A context that verifies the chain and the host name, TLS 1.2 or newer.

    `cafile`: trust only the CA certificates in this PEM file (a development CA, Caddy's
    internal root); None: the system's trust store. Raises InvalidInput when the file cannot
    be read or holds no certificate."""
    try:
        context = ssl.create_default_context(cafile=None if cafile is None else str(cafile))
    except ssl.SSLError as exc:  # read, but not a PEM certificate (a key, an empty file)
        raise InvalidInput(
            f"CA file {cafile} holds no PEM certificate ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the CA file {cafile}: {exc.strerror or exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # docs/protocol.md: TLS 1.2+
    return context


def require_verification(context: ssl.SSLContext) -> None:
    """Raise ValueError unless `context` verifies both the chain and the host name."""
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise ValueError(
            "the TLS context must verify the server (verify_mode CERT_REQUIRED and "
            "check_hostname True): a device that does not verify trusts anyone"
        )


def explain_tls_failure(exc: BaseException, address: str) -> str | None:
    """What failed in a TLS handshake with `address` ("host:port"), in a sentence; None when
    neither `exc` nor what caused it is a TLS error.

    e.g. "certificate verify failed: unable to get local issuer certificate for
    paku.test:8883 (the server's certificate is not issued by a CA trusted here)"."""
    error = _ssl_error_in(exc)
    if error is None:
        return None
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        what = f"certificate verify failed: {error.verify_message.rstrip('.')} for {address}"
        if code in _NOT_TRUSTED:
            return f"{what} ({_TRUST_HINT})"
        if code in _NAME_MISMATCH:
            return f"{what} ({_NAME_HINT})"
        return what
    reason = error.reason or str(error)
    # A plain listener answers a ClientHello with something that is not TLS, or hangs up.
    not_tls = isinstance(error, ssl.SSLEOFError) or reason in _NOT_TLS_REASONS
    return f"TLS handshake with {address} failed: {reason}" + (
        f" ({_NOT_TLS_HINT})" if not_tls else ""
    )


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    """The ssl.SSLError in `exc`'s chain of causes (httpx wraps it twice), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
