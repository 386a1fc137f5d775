"""REST routes of service tokens (admins only): create, list, revoke.

``POST /tokens`` answers the token once; only its hash is kept
(`broker_core.service_tokens`). ``DELETE /tokens/{id}`` revokes it at once:
the next request with it is 401, and its open WebSocket and GraphQL
sessions end as a deleted user's do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from broker_core.permissions import require_admin
from broker_core.service_tokens import (
    CreatedServiceToken,
    CreateServiceTokenRequest,
    ServiceTokenView,
    invalid_expiry,
)

from ..context import ctx_of
from ..errors import ApiError
from ..security import user_of

if TYPE_CHECKING:
    from broker_core.auth import User

__all__ = ["TokenController"]

TokenId = Annotated[str, PathParameter(max_length=64)]


def _admin(request: Request[Any, Any, Any]) -> User:
    user = user_of(request)
    require_admin(user, "manage service tokens")
    return user


class TokenController(Controller):
    """``/tokens``: long-lived, scoped bearer tokens for machines."""

    path = "/tokens"
    tags = ["tokens"]
    opt = {"rate_limit": "admin"}

    @get("/")
    async def list_tokens(self, request: Request[Any, Any, Any]) -> list[ServiceTokenView]:
        """Every service token, oldest first (never the secret)."""
        _admin(request)
        return [ServiceTokenView.of(t) for t in ctx_of(request).accounts.service_tokens()]

    @post("/", status_code=HTTP_201_CREATED)
    async def create_token(
        self, request: Request[Any, Any, Any], data: JSONBody[CreateServiceTokenRequest]
    ) -> CreatedServiceToken:
        """Create a service token; the answer holds the token, shown this once."""
        admin = _admin(request)
        invalid = invalid_expiry(data)
        if invalid is not None:
            raise ApiError(422, "invalid", invalid)
        record, token = await ctx_of(request).accounts.create_service_token(data, admin.username)
        return CreatedServiceToken.of_new(record, token)

    @get("/{token_id:str}")
    async def get_token(
        self, request: Request[Any, Any, Any], token_id: TokenId
    ) -> ServiceTokenView:
        """One service token (never the secret)."""
        _admin(request)
        record = ctx_of(request).accounts.service_token(token_id)
        if record is None:
            raise ApiError(404, "token_not_found", f"service token {token_id!r} does not exist")
        return ServiceTokenView.of(record)

    @delete("/{token_id:str}", status_code=HTTP_204_NO_CONTENT)
    async def revoke_token(self, request: Request[Any, Any, Any], token_id: TokenId) -> None:
        """Revoke a service token at once."""
        _admin(request)
        if not await ctx_of(request).accounts.revoke_service_token(token_id):
            raise ApiError(404, "token_not_found", f"service token {token_id!r} does not exist")
