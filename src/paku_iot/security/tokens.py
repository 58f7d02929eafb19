"""Admin tokens: the bootstrap token from the settings, plus named tokens kept hashed."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime

from paku_iot.exceptions import InvalidInput
from paku_iot.security.roles import Identity, Role
from paku_iot.storage.records import AdminTokenRecord
from paku_iot.storage.security import TokenStore

BOOTSTRAP_ACTOR = "admin"  # the token from PAKU_ADMIN_TOKEN or the data dir's token file
BOOTSTRAP = Identity(BOOTSTRAP_ACTOR, Role.ADMIN)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdminTokens:
    def __init__(self, store: TokenStore, bootstrap_token: str) -> None:
        self._store = store
        self._bootstrap = bootstrap_token.encode()

    async def identify(self, token: str) -> Identity | None:
        """Who this token belongs to and its role, or None. A revoked token is refused from
        the next request on: nothing is cached."""
        if hmac.compare_digest(token.encode(), self._bootstrap):
            return BOOTSTRAP
        return await self.identity_for_hash(token_hash(token))

    async def create(self, name: str, role: Role = Role.ADMIN) -> str:
        if not _NAME_RE.fullmatch(name) or name == BOOTSTRAP_ACTOR:
            raise InvalidInput("token names are 1-64 characters of a-z 0-9 _ . - (and not 'admin')")
        token = "pk_" + secrets.token_urlsafe(32)
        await self._store.create(name, token_hash(token), datetime.now(UTC), Role(role).value)
        return token

    async def revoke(self, name: str) -> bool:
        return await self._store.revoke(name, datetime.now(UTC))

    async def all(self) -> list[AdminTokenRecord]:
        """The named tokens, live and revoked (the bootstrap token is not among them)."""
        return await self._store.all()

    async def identity_for_hash(self, hashed: str) -> Identity | None:
        """The live named token with this hash (a dashboard session keeps only the hash)."""
        found = await self._store.name_for(hashed)
        if found is None:
            return None
        name, role = found
        return Identity(f"token:{name}", Role(role))
