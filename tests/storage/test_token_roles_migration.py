"""Migration 0010: named tokens made before roles could do everything, so they become admin;
audit entries made before have no role."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import text

from paku_iot.security.roles import Role
from paku_iot.security.tokens import AdminTokens, token_hash
from paku_iot.storage.engine import create_engine
from paku_iot.storage.migrate import upgrade
from paku_iot.storage.security import AuditStore, TokenStore


async def test_tokens_made_before_roles_become_admin(empty_database: str) -> None:
    await asyncio.to_thread(upgrade, empty_database, "0009")
    engine = create_engine(empty_database)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO admin_tokens (name, token_hash, created_at) "
                    "VALUES ('ci', :hash, :now)"
                ),
                {"hash": token_hash("pk_old"), "now": datetime.now(UTC)},
            )
            await conn.execute(
                text(
                    "INSERT INTO audit_log (at, actor, action, target, details) "
                    "VALUES (:now, 'token:ci', 'device.delete', 'lamp-1', '{}')"
                ),
                {"now": datetime.now(UTC)},
            )
        await asyncio.to_thread(upgrade, empty_database)

        tokens = AdminTokens(TokenStore(engine), bootstrap_token="boot")
        identity = await tokens.identify("pk_old")
        assert identity is not None
        assert (identity.actor, identity.role) == ("token:ci", Role.ADMIN)
        # New tokens must name their role: no default is left in the table.
        await tokens.create("viewer-1", Role.VIEWER)
        assert [(t.name, t.role) for t in await tokens.all()] == [
            ("ci", "admin"),
            ("viewer-1", "viewer"),
        ]
        [entry] = await AuditStore(engine).page(limit=10)
        assert (entry.actor, entry.role) == ("token:ci", None)
    finally:
        await engine.dispose()
