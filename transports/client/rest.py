"""`RestClient`: the broker's REST API over httpx, with tokens that log in and refresh themselves.

Tokens: give a username and password (the client logs in when it first
needs a token and again if its refresh token is refused), or tokens from an
earlier login (``access_token``/``refresh_token``; the CLI keeps them in a
file). An access token is refreshed shortly before it expires; every new
pair is passed to ``on_tokens`` so it can be stored: refresh tokens rotate,
and reusing an old one revokes the session.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import ssl
import time
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from broker_core.auth import TokenPair
from broker_core.messages import MessageView, QueueInfo, SettleResult
from broker_core.service_tokens import CreatedServiceToken, ServiceTokenView
from broker_core.webhooks import WebhookView

from .errors import AuthError, RequestError
from .messages import Message
from .schedules import ScheduleMethods
from .topics import TopicMethods

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

__all__ = ["DEFAULT_URL", "RestClient", "ssl_context"]

DEFAULT_URL = "https://127.0.0.1:8777"
"""Where ``broker serve`` listens by default (HTTPS with a self-signed certificate)."""

_REFRESH_MARGIN_S = 30.0
"""Refresh an access token this long before it expires (or a third of its life if shorter)."""


class _Consumed(msgspec.Struct):
    messages: list[MessageView]


class _Claims(msgspec.Struct):
    exp: float = 0.0
    iat: float = 0.0


_claims_decoder = msgspec.json.Decoder(_Claims)
_pair_decoder = msgspec.json.Decoder(TokenPair)
_queue_decoder = msgspec.json.Decoder(QueueInfo)
_queues_decoder = msgspec.json.Decoder(list[QueueInfo])
_consumed_decoder = msgspec.json.Decoder(_Consumed)
_settle_decoder = msgspec.json.Decoder(SettleResult)
_any_decoder = msgspec.json.Decoder()
_created_token_decoder = msgspec.json.Decoder(CreatedServiceToken)
_token_views_decoder = msgspec.json.Decoder(list[ServiceTokenView])
_webhook_decoder = msgspec.json.Decoder(WebhookView)
_webhooks_decoder = msgspec.json.Decoder(list[WebhookView])


@functools.cache
def ssl_context(insecure: bool) -> ssl.SSLContext:
    """A client TLS context; ``insecure`` accepts any certificate (the broker's self-signed one).

    Built once per flag and shared: loading the CA store costs about 30 ms and
    1 MB, which a process holding a thousand clients must not pay per client.
    """
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _claims(token: str) -> _Claims:
    """The ``exp`` and ``iat`` of a JWT, read without verifying it (the server does)."""
    try:
        payload = token.split(".")[1]
        return _claims_decoder.decode(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error, msgspec.DecodeError):
        return _Claims()


def _error(response: httpx.Response) -> RequestError:
    """The `RequestError` (or `AuthError`) of an error response."""
    code, detail = f"http_{response.status_code}", response.reason_phrase
    try:
        body = _any_decoder.decode(response.content)
    except msgspec.DecodeError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or code)
        detail = str(body.get("detail") or detail)
    kind = AuthError if response.status_code == 401 else RequestError
    return kind(code, detail, response.status_code)


class RestClient(TopicMethods, ScheduleMethods):
    """The broker's REST API; use it as an async context manager or call `close`.

    Args:
        url: the broker's base URL (``https://127.0.0.1:8777`` by default).
        username: with ``password``, log in when a token is needed.
        password: the user's password.
        access_token: a token from an earlier login.
        refresh_token: the refresh token of that login.
        insecure: accept any TLS certificate (the broker's self-signed one).
        tls: the TLS context to use instead (a pinned certificate, a private CA);
            ``insecure`` is then ignored.
        timeout: seconds allowed for each HTTP request.
        on_tokens: called with every new token pair (to store it).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        username: str | None = None,
        password: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        insecure: bool = False,
        tls: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        on_tokens: Callable[[TokenPair], None] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.insecure = insecure
        self.tls = tls or ssl_context(insecure)
        self._username = username
        self._password = password
        self._access = access_token
        self._refresh = refresh_token
        self._expires_at = _claims(access_token).exp if access_token else 0.0
        self._lifetime = 0.0
        if access_token:
            claims = _claims(access_token)
            self._lifetime = max(0.0, claims.exp - claims.iat)
        self._on_tokens = on_tokens
        self._token_lock = asyncio.Lock()
        self._http = httpx.AsyncClient(
            base_url=self.url,
            # httpx builds a context even for plain HTTP unless given one: share ours.
            verify=self.tls,
            timeout=timeout,
        )

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()

    # -- tokens ---------------------------------------------------------------------

    @property
    def tokens(self) -> TokenPair | None:
        """The current token pair, if the client holds one."""
        if self._access is None:
            return None
        return TokenPair(
            access_token=self._access,
            refresh_token=self._refresh or "",
            expires_in=max(0, int(self._expires_at - time.time())),
        )

    def _take(self, pair: TokenPair) -> TokenPair:
        self._access, self._refresh = pair.access_token, pair.refresh_token
        claims = _claims(pair.access_token)
        self._expires_at = claims.exp or time.time() + pair.expires_in
        self._lifetime = float(pair.expires_in)
        if self._on_tokens is not None:
            self._on_tokens(pair)
        return pair

    async def login(self, username: str | None = None, password: str | None = None) -> TokenPair:
        """Log in (``POST /auth/token``) and keep the tokens.

        Raises:
            AuthError: wrong username or password, or no credentials to log in with.
        """
        username = username or self._username
        password = password if password is not None else self._password
        if username is None or password is None:
            raise AuthError("unauthorized", "no token and no username and password to log in")
        response = await self._http.post(
            "/auth/token", json={"username": username, "password": password}
        )
        if response.status_code != 200:
            raise _error(response)
        self._username, self._password = username, password
        return self._take(_pair_decoder.decode(response.content))

    async def refresh(self) -> TokenPair:
        """Rotate the refresh token (``POST /auth/refresh``) for a new pair.

        Falls back to logging in again when the refresh token is refused and a
        password is known.

        Raises:
            AuthError: the refresh token was refused and no password is known.
        """
        async with self._token_lock:
            return await self._renew()

    async def _renew(self) -> TokenPair:
        if self._refresh:
            response = await self._http.post("/auth/refresh", json={"refresh_token": self._refresh})
            if response.status_code == 200:
                return self._take(_pair_decoder.decode(response.content))
            error = _error(response)
            if response.status_code != 401 or self._password is None:
                raise error
        return await self.login()

    def _refresh_due(self) -> float:
        """Unix time at which the access token should be refreshed."""
        margin = min(_REFRESH_MARGIN_S, self._lifetime / 3) if self._lifetime else 0.0
        return self._expires_at - margin

    def can_renew(self) -> bool:
        """Whether the client can get a new access token by itself."""
        return bool(self._refresh) or (self._username is not None and self._password is not None)

    async def access_token(self) -> str:
        """A valid access token: logs in or refreshes first when needed.

        Raises:
            AuthError: there is no way to get a token.
        """
        if self._access is not None and (not self.can_renew() or time.time() < self._refresh_due()):
            return self._access
        async with self._token_lock:
            if self._access is None:
                await self.login()
            elif time.time() >= self._refresh_due():
                await self._renew()
            assert self._access is not None, "a login or refresh sets the token"
            return self._access

    # -- requests -------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send an authenticated request; on 401 refresh the token once and retry.

        Raises:
            RequestError: the broker answered with an error (`AuthError` for 401).
        """
        token = await self.access_token()
        response = await self._http.request(
            method, path, json=json, params=params, headers={"Authorization": f"Bearer {token}"}
        )
        if response.status_code == 401 and self.can_renew():
            async with self._token_lock:
                if self._access == token:
                    await self._renew()
            token = await self.access_token()
            response = await self._http.request(
                method, path, json=json, params=params, headers={"Authorization": f"Bearer {token}"}
            )
        if response.status_code >= 400:
            raise _error(response)
        return response

    async def queues(self) -> list[QueueInfo]:
        """Every queue the user may see (``GET /queues``)."""
        return _queues_decoder.decode((await self.request("GET", "/queues")).content)

    async def queue(self, name: str) -> QueueInfo:
        """One queue's counts and options (``GET /queues/{name}``)."""
        return _queue_decoder.decode((await self.request("GET", f"/queues/{name}")).content)

    async def create_queue(self, name: str, **options: Any) -> QueueInfo:
        """Create a queue (``POST /queues``) with options such as ``max_attempts`` or ``lease``."""
        response = await self.request("POST", "/queues", json={"name": name, **options})
        return _queue_decoder.decode(response.content)

    async def delete_queue(self, name: str) -> None:
        """Delete a queue and its messages."""
        await self.request("DELETE", f"/queues/{name}")

    async def consume(
        self, queue: str, *, max: int = 1, wait: float = 0.0, lease: float | None = None
    ) -> list[Message]:
        """Lease up to ``max`` messages over REST, long-polling up to ``wait`` seconds.

        Settle each with `Message.ack` / `Message.nack` (sent over REST) before
        its lease (``lease`` seconds, else the queue's) ends.
        """
        params: dict[str, Any] = {"max": max, "wait": wait}
        if lease is not None:
            params["lease"] = lease
        response = await self.request("GET", f"/queues/{queue}/messages/consume", params=params)
        if response.status_code == 204:
            return []
        return [
            Message(
                queue=view.queue,
                message_id=view.message_id,
                raw=bytes(view.content),
                headers=view.headers,
                attempt=view.attempt,
                redelivered=view.redelivered,
                settler=self,
            )
            for view in _consumed_decoder.decode(response.content).messages
        ]

    async def ack_ids(self, ids: Sequence[int]) -> SettleResult:
        """Ack leased messages by id over REST (``POST /messages/ack``)."""
        response = await self.request("POST", "/messages/ack", json={"ids": list(ids)})
        return _settle_decoder.decode(response.content)

    async def nack_ids(
        self,
        ids: Sequence[int],
        *,
        requeue: bool = True,
        reason: str | None = None,
        delay_ms: int | None = None,
    ) -> SettleResult:
        """Nack leased messages by id over REST (``POST /messages/nack``).

        A requeue waits ``delay_ms`` if given, else the queue's ``retry`` back-off.
        """
        body: dict[str, Any] = {"ids": list(ids), "requeue": requeue}
        if reason is not None:
            body["reason"] = reason
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        response = await self.request("POST", "/messages/nack", json=body)
        return _settle_decoder.decode(response.content)

    # -- retries: pause, cancel, reschedule ---------------------------------------------

    async def pause_queue(self, name: str, until: datetime | None = None) -> QueueInfo:
        """Hold a queue's deliveries (``POST /queues/{name}/pause``), until ``until`` if given."""
        body = {"until": until.isoformat()} if until is not None else None
        response = await self.request("POST", f"/queues/{name}/pause", json=body)
        return _queue_decoder.decode(response.content)

    async def resume_queue(self, name: str) -> QueueInfo:
        """Deliver again from a paused queue (``POST /queues/{name}/resume``)."""
        response = await self.request("POST", f"/queues/{name}/resume")
        return _queue_decoder.decode(response.content)

    async def cancel_message(self, queue: str, message_id: int) -> None:
        """Cancel a pending, delayed or backing-off message (409 if it is processing)."""
        await self.request("DELETE", f"/queues/{queue}/messages/{message_id}")

    async def reschedule_message(
        self,
        queue: str,
        message_id: int,
        *,
        delay_ms: int | None = None,
        deliver_at: datetime | None = None,
        priority: int | None = None,
    ) -> dict[str, Any]:
        """Reschedule a pending message: due after ``delay_ms`` or at ``deliver_at``, ``priority``.

        Returns the message view (``waiting`` says ``delayed`` while it waits).
        """
        body: dict[str, Any] = {}
        if delay_ms is not None:
            body["delay_ms"] = delay_ms
        if deliver_at is not None:
            body["deliver_at"] = deliver_at.isoformat()
        if priority is not None:
            body["priority"] = priority
        response = await self.request("PATCH", f"/queues/{queue}/messages/{message_id}", json=body)
        view: dict[str, Any] = _any_decoder.decode(response.content)
        return view

    # -- webhooks ---------------------------------------------------------------------

    async def create_webhook(
        self,
        queue: str,
        url: str,
        *,
        secret: str | None = None,
        concurrency: int = 1,
        timeout_ms: int = 10_000,
        headers: dict[str, str] | None = None,
    ) -> WebhookView:
        """Push ``queue``'s messages to ``url``; the answer's ``secret`` is shown this once."""
        body: dict[str, Any] = {"url": url, "concurrency": concurrency, "timeout_ms": timeout_ms}
        if secret is not None:
            body["secret"] = secret
        if headers is not None:
            body["headers"] = headers
        response = await self.request("POST", f"/queues/{queue}/webhooks", json=body)
        return _webhook_decoder.decode(response.content)

    async def list_webhooks(self, queue: str) -> list[WebhookView]:
        """The queue's webhooks: state, counters, last error, recent attempts (no secrets)."""
        response = await self.request("GET", f"/queues/{queue}/webhooks")
        return _webhooks_decoder.decode(response.content)

    async def pause_webhook(self, queue: str, id: str, paused: bool = True) -> WebhookView:
        """Pause a webhook, or resume it with ``paused=False`` (also after a 410)."""
        response = await self.request(
            "PATCH", f"/queues/{queue}/webhooks/{id}", json={"paused": paused}
        )
        return _webhook_decoder.decode(response.content)

    async def delete_webhook(self, queue: str, id: str) -> None:
        """Delete a webhook."""
        await self.request("DELETE", f"/queues/{queue}/webhooks/{id}")

    async def stats(self) -> dict[str, Any]:
        """The broker's ``GET /stats`` document."""
        stats: dict[str, Any] = _any_decoder.decode((await self.request("GET", "/stats")).content)
        return stats

    # -- service tokens (admins) ----------------------------------------------------

    async def create_service_token(
        self, name: str, scopes: Sequence[str], *, expires_at: datetime | None = None
    ) -> CreatedServiceToken:
        """Create a service token (``POST /tokens``); its ``token`` is shown this once.

        ``scopes``: ``metrics:read``, ``stats:read``, ``publish:<pattern>``,
        ``consume:<pattern>``, ``manage:<pattern>``. Pass the token as
        ``access_token`` to a client that should speak for the machine.
        """
        body: dict[str, Any] = {"name": name, "scopes": list(scopes)}
        if expires_at is not None:
            body["expires_at"] = expires_at.isoformat()
        response = await self.request("POST", "/tokens", json=body)
        return _created_token_decoder.decode(response.content)

    async def service_tokens(self) -> list[ServiceTokenView]:
        """Every service token, without its secret (``GET /tokens``)."""
        return _token_views_decoder.decode((await self.request("GET", "/tokens")).content)

    async def revoke_service_token(self, id: str) -> None:
        """Revoke a service token at once (``DELETE /tokens/{id}``)."""
        await self.request("DELETE", f"/tokens/{id}")

    # -- settling REST deliveries (the `Message` settler) ---------------------------

    async def settle(
        self,
        message: Message,
        ack: bool,
        requeue: bool = True,
        reason: str | None = None,
        delay_ms: int | None = None,
    ) -> None:
        """Settle a message leased over REST."""
        if ack:
            result = await self.ack_ids([message.message_id])
        else:
            result = await self.nack_ids(
                [message.message_id], requeue=requeue, reason=reason, delay_ms=delay_ms
            )
        if message.message_id not in result.settled:
            detail = result.errors.get(str(message.message_id), "not settled")
            raise RequestError("invalid_transition", detail, 409)

    async def ack_with_result(self, message: Message, result: Any) -> None:
        """Ack a message by id over REST, keeping ``result`` (``POST /messages/{id}/ack``)."""
        await self.request("POST", f"/messages/{message.message_id}/ack", json={"result": result})

    async def publish_and_wait(
        self, queue: str, content: Any, wait_result: float, **fields: Any
    ) -> dict[str, Any]:
        """Publish over REST and wait up to ``wait_result`` s (at most 30) for its result.

        Returns the broker's answer: with ``result`` and ``status`` (``processed``
        or ``failed``) when it came in time, else ``status: "pending"`` and the id.
        """
        response = await self.request(
            "POST",
            f"/queues/{queue}/messages",
            json={"content": content, **fields},
            params={"wait_result": wait_result},
        )
        answer: dict[str, Any] = response.json()
        return answer
