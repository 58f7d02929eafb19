"""The dashboard as a browser uses it: signed in with the admin token, CSRF token in hand;
and where the browser tests leave their screenshots."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support import ADMIN_TOKEN

# test-artifacts/ at the top of the repository (gitignored), as docs/dashboard.md says.
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> str:
    """Sign `client` in (its cookie jar keeps the session); returns the session's CSRF token."""
    response = await client.post("/ui/signin", data={"token": token})
    assert response.status_code == 303, response.text
    page = await client.get("/ui/fleet")
    assert page.status_code == 200
    return csrf_of(page.text)
