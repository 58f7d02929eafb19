"""Dashboard sessions on the server: one row a session, so that signing out ends it for every
copy of its cookie, in every API process sharing the database. The cookie (signed by
`web/ui/sessions.py`) names the session by a random id; only its SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from paku_iot.storage.security import SessionStore


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def new_session_id() -> str:
    return secrets.token_urlsafe(16)  # 128 bits


class DashboardSessions:
    def __init__(self, store: SessionStore) -> None:
        self._store = store

    async def start(self, session_id: str, actor: str, expires_at: int) -> None:
        """Record a signed-in session; `expires_at` in epoch seconds, as in its cookie."""
        await self._store.create(
            _id_hash(session_id),
            actor,
            datetime.now(UTC),
            datetime.fromtimestamp(expires_at, UTC),
        )

    async def is_live(self, session_id: str, actor: str) -> bool:
        """Signed in, not signed out, not expired, and by this actor."""
        found = await self._store.actor_of(_id_hash(session_id), datetime.now(UTC))
        return found is not None and found == actor

    async def end(self, session_id: str) -> None:
        await self._store.delete(_id_hash(session_id))
