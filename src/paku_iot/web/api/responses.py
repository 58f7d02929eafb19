"""The error answers routes declare, so that the OpenAPI document lists what each route can
return, with the body it really has (`{"error": {"code", "message"}}`, `errors.py`).

`tests/web/api/test_openapi.py` sends each route a request for every status it documents and
fails when a route answers one it does not document, or documents one it never answers.
"""

from __future__ import annotations

from typing import Any

from paku_iot.web.api.schemas import ErrorResponse

Responses = dict[int | str, dict[str, Any]]


def error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


# Every route: a field that fails validation, and a NUL character anywhere in the path or
# query string (refused before routing, `inputs.RefuseNulInUrl`), even on a route that takes
# no parameters.
INVALID_INPUT: Responses = {
    422: error("Invalid input; the message names the field (`details` lists each one).")
}
ADMIN_ONLY: Responses = {
    401: error("No admin token, or a wrong or revoked one (`WWW-Authenticate: Bearer`).")
}
# Routes whose permission some role lacks (every admin route but reading releases, which
# every role may): `security/roles.py`.
FORBIDDEN: Responses = {
    403: error(
        "The token's role lacks the permission this call needs (`insufficient_role`); the "
        "message names the role and the permission."
    )
}
ROLE_LIMITED: Responses = {**ADMIN_ONLY, **FORBIDDEN}
NO_DEVICE: Responses = {404: error("No device with this id (`device_not_found`).")}

# Listings that also stream the whole range as CSV or NDJSON (`format=`, or Accept).
STREAMED: Responses = {
    200: {
        "description": "A JSON page; or, for `format=csv` / `ndjson`, the whole range.",
        "content": {"text/csv": {}, "application/x-ndjson": {}},
    }
}
