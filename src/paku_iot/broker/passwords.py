"""Device passwords and their Mosquitto `$7$` hashes: the broker's credential format.

Mosquitto 2 checks passwords against `$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>`.
We store only that hash, so the database column can be projected into Mosquitto's password
file as it is and also checks HTTP Basic auth for device requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# Mosquitto's own default. The passwords we hash are random with 192 bits of entropy, so key
# stretching adds no protection, while every broker reload re-checks each live connection's
# password against the file: a cheap hash keeps a reload of thousands of devices fast.
DEFAULT_ITERATIONS = 101
_SALT_BYTES = 12


def new_password() -> str:
    """A random password of 192 bits, URL- and file-safe (no `:` that would break the file)."""
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored_hash: str) -> bool:
    """Check `password` against a `$7$` hash in constant time; any malformed hash is False."""
    parts = stored_hash.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    if not 1 <= iterations <= 1_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)
