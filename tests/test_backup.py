"""scripts/backup.sh and scripts/restore.sh as an operator runs them: a `paku-iot dev` holding
real devices, telemetry (sent over MQTT) and a firmware release (published with the CLI) is
backed up, everything is destroyed, restored, started again and found as it was. On SQLite
and on PostgreSQL; nothing is mocked."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from paku_iot import __version__
from tests.support import eventually, free_port, require
from tests.support.mqtt import DeviceClient
from tests.support.processes import dev_environment, paku, read_until, run_paku, stop
from tests.support.processes import run_script as script
from tests.support.ui import sign_in

REPO = Path(__file__).resolve().parents[1]
BACKUP = REPO / "scripts" / "backup.sh"
RESTORE = REPO / "scripts" / "restore.sh"
PG_ADMIN_DSN = os.environ.get("PAKU_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
ARCHIVE_NAME = re.compile(r"^paku-backup-\d{8}T\d{6}Z\.tar\.gz(\.age)?$")
DEVICES = ("kitchen-01", "garage-02", "attic-03")
MODEL = "paku-sensor"


def need_tools(*tools: str) -> None:
    for tool in tools:
        require(shutil.which(tool) is not None, f"{tool} is not installed")


def archives(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ARCHIVE_NAME.match(p.name))


def manifest_of(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/manifest.json"))
        extracted = tar.extractfile(member)
        assert extracted is not None
        with extracted:
            manifest: dict[str, Any] = json.load(extracted)
    return manifest


async def pg_execute(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass
class Database:
    """The database paku-iot runs on in one test, and how to lose it completely."""

    kind: str
    env: dict[str, str]
    pg_name: str | None = None

    def destroy(self) -> None:
        # SQLite lives in the data dir, which the test deletes anyway.
        if self.pg_name is not None:
            asyncio.run(pg_execute(f"DROP DATABASE {self.pg_name} WITH (FORCE)"))
            asyncio.run(pg_execute(f"CREATE DATABASE {self.pg_name}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    need_tools("bash", "tar", "gzip", "python3")
    if request.param == "sqlite":
        yield Database("sqlite", {})  # the default: <data dir>/paku.db
        return
    need_tools("pg_dump", "pg_restore", "psql")
    try:
        asyncio.run(pg_execute("SELECT 1"))
    except (OSError, asyncpg.PostgresError) as exc:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} is not reachable: {exc}")
    name = f"paku_backup_test_{secrets.token_hex(6)}"
    asyncio.run(pg_execute(f"CREATE DATABASE {name}"))
    # A password in the URL must reach pg_dump/psql without appearing in their command line;
    # the server trusts us, so any password will do.
    url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgres@", "postgres:s3cret@") + f"/{name}"
    try:
        yield Database("postgresql", {"PAKU_DATABASE_URL": url}, name)
    finally:
        asyncio.run(pg_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


async def start_dev(env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    """`paku-iot dev`, running; returns it and its banner."""
    dev = paku("dev", env=env, cwd=cwd)
    assert dev.stdout is not None
    try:
        banner = await asyncio.to_thread(read_until, dev.stdout, "Press Ctrl-C")
    except BaseException:
        stop(dev)
        raise
    return dev, banner


async def snapshot(base_url: str, token: str, sha256: str) -> dict[str, Any]:
    """Everything the test expects a restore to bring back, as the API shows it."""
    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        devices = (await client.get("/devices", params={"limit": 1000})).json()["items"]
        telemetry = {}
        for device in devices:
            response = await client.get(f"/devices/{device['id']}/telemetry")
            assert response.status_code == 200, response.text
            telemetry[device["id"]] = response.json()["items"]
        releases = (await client.get("/ota/releases")).json()["items"]
        key = await client.get("/ota/public-key")
        firmware = await client.get(f"/ota/firmware/{sha256}.bin")
    assert key.status_code == 200, key.text
    assert firmware.status_code == 200, firmware.text
    return {
        "devices": sorted((d["id"], d["model"]) for d in devices),
        "telemetry": telemetry,
        "releases": releases,
        "public_key": key.json(),
        "firmware_sha256": hashlib.sha256(firmware.content).hexdigest(),
    }


async def test_backup_destroy_restore_brings_everything_back(
    tmp_path: Path, database: Database
) -> None:
    env, http_port, mqtt_port = dev_environment(tmp_path)
    env |= database.env
    base_url = f"http://127.0.0.1:{http_port}"
    data_dir = tmp_path / "var"
    backups = tmp_path / "backups"

    migrated = await asyncio.to_thread(run_paku, "migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr

    # --- real data, written through paku-iot itself -------------------------------------------
    dev, _ = await start_dev(env, tmp_path)
    try:
        token = (data_dir / "secrets" / "admin-token").read_text().strip()
        now_ms = int(time.time() * 1000)
        passwords = {}
        async with httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}
        ) as admin:
            for device_id in DEVICES:
                response = await admin.post("/devices", json={"model": MODEL, "id": device_id})
                assert response.status_code == 201, response.text
                passwords[device_id] = response.json()["credentials"]["password"]
        for n, device_id in enumerate(DEVICES):
            device = DeviceClient("127.0.0.1", mqtt_port, device_id, passwords[device_id])
            await device.connect()
            # One reading from two days ago, the rest from now (PostgreSQL partitions by day;
            # anything older than the retention period would be deleted on the next start).
            stamps = [now_ms - 2 * 86_400_000, *(now_ms - 1000 * i for i in range(n + 1))]
            for i, ts in enumerate(stamps):
                body = json.dumps({"ts": ts, "temp": 20 + i, "n": n})
                assert await device.publish(f"paku/{device_id}/telemetry", body) == 0
            await device.disconnect()

        async def all_stored() -> None:
            async with httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}
            ) as client:
                for n, device_id in enumerate(DEVICES):
                    response = await client.get(f"/devices/{device_id}/telemetry")
                    assert len(response.json()["items"]) == n + 2

        await eventually(all_stored)

        firmware = secrets.token_bytes(150_000)
        (tmp_path / "fw.bin").write_bytes(firmware)
        published = await asyncio.to_thread(
            run_paku,
            *("ota", "publish", "fw.bin", "--model", MODEL, "--version", "1.2.3"),
            *("--url", base_url, "--json"),
            env=env,
            cwd=tmp_path,
        )
        assert published.returncode == 0, published.stderr
        sha256 = json.loads(published.stdout)["sha256"]
        assert sha256 == hashlib.sha256(firmware).hexdigest()
        before = await snapshot(base_url, token, sha256)
        # A dashboard sign-in: the session key is made, and signs a cookie.
        async with httpx.AsyncClient(base_url=base_url) as browser:
            await sign_in(browser, token)
    finally:
        code, stderr = stop(dev)
    assert code == 0, stderr
    assert sum(len(items) for items in before["telemetry"].values()) == 9
    assert before["devices"] == sorted((d, MODEL) for d in DEVICES)
    assert [r["version"] for r in before["releases"]] == ["1.2.3"]
    signing_key = (data_dir / "secrets" / "ota-signing-key.pem").read_bytes()
    session_key = (data_dir / "secrets" / "ui-session-key").read_bytes()

    # --- back up ----------------------------------------------------------------------------
    made = script(BACKUP, "--out", str(backups), env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    [archive] = archives(backups)
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert not [p for p in backups.iterdir() if "partial" in p.name or "stage" in p.name]
    assert "s3cret" not in made.stdout + made.stderr
    manifest = manifest_of(archive)
    assert manifest["paku_iot_version"] == __version__
    assert manifest["database"]["kind"] == database.kind
    assert "s3cret" not in json.dumps(manifest)
    for member in (
        manifest["database"]["file"],
        f"firmware/{sha256}.bin",
        "secrets/admin-token",
        "secrets/ota-signing-key.pem",
        "broker/mosquitto.conf",
    ):
        assert member in manifest["files"], member
    # What paku-iot makes again is left out: the key that signs dashboard sessions, the
    # backend's broker password, and the password file made from it and the database.
    for member in ("secrets/ui-session-key", "broker/backend-password", "broker/passwd"):
        assert member not in manifest["files"], member
    with tarfile.open(archive) as tar:
        names = [m.name.split("/", 1)[-1] for m in tar.getmembers()]
    assert not [n for n in names if n.endswith(("ui-session-key", "backend-password", "passwd"))]
    assert manifest["files"][f"firmware/{sha256}.bin"]["sha256"] == sha256
    assert "broker/mosquitto.pid" not in manifest["files"]

    # --- restore refuses to overwrite data without --yes ------------------------------------
    refused = script(RESTORE, str(archive), env=env, cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "--yes" in refused.stderr
    assert "stop" in (refused.stdout + refused.stderr).lower()

    # --- lose everything, restore ------------------------------------------------------------
    shutil.rmtree(data_dir)
    await asyncio.to_thread(database.destroy)
    restored = script(RESTORE, str(archive), env=env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restore complete" in restored.stdout
    assert (data_dir / "secrets" / "ota-signing-key.pem").read_bytes() == signing_key
    assert (data_dir / "secrets" / "admin-token").read_text().strip() == token
    # A new session key: nothing signed with the old one is accepted after the restore.
    new_session_key = data_dir / "secrets" / "ui-session-key"
    assert new_session_key.stat().st_mode & 0o777 == 0o600
    assert len(new_session_key.read_text().strip()) >= 40
    assert new_session_key.read_bytes() != session_key

    # --- and paku-iot finds it all ------------------------------------------------------------
    dev, banner = await start_dev(env, tmp_path)
    try:
        assert token in banner  # the same admin token
        after = await snapshot(base_url, token, sha256)
        # Devices still get in with the passwords they were given before the disaster.
        for device_id, password in passwords.items():
            device = await DeviceClient("127.0.0.1", mqtt_port, device_id, password).connect()
            await device.disconnect()
    finally:
        code, stderr = stop(dev)
    assert code == 0, stderr
    assert after == before


def test_keep_prunes_and_restore_keeps_a_replaced_secret(tmp_path: Path) -> None:
    need_tools("bash", "tar", "gzip", "python3")
    env = {"PAKU_DATA_DIR": str(tmp_path / "var")}
    migrated = run_paku("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    token_file = tmp_path / "var" / "secrets" / "admin-token"
    token_file.parent.mkdir()
    token_file.write_text("token-one\n")

    made = []
    for _ in range(3):
        result = script(BACKUP, "--keep", "2", env=env, cwd=tmp_path)  # default --out ./backups
        assert result.returncode == 0, result.stderr
        made.append(result.stdout.split("wrote ")[1].split()[0])
    kept = archives(tmp_path / "backups")
    assert [str(p) for p in kept] == made[1:]  # the newest two; the oldest is gone
    assert "deleted" in result.stdout

    token_file.write_text("token-two\n")
    refused = script(RESTORE, str(kept[-1]), env=env, cwd=tmp_path)
    assert refused.returncode == 1
    assert "already hold data" in refused.stderr
    assert "--yes" in refused.stderr
    assert token_file.read_text() == "token-two\n"  # untouched

    restored = script(RESTORE, "--yes", str(kept[-1]), env=env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert token_file.read_text() == "token-one\n"
    [previous] = token_file.parent.glob("admin-token.replaced-*")
    assert previous.read_text() == "token-two\n"  # a replaced secret is never just lost


def test_backup_fails_clearly_and_leaves_no_archive(tmp_path: Path) -> None:
    need_tools("bash", "tar", "gzip", "python3")
    out = tmp_path / "out"
    missing = script(BACKUP, "--out", str(out), env={"PAKU_DATA_DIR": "nowhere"}, cwd=tmp_path)
    assert missing.returncode == 1
    assert "no SQLite database" in missing.stderr

    need_tools("pg_dump")
    url = f"postgresql://paku:s3cret@127.0.0.1:{free_port()}/paku"
    unreachable = script(BACKUP, "--out", str(out), env={"PAKU_DATABASE_URL": url}, cwd=tmp_path)
    assert unreachable.returncode == 1
    assert "pg_dump" in unreachable.stderr
    assert "s3cret" not in unreachable.stdout + unreachable.stderr
    assert archives(out) == []
    assert [p.name for p in out.iterdir()] in ([], [".paku-backup.lock"])

    # A PATH with the usual tools but no PostgreSQL client: the missing tool is named.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(Path(sys.executable).resolve())  # not a pyenv shim
    for tool in ("bash", "env", "dirname", "basename", "tar", "gzip", "awk", "sed"):
        found = shutil.which(tool)
        if found is not None:
            (bin_dir / tool).symlink_to(found)
    only_bin = {"PAKU_DATABASE_URL": url, "PATH": str(bin_dir)}
    no_pg = script(BACKUP, "--out", str(out), env=only_bin, cwd=tmp_path)
    assert no_pg.returncode == 1
    assert "pg_dump not found" in no_pg.stderr
    assert "postgresql-client" in no_pg.stderr

    bad = script(BACKUP, "--keep", "0", env={}, cwd=tmp_path)
    assert bad.returncode == 2


def sqlite_install(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A migrated SQLite install with an admin token and a session key: its env, token file."""
    env = {"PAKU_DATA_DIR": str(tmp_path / "var")}
    migrated = run_paku("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    secrets_dir = tmp_path / "var" / "secrets"
    secrets_dir.mkdir(mode=0o700, exist_ok=True)
    token_file = secrets_dir / "admin-token"
    token_file.write_text("the-admin-token-0123456789\n")
    (secrets_dir / "ui-session-key").write_text("the-old-session-key\n")
    return env, token_file


def age_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """An age identity (private key) and its recipient (public key) file, from age-keygen."""
    identity = directory / f"{name}.key"
    made = subprocess.run(
        ["age-keygen", "-o", str(identity)], capture_output=True, text=True, check=True
    )
    public = re.search(r"age1[0-9a-z]+", made.stderr + made.stdout)
    assert public, made.stderr
    recipients = directory / f"{name}.pub"
    recipients.write_text(public.group(0) + "\n")
    return identity, recipients


def test_an_encrypted_archive_restores_only_with_its_key(tmp_path: Path) -> None:
    need_tools("bash", "tar", "gzip", "python3", "age", "age-keygen")
    env, token_file = sqlite_install(tmp_path)
    identity, recipients = age_keys(tmp_path, "backup")
    wrong_identity, _ = age_keys(tmp_path, "other")

    made = script(BACKUP, "--recipients-file", str(recipients), env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    [archive] = archives(tmp_path / "backups")
    assert archive.name.endswith(".tar.gz.age")
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    data = archive.read_bytes()
    assert data.startswith(b"age-encryption.org/v1\n")
    with pytest.raises(tarfile.ReadError), tarfile.open(archive):
        pass
    # The same through the environment, and through recipients.txt in the output directory
    # (where compose's backup service finds it).
    time.sleep(1.1)
    made = script(BACKUP, env={**env, "PAKU_BACKUP_RECIPIENTS_FILE": str(recipients)}, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    shutil.copy(recipients, tmp_path / "backups" / "recipients.txt")
    time.sleep(1.1)
    made = script(BACKUP, env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "encrypting to the recipients in" in made.stdout
    assert [p.name.endswith(".age") for p in archives(tmp_path / "backups")] == [True] * 3

    shutil.rmtree(tmp_path / "var")
    without = script(RESTORE, str(archive), env=env, cwd=tmp_path)
    assert without.returncode == 1
    assert "encrypted" in without.stderr, without.stderr
    assert "--identity" in without.stderr, without.stderr
    public_only = script(
        RESTORE, "--identity", str(recipients), str(archive), env=env, cwd=tmp_path
    )
    assert public_only.returncode == 1
    assert "cannot decrypt" in public_only.stderr, public_only.stderr
    wrong = script(RESTORE, "--identity", str(wrong_identity), str(archive), env=env, cwd=tmp_path)
    assert wrong.returncode == 1
    assert "is not the key it was encrypted to" in wrong.stderr, wrong.stderr
    assert "nothing was restored" in wrong.stderr
    assert not (tmp_path / "var").exists()

    restored = script(RESTORE, "--identity", str(identity), str(archive), env=env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert token_file.read_text() == "the-admin-token-0123456789\n"
    session_key = token_file.parent / "ui-session-key"
    assert session_key.read_text() != "the-old-session-key\n"
    assert session_key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "var" / "paku.db").is_file()


def test_restore_refuses_an_archive_with_a_file_its_manifest_does_not_list(
    tmp_path: Path,
) -> None:
    need_tools("bash", "tar", "gzip", "python3")
    env, token_file = sqlite_install(tmp_path)
    made = script(BACKUP, env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    [archive] = archives(tmp_path / "backups")

    # The same archive, with one more file that its manifest does not name.
    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    [root] = unpacked.iterdir()
    (root / "broker").mkdir(exist_ok=True)
    (root / "broker" / "extra.conf").write_text("listener 1884 0.0.0.0\nallow_anonymous true\n")
    tampered = tmp_path / "tampered" / archive.name
    tampered.parent.mkdir()
    with tarfile.open(tampered, "w:gz") as tar:
        tar.add(root, arcname=root.name)

    shutil.rmtree(tmp_path / "var")
    refused = script(RESTORE, "--yes", str(tampered), env=env, cwd=tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "does not list" in refused.stderr, refused.stderr
    assert "broker/extra.conf" in refused.stderr
    assert not (tmp_path / "var").exists()  # nothing at all was restored

    # The untouched archive restores.
    restored = script(RESTORE, str(archive), env=env, cwd=tmp_path)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert token_file.read_text() == "the-admin-token-0123456789\n"
