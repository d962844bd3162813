"""Who may act: the bearer token, and the operator's name that goes into the audit record."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Header, Request

from agent.api.errors import ApiError

ACTOR = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
UNAUTHORIZED = "missing or wrong bearer token (see the agent's token file)"


def token_matches(authorization: str | None, token: str) -> bool:
    """`Bearer <token>`, the scheme in any case, spaces around the token ignored."""
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode()
    )


def operator(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_hadeck_actor: Annotated[str | None, Header()] = None,
) -> str:
    """Checks the bearer token; returns the operator's name for the audit log.

    The request gate (agent/api/gate.py) has checked the token already, before the body
    was read; this check keeps a route safe wherever it is mounted, and declares the
    header in the OpenAPI document."""
    if not token_matches(authorization, request.app.state.agent.token):
        raise ApiError(401, UNAUTHORIZED)
    actor = x_hadeck_actor or "api"
    if not ACTOR.match(actor):
        raise ApiError(400, "X-Hadeck-Actor must be 1-64 of letters, digits and _.@+-")
    return actor


Operator = Annotated[str, Depends(operator)]
