"""`paku-iot tokens create NAME --role ROLE` and `tokens list` showing the roles, on the
database directly (no server needed)."""

from __future__ import annotations

from pathlib import Path

from paku_iot.cli.tokens import ROLES
from paku_iot.security.roles import Role
from paku_iot.security.tokens import AdminTokens
from paku_iot.storage.engine import create_engine
from paku_iot.storage.security import TokenStore
from tests.support.cli import cli


def test_the_cli_knows_every_role() -> None:
    assert tuple(Role) == ROLES


async def test_tokens_are_made_with_a_role_and_listed_with_it(
    database_url: str, tmp_path: Path
) -> None:
    env = {"PAKU_DATABASE_URL": database_url, "PAKU_DATA_DIR": str(tmp_path / "data")}
    made = await cli(env, tmp_path, "tokens", "create", "ci", "--role", "publisher")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("token ci (publisher): ")[1].split()[0]
    made = await cli(env, tmp_path, "tokens", "create", "ops", "--role", "operator")
    assert made.returncode == 0, made.stderr

    listed = await cli(env, tmp_path, "tokens", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines()}
    assert lines == {"ci": "publisher", "ops": "operator"}

    # No role, or one that does not exist: refused, nothing made.
    for args in (("tokens", "create", "x"), ("tokens", "create", "x", "--role", "root")):
        refused = await cli(env, tmp_path, *args)
        assert refused.returncode == 2
        assert "--role" in refused.stderr

    engine = create_engine(database_url)
    try:
        identity = await AdminTokens(TokenStore(engine), bootstrap_token="").identify(token)
        assert identity is not None
        assert identity.role == Role.PUBLISHER
        assert [t.name for t in await AdminTokens(TokenStore(engine), "").all()] == ["ci", "ops"]
    finally:
        await engine.dispose()
