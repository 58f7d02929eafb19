"""The audit log: who changed what, appended for every state-changing admin action."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from paku_iot.security.roles import Identity
from paku_iot.storage.records import AuditRecord
from paku_iot.storage.security import AuditStore

log = logging.getLogger("paku_iot.audit")


class AuditLog:
    def __init__(self, store: AuditStore) -> None:
        self._store = store

    async def record(
        self,
        actor: Identity | str,
        action: str,
        target: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """`actor` is a token's identity (its role is recorded beside its name), or a plain
        string for an actor without a token (a device claiming: "claim:<address>")."""
        # Never a secret in here: callers pass ids, names and settings, not credentials.
        name, role = (
            (actor.actor, actor.role.value) if isinstance(actor, Identity) else (actor, None)
        )
        await self._store.append(datetime.now(UTC), name, action, target, details or {}, role)
        log.info(
            "%s %s %s",
            name,
            action,
            target,
            extra={"actor": name, "role": role, "action": action},
        )

    async def page(
        self,
        *,
        limit: int,
        before_id: int | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditRecord]:
        """Entries newest first, before `before_id` (the cursor), optionally filtered."""
        return await self._store.page(
            limit=limit, before_id=before_id, action=action, target=target
        )
