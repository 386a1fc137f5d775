"""REST routes of user management (admins only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody, PathParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from broker_core.permissions import require_admin

from ..accounts import CreateUserRequest, UpdateUserRequest, UserView
from ..context import ctx_of
from ..errors import ApiError
from ..security import user_of

if TYPE_CHECKING:
    from broker_core.auth import User

__all__ = ["UserController"]

Username = Annotated[str, PathParameter(max_length=64)]


def _admin(request: Request[Any, Any, Any]) -> User:
    user = user_of(request)
    require_admin(user, "manage users")
    return user


class UserController(Controller):
    """``/users``: accounts and their per-queue permissions."""

    path = "/users"
    tags = ["users"]
    opt = {"rate_limit": "admin"}

    @get("/")
    async def list_users(self, request: Request[Any, Any, Any]) -> list[UserView]:
        """Every user."""
        _admin(request)
        return [UserView.of(user) for user in ctx_of(request).accounts.all()]

    @post("/", status_code=HTTP_201_CREATED)
    async def create_user(
        self, request: Request[Any, Any, Any], data: JSONBody[CreateUserRequest]
    ) -> UserView:
        """Create a user; 409 if the name is taken."""
        _admin(request)
        user = await ctx_of(request).accounts.create(data)
        if user is None:
            raise ApiError(409, "user_exists", f"user {data.username!r} already exists")
        return UserView.of(user)

    @get("/{username:str}")
    async def get_user(self, request: Request[Any, Any, Any], username: Username) -> UserView:
        """One user."""
        _admin(request)
        user = ctx_of(request).accounts.get(username)
        if user is None or user.scopes is not None:  # a service token's principal is no user
            raise ApiError(404, "user_not_found", f"user {username!r} does not exist")
        return UserView.of(user)

    @patch("/{username:str}")
    async def update_user(
        self, request: Request[Any, Any, Any], username: Username, data: JSONBody[UpdateUserRequest]
    ) -> UserView:
        """Change a user; a new password revokes its tokens."""
        _admin(request)
        user = await ctx_of(request).accounts.update(username, data)
        if user is None:
            raise ApiError(404, "user_not_found", f"user {username!r} does not exist")
        return UserView.of(user)

    @delete("/{username:str}", status_code=HTTP_204_NO_CONTENT)
    async def delete_user(self, request: Request[Any, Any, Any], username: Username) -> None:
        """Delete a user and revoke its tokens (not yourself)."""
        admin = _admin(request)
        if username == admin.username:
            raise ApiError(409, "conflict", "an admin cannot delete itself")
        if not await ctx_of(request).accounts.delete(username):
            raise ApiError(404, "user_not_found", f"user {username!r} does not exist")
