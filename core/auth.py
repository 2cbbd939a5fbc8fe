"""The admin bearer token, checked the same way by every service that has admin endpoints."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from core.settings import Settings


def require_admin(request: Request) -> None:
    """Dependency: 401 unless `Authorization: Bearer <ADMIN_TOKEN>`; an unset token locks it all."""
    settings: Settings = request.app.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.admin_token.encode()
    # compare_digest: the time taken must not tell how much of a guessed token was right.
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise HTTPException(401, "a valid admin bearer token is required", headers={"WWW-Authenticate": "Bearer"})
