"""The HTTP API (FastAPI)."""

from paku_iot.api.app import create_app

__all__ = ["create_app"]
