"""Passwords and their Mosquitto `$7$` hashes, checked against Mosquitto's own tool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from paku_iot.broker.passwords import hash_password, new_password, verify_password
from paku_iot.protocol import is_valid_device_id
from paku_iot.registry.ids import new_device_id
from tests.support import require


def test_our_hash_verifies_and_has_mosquittos_shape() -> None:
    password = new_password()
    hashed = hash_password(password)
    assert hashed.startswith("$7$101$")
    assert password not in hashed
    assert verify_password(password, hashed)
    assert not verify_password(password + "x", hashed)
    assert hash_password(password) != hashed  # salted


def test_hashes_made_by_mosquitto_passwd_verify(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    require(tool is not None, "mosquitto_passwd is not installed")
    assert tool is not None
    password_file = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(password_file), "alice", "s3cret!"], check=True)
    stored = password_file.read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret!", stored)
    assert not verify_password("s3cret", stored)


@pytest.mark.parametrize(
    "stored", ["", "plain", "$6$abc$def", "$7$x$AAAA$AAAA", "$7$101$!!!$AAAA", "$7$0$AAAA$AAAA"]
)
def test_malformed_hashes_never_verify(stored: str) -> None:
    assert not verify_password("anything", stored)


def test_passwords_are_long_random_and_file_safe() -> None:
    passwords = {new_password() for _ in range(100)}
    assert len(passwords) == 100
    for password in passwords:
        assert len(password) >= 32  # 192 bits
        assert ":" not in password
        assert "\n" not in password


@pytest.mark.parametrize("good", ["abc", "A_b-9", "x" * 64, "kitchen-01"])
def test_valid_device_ids(good: str) -> None:
    assert is_valid_device_id(good)


@pytest.mark.parametrize("bad", ["ab", "x" * 65, "a/b", "a+b", "a#b", "$ab", "a b", "a.b", "é-1"])
def test_invalid_device_ids(bad: str) -> None:
    assert not is_valid_device_id(bad)


def test_generated_ids_are_valid_and_distinct() -> None:
    ids = {new_device_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(is_valid_device_id(i) for i in ids)
