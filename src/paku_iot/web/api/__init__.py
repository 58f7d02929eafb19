"""The HTTP API (FastAPI routers under `routes/`); `web.app` composes it."""
