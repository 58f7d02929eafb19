"""Token roles and what each may do: the one table the API and the dashboard both check.

A route declares the `Permission` it needs; a token's `Role` grants a set of them. Roles
are fixed when a token is made (`paku-iot tokens create NAME --role ROLE`); the bootstrap
token (PAKU_ADMIN_TOKEN) is `admin`. docs/operations.md lists the table in prose.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    PUBLISHER = "publisher"
    ADMIN = "admin"


class Permission(StrEnum):
    DEVICES_READ = "devices:read"  # devices, their history, commands, config, rejected
    DEVICES_OPERATE = "devices:operate"  # commands, desired config, notes/metadata/tags
    DEVICES_ADMIN = "devices:admin"  # provisioning, credentials, deletion, claim codes
    RELEASES_READ = "releases:read"
    RELEASES_WRITE = "releases:write"  # upload firmware, rollout percentage, pause
    ALERTS_READ = "alerts:read"  # alerts, rules (their secrets are never shown), deliveries
    ALERTS_HANDLE = "alerts:handle"  # acknowledge, silence
    ALERT_RULES_WRITE = "alert-rules:write"  # rules hold webhook secrets
    AUDIT_READ = "audit:read"


_VIEWER = frozenset(
    {
        Permission.DEVICES_READ,
        Permission.RELEASES_READ,
        Permission.ALERTS_READ,
    }
)
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _VIEWER | {Permission.DEVICES_OPERATE, Permission.ALERTS_HANDLE},
    # What CI holds: releases only, not the fleet.
    Role.PUBLISHER: frozenset({Permission.RELEASES_READ, Permission.RELEASES_WRITE}),
    Role.ADMIN: frozenset(Permission),
}


def roles_with(permission: Permission) -> list[Role]:
    return [role for role in Role if permission in ROLE_PERMISSIONS[role]]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: the actor as the audit log names it ("admin", "token:<name>"), and
    the role of the token they called with."""

    actor: str
    role: Role

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def refusal(self, permission: Permission) -> str:
        """Why this identity gets a 403 for `permission`, naming the roles that would not."""
        allowed = ", ".join(roles_with(permission))
        return (
            f"{self.actor} has role '{self.role.value}', which lacks '{permission.value}' "
            f"(roles that have it: {allowed})"
        )
