"""The dashboard's own files (CSS, script, vendored uPlot), served from the package: no CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from paku_iot.exceptions import NotFound

STATIC_DIR = (Path(__file__).parent.parent / "static").resolve()
_MEDIA_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}

router = APIRouter()


@router.get("/ui/static/{path:path}")
async def static_file(path: str) -> FileResponse:
    """Public on purpose: the sign-in page needs its styles, and nothing here is a secret."""
    target = (STATIC_DIR / path).resolve()
    media_type = _MEDIA_TYPES.get(target.suffix)
    if media_type is None or not target.is_relative_to(STATIC_DIR) or not target.is_file():
        raise NotFound("no such file", code="not_found")
    return FileResponse(
        target,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
