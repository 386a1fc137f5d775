"""REST routes of authentication: token (and its ``/login`` alias), refresh, logout, me."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT

from broker_core.auth import InvalidToken, TokenPair
from transports.accounts import LoginRequest, RefreshRequest, UserView

from ..context import ctx_of
from ..decoding import check_json
from ..errors import ApiError
from ..security import client_ip, user_of

__all__ = ["login", "logout", "me", "refresh", "token"]

_login_decoder = msgspec.json.Decoder(LoginRequest)


async def _credentials(request: Request[Any, Any, Any]) -> LoginRequest:
    """Read JSON ``{username, password}`` or an OAuth2 password form."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            return msgspec.convert(
                {"username": form.get("username"), "password": form.get("password")}, LoginRequest
            )
        body = await request.body()
        check_json(body, ctx_of(request).settings.max_json_depth)
        return _login_decoder.decode(body)
    except msgspec.ValidationError:
        raise  # 422, `unknown_field` when it names one (`transports.errors.classify`)
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed", f"body is not valid JSON: {exc}") from None


async def _login(request: Request[Any, Any, Any]) -> TokenPair:
    ctx = ctx_of(request)
    credentials = await _credentials(request)
    address = client_ip(request)
    refused = ctx.limits.logins.begin(address, credentials.username, time.monotonic())
    if refused is not None:
        wait, reason = refused
        raise TooManyRequestsException(reason, headers={"Retry-After": str(wait)})
    pair = await ctx.accounts.login(credentials.username, credentials.password)
    if pair is None:
        raise NotAuthorizedException("wrong username or password")
    ctx.limits.logins.succeeded(address, credentials.username)
    return pair


@post("/auth/token", status_code=HTTP_200_OK, tags=["auth"], exclude_from_auth=True)
async def token(request: Request[Any, Any, Any]) -> TokenPair:
    """Log in with ``{username, password}`` (JSON) or an OAuth2 password form."""
    return await _login(request)


@post("/login", status_code=HTTP_200_OK, tags=["auth"], exclude_from_auth=True)
async def login(request: Request[Any, Any, Any]) -> TokenPair:
    """Alias of ``POST /auth/token``."""
    return await _login(request)


@post("/auth/refresh", status_code=HTTP_200_OK, tags=["auth"], exclude_from_auth=True)
async def refresh(request: Request[Any, Any, Any], data: JSONBody[RefreshRequest]) -> TokenPair:
    """Rotate a refresh token: a new pair; the old token is revoked, reusing it revokes all."""
    try:
        return await ctx_of(request).accounts.refresh(data.refresh_token)
    except InvalidToken as exc:
        raise NotAuthorizedException(exc.reason) from None


@post("/auth/logout", status_code=HTTP_204_NO_CONTENT, tags=["auth"])
async def logout(request: Request[Any, Any, Any], data: JSONBody[RefreshRequest]) -> None:
    """Revoke a refresh token and its family."""
    try:
        await ctx_of(request).accounts.logout(data.refresh_token)
    except InvalidToken as exc:
        raise NotAuthorizedException(exc.reason) from None


@get("/auth/me", tags=["auth"])
async def me(request: Request[Any, Any, Any]) -> UserView:
    """The caller's account: name, admin flag and per-queue permissions (never the hash).

    Clients such as the dashboard read it to show only what the caller may
    do; the routes still check every permission themselves.
    """
    return UserView.of(user_of(request))
