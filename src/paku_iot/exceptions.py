"""The exceptions paku-iot raises, one root and a subclass per kind of failure.

    PakuError                  root; `code` is the stable machine-readable error code
    ├── InvalidInput           the caller sent something malformed (HTTP 422)
    ├── Unauthorized           missing or wrong credentials (HTTP 401)
    ├── NotFound               the thing asked for does not exist (HTTP 404)
    ├── Conflict               the request clashes with existing state (HTTP 409)
    ├── Unavailable            a service we depend on (database, broker) is down (HTTP 503)
    └── SettingsError          the configuration cannot work (a taken port, a bad URL)

Library errors (SQLAlchemy, gmqtt, OS errors) are translated into these where they enter our
code, so callers never need to know which driver is underneath.
"""

from __future__ import annotations


class PakuError(Exception):
    """Root of every error paku-iot raises on purpose."""

    code = "error"
    http_status = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(PakuError):
    code = "invalid_input"
    http_status = 422


class Unauthorized(PakuError):
    code = "unauthorized"
    http_status = 401
    auth_scheme = "Bearer"  # what the WWW-Authenticate header asks for


class Forbidden(PakuError):
    """Authenticated, but not allowed: a token's role lacks what the request needs."""

    code = "forbidden"
    http_status = 403


class NotFound(PakuError):
    code = "not_found"
    http_status = 404


class Conflict(PakuError):
    code = "conflict"
    http_status = 409


class Unavailable(PakuError):
    code = "unavailable"
    http_status = 503


class SettingsError(PakuError):
    code = "settings_error"
