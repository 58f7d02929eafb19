"""Dashboard sessions: an HMAC-signed cookie, checked against the admin tokens and the
server's session table on every request.

The cookie holds who signed in (the token's actor) and the token's role, the SHA-256 of the
token they signed in with, an expiry and the session's random id, signed with a key
generated on first run into `<data dir>/secrets/ui-session-key` (0600). The session itself
is a row in the database (`security/sessions.py`), so any number of API processes sharing
the data dir and the database accept the same cookie, and signing out deletes the row: a
copy of the cookie is refused from then on. A revoked named token ends its sessions at the
next request: the hash in the cookie must still name a live token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path

from paku_iot.secretfiles import read_or_create_secret
from paku_iot.security.roles import Identity, Permission, Role
from paku_iot.security.sessions import DashboardSessions, new_session_id
from paku_iot.security.tokens import BOOTSTRAP, AdminTokens, token_hash

COOKIE_NAME = "paku_ui_session"
COOKIE_PATH = "/ui"
SESSION_TTL_S = 12 * 3600
_VERSION = "v1"


def session_key_path(data_dir: Path) -> Path:
    return data_dir / "secrets" / "ui-session-key"


@dataclass(frozen=True, slots=True)
class Session:
    actor: str  # as in the audit log: "admin" or "token:<name>"
    token_hash: str
    expires_at: int  # epoch seconds
    nonce: str  # the session's id, as `DashboardSessions` knows it
    csrf_token: str  # for the forms of this session; see `SessionCodec.csrf_for`
    # The token's role; `SessionVerifier` checks it is still the token's on every request.
    role: Role = Role.ADMIN

    @property
    def identity(self) -> Identity:
        return Identity(self.actor, self.role)

    def can(self, permission: Permission | str) -> bool:
        """For templates too (`can('devices:admin')`): an unknown name is an error, not a
        quietly hidden button."""
        return self.identity.can(Permission(permission))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Makes and checks session cookie values with one secret key."""

    def __init__(self, key: bytes, ttl_s: int = SESSION_TTL_S) -> None:
        self._key = key
        self._ttl_s = ttl_s

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> SessionCodec:
        return cls(read_or_create_secret(session_key_path(data_dir)).encode())

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}|{body}".encode(), hashlib.sha256).digest())

    def expiry(self, now: float | None = None) -> int:
        """When a session issued now expires, in epoch seconds."""
        return int(now if now is not None else time.time()) + self._ttl_s

    def issue(
        self,
        actor: str,
        token: str,
        now: float | None = None,
        *,
        role: Role = Role.ADMIN,
        session_id: str | None = None,
        expires_at: int | None = None,
    ) -> str:
        """A cookie value. Only a session the server recorded (`DashboardSessions.start`
        with the same id and expiry) is accepted."""
        claims = {
            "a": actor,
            "r": str(role),
            "t": token_hash(token),
            "e": expires_at if expires_at is not None else self.expiry(now),
            "n": session_id or new_session_id(),
        }
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"{_VERSION}.{body}.{self._mac('session', body)}"

    def decode(self, value: str, now: float | None = None) -> Session | None:
        """The session in a cookie value if it is ours, intact and not expired; else None.
        Whether its token still works is `SessionVerifier`'s question."""
        try:
            version, body, mac = value.split(".")
        except ValueError:
            return None
        # compare_digest refuses str with non-ASCII characters (TypeError): a cookie is
        # whatever the client sends, so anything but ASCII is simply not ours.
        if not (version == _VERSION and value.isascii()):
            return None
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            claims = json.loads(_unb64(body))
            session = Session(
                actor=str(claims["a"]),
                token_hash=str(claims["t"]),
                expires_at=int(claims["e"]),
                nonce=str(claims["n"]),
                csrf_token=self._mac("csrf", body),
                # Cookies issued before roles existed were all admins'.
                role=Role(claims.get("r", Role.ADMIN)),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires_at <= (now if now is not None else time.time()):
            return None
        return session


class SessionVerifier:
    """Checks that a session is still recorded (not signed out) and its admin token still
    good: nothing is cached, as for the API."""

    def __init__(
        self, tokens: AdminTokens, bootstrap_token: str, sessions: DashboardSessions
    ) -> None:
        self._tokens = tokens
        self._bootstrap_hash = token_hash(bootstrap_token)
        self._sessions = sessions

    async def still_valid(self, session: Session) -> bool:
        return await self._token_still_valid(session) and await self._sessions.is_live(
            session.nonce, session.actor
        )

    async def _token_still_valid(self, session: Session) -> bool:
        if session.actor == BOOTSTRAP.actor:
            # A changed PAKU_ADMIN_TOKEN signs out everyone who signed in with the old one.
            return session.role == BOOTSTRAP.role and hmac.compare_digest(
                session.token_hash, self._bootstrap_hash
            )
        return await self._tokens.identity_for_hash(session.token_hash) == session.identity
