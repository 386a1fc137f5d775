"""`Accounts`: users, logins and the rotation of refresh tokens, over the storage.

Users are cached in memory (the broker is their only writer on SQLite; on
shared storage every node is told of each change and reads the user again)
so that authenticating a request costs one JWT verification and one dict
look-up. Refresh tokens rotate: each use revokes the old token, and using a
revoked one revokes its whole family (the token was stolen or replayed).

Rights are checked continuously (DESIGN.md, "Trust"): whatever holds rights
beyond one request (a WebSocket session, a GraphQL connection) `follow` s its
user and is called, synchronously, whenever the cached user changes here or
on another node, so that it can end what the user may no longer hold.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, TypeAlias

import msgspec
from loguru import logger

from broker_core.auth import (
    Claims,
    InvalidToken,
    Permission,
    TokenPair,
    TokenService,
    TokenType,
    User,
    revocation_reason,
)
from broker_core.passwords import DUMMY_HASH, hash_password, verify_password
from broker_core.service_tokens import (
    PRINCIPAL_PREFIX,
    CreateServiceTokenRequest,
    ServiceToken,
    issue,
    matches,
    parse_token,
    principal,
    principal_claims,
    token_id_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from broker_core.journal import Change, SharedStorage
    from storage import AccountStore

__all__ = [
    "Accounts",
    "CreateUserRequest",
    "LoginRequest",
    "RefreshRequest",
    "UpdateUserRequest",
    "UserFollower",
    "UserView",
]

Username = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._@-]{1,64}$")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]

_VERIFIED_CACHE_SIZE = 10_000
_EXPIRY_LEEWAY_S = 5.0
"""The token service accepts tokens 5 s past ``exp``; the cache does the same."""

UserFollower: TypeAlias = "Callable[[User | None], None]"
"""Called with a followed user as it is after a change (``None``: deleted)."""

_user_encoder = msgspec.json.Encoder()
_user_decoder = msgspec.json.Decoder(User)
_token_decoder = msgspec.json.Decoder(ServiceToken)


class LoginRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """JSON body of ``POST /auth/token``."""

    username: Annotated[str, msgspec.Meta(max_length=64)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]


class RefreshRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /auth/refresh`` and ``POST /auth/logout``."""

    refresh_token: Annotated[str, msgspec.Meta(max_length=4096)]


class CreateUserRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``POST /users``."""

    username: Username
    password: Password
    admin: bool = False
    permissions: list[Permission] = msgspec.field(default_factory=list)


class UpdateUserRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Body of ``PATCH /users/{username}``: the fields to change."""

    password: Password | None = None
    admin: bool | None = None
    permissions: list[Permission] | None = None
    disabled: bool | None = None


class UserView(msgspec.Struct, kw_only=True, frozen=True):
    """A user as the API shows it (never the hash)."""

    username: str
    admin: bool
    permissions: list[Permission]
    created_at: datetime
    disabled: bool = False

    @classmethod
    def of(cls, user: User) -> UserView:
        """The public view of ``user``."""
        return cls(
            username=user.username,
            admin=user.admin,
            permissions=list(user.permissions),
            created_at=user.created_at,
            disabled=user.disabled,
        )


class Accounts:
    """Users and tokens of one broker.

    Args:
        storage: where users and refresh tokens are kept.
        tokens: issues and verifies JWTs.
        changes: on shared storage, the storage that tells other nodes' changes.
    """

    def __init__(
        self, storage: AccountStore, tokens: TokenService, changes: SharedStorage | None = None
    ) -> None:
        self._storage = storage
        self._changes = changes
        self.tokens = tokens
        self._users: dict[str, User] = {}
        self._verified: dict[str, Claims] = {}
        self._reloads: set[asyncio.Task[None]] = set()
        self._followers: dict[str, set[UserFollower]] = {}
        self._principals: dict[str, tuple[ServiceToken, User]] = {}
        """Service tokens by their principal's name (``token:<id>``), with the principal."""

    async def load(self) -> None:
        """Read users and service tokens into the cache (at start); on shared storage, follow."""
        if self._changes is not None:
            self._changes.watch(self._on_change)
        self._replace_all(await self._storage.list_users())
        self._replace_tokens(await self._storage.list_service_tokens())

    def _on_change(self, change: Change) -> None:
        # Another node (or this one) changed a user: read it again, so that a
        # token revoked on any node is refused here too.
        if change.kind == "user":
            task = asyncio.get_running_loop().create_task(self._reload(change.name))
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)
        elif change.kind == "reconnected":
            task = asyncio.get_running_loop().create_task(self._reload_all())
            self._reloads.add(task)
            task.add_done_callback(self._reloads.discard)

    async def _reload(self, username: str) -> None:
        id = token_id_of(username)
        if id is not None:
            await self._reload_token(id)
            return
        try:
            document = await self._storage.get_user(username)
        except Exception as exc:
            logger.opt(exception=exc).warning("reading a changed user failed", username=username)
            return
        self._set(username, None if document is None else _user_decoder.decode(document))

    async def _reload_all(self) -> None:
        try:
            documents = await self._storage.list_users()
            tokens = await self._storage.list_service_tokens()
        except Exception as exc:
            logger.opt(exception=exc).warning("reading users failed")
            return
        self._replace_all(documents)
        self._replace_tokens(tokens)

    async def _reload_token(self, id: str) -> None:
        try:
            document = await self._storage.get_service_token(id)
        except Exception as exc:
            logger.opt(exception=exc).warning("reading a changed service token failed", id=id)
            return
        self._set_token(PRINCIPAL_PREFIX + id, _decode_token(document))

    def _replace_tokens(self, documents: list[bytes]) -> None:
        tokens = {PRINCIPAL_PREFIX + t.id: t for t in map(_token_decoder.decode, documents)}
        for name in self._principals.keys() - tokens.keys():
            self._set_token(name, None)
        for name, token in tokens.items():
            self._set_token(name, token)

    def _set_token(self, name: str, token: ServiceToken | None) -> None:
        """Cache ``token`` (``None``: revoked) and tell its principal's followers if it changed."""
        old = self._principals.get(name)
        if token is None:
            if old is not None:
                del self._principals[name]
                self._tell(name, None)
        elif old is None or old[0] != token:
            user = principal(token)
            self._principals[name] = (token, user)
            self._tell(name, user)

    def _replace_all(self, documents: list[bytes]) -> None:
        users = {user.username: user for user in (_user_decoder.decode(doc) for doc in documents)}
        old, self._users = self._users, users
        for username in old.keys() | users.keys():
            if old.get(username) != users.get(username):
                self._tell(username, users.get(username))

    def _set(self, username: str, user: User | None) -> None:
        """Put ``user`` in the cache (``None``: forget it) and tell its followers if it changed."""
        old = self._users.pop(username, None) if user is None else self._users.get(username)
        if user is not None:
            self._users[username] = user
        if old != user:
            self._tell(username, user)

    def _tell(self, username: str, user: User | None) -> None:
        for follower in list(self._followers.get(username, ())):
            try:
                follower(user)
            except Exception as exc:
                # One broken follower must not keep the others from hearing of a revocation.
                logger.opt(exception=exc).error("user change follower failed", username=username)

    # -- followers ----------------------------------------------------------------

    def follow(self, username: str, follower: UserFollower) -> None:
        """Call ``follower`` with the user each time it changes, until `unfollow`.

        It is called synchronously, right after the cache changed (on this node
        by a request, or on another one once the change is read), so it must
        not block: it ends subscriptions or closes connections, and awaits
        nothing.
        """
        self._followers.setdefault(username, set()).add(follower)

    def unfollow(self, username: str, follower: UserFollower) -> None:
        """Stop calling ``follower`` (nothing happens if it wasn't following)."""
        followers = self._followers.get(username)
        if followers is not None:
            followers.discard(follower)
            if not followers:
                del self._followers[username]

    async def bootstrap_admin(self, username: str, password: str | None) -> str | None:
        """Create the first admin if there is no user yet.

        Returns the generated password when one had to be made (to print once),
        else ``None``. With ``password`` set and the admin existing, the stored
        password is replaced when it differs (the environment wins).
        """
        from .secrets import generate_password

        existing = self._users.get(username)
        if existing is not None:
            if password is not None and not verify_password(password, existing.password_hash):
                await self._put(
                    msgspec.structs.replace(
                        existing,
                        password_hash=hash_password(password),
                        tokens_valid_after=time.time(),
                    )
                )
            return None
        if self._users and password is None:
            return None
        generated = None
        if password is None:
            password = generated = generate_password()
        await self._put(
            User(
                username=username,
                password_hash=hash_password(password),
                created_at=datetime.now(UTC),
                admin=True,
                # Made again after it was deleted: the old admin's tokens must not
                # speak for this one (at the very first start there are none).
                tokens_valid_after=time.time() if self._users else 0.0,
            )
        )
        logger.info("admin user created", username=username)
        return generated

    # -- users --------------------------------------------------------------------

    def get(self, username: str) -> User | None:
        """A user by name, or a service token's principal (``token:<id>``), from the cache."""
        user = self._users.get(username)
        if user is None and username in self._principals:
            return self._principals[username][1]
        return user

    def all(self) -> list[User]:
        """Every user, by name."""
        return [self._users[name] for name in sorted(self._users)]

    async def _put(self, user: User) -> None:
        await self._storage.put_user(user.username, _user_encoder.encode(user))
        self._set(user.username, user)

    async def create(self, request: CreateUserRequest) -> User | None:
        """Create a user; ``None`` if the name is taken."""
        if request.username in self._users:
            return None
        user = User(
            username=request.username,
            password_hash=await asyncio.to_thread(hash_password, request.password),
            created_at=datetime.now(UTC),
            admin=request.admin,
            permissions=tuple(request.permissions),
            # Tokens of a deleted user of the same name must not speak for this one.
            tokens_valid_after=time.time(),
        )
        await self._put(user)
        return user

    async def update(self, username: str, request: UpdateUserRequest) -> User | None:
        """Change a user; a new password or disabling revokes its tokens. ``None`` if unknown."""
        user = self._users.get(username)
        if user is None:
            return None
        changes: dict[str, object] = {}
        if request.admin is not None:
            changes["admin"] = request.admin
        if request.permissions is not None:
            changes["permissions"] = tuple(request.permissions)
        if request.disabled is not None:
            changes["disabled"] = request.disabled
        if request.password is not None or request.disabled:
            if request.password is not None:
                changes["password_hash"] = await asyncio.to_thread(hash_password, request.password)
            changes["tokens_valid_after"] = time.time()
            await self._storage.revoke_user_tokens(username)
        user = msgspec.structs.replace(user, **changes)
        await self._put(user)
        return user

    async def delete(self, username: str) -> bool:
        """Delete a user and revoke its tokens; return whether it existed."""
        if username not in self._users:
            return False
        self._set(username, None)
        await self._storage.delete_user(username)
        return True

    # -- tokens -------------------------------------------------------------------

    async def login(self, username: str, password: str) -> TokenPair | None:
        """Check a password and issue a token pair; ``None`` when they don't match.

        An unknown user costs the same hash as a known one, so timing doesn't
        tell which usernames exist.
        """
        user = self._users.get(username)  # never a service token's principal
        encoded = DUMMY_HASH if user is None else user.password_hash
        # scrypt costs ~50 ms of CPU: keep it off the event loop.
        matches = await asyncio.to_thread(verify_password, password, encoded)
        if user is None or not matches or user.disabled:
            return None
        return await self._issue(username, None)

    async def _issue(self, username: str, family: str | None) -> TokenPair:
        issued = self.tokens.issue_pair(username, family)
        record = issued.refresh
        await self._storage.put_refresh(
            record.jti, record.family, record.username, record.expires_at
        )
        return issued.pair

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate a refresh token: revoke it and issue a new pair in its family.

        Raises:
            InvalidToken: the token is invalid, expired, or was revoked (then
                its whole family is revoked too).
        """
        claims = self.tokens.verify(refresh_token, TokenType.REFRESH)
        self.current(claims)
        if not await self._storage.revoke_refresh(claims.jti):
            assert claims.fam is not None, "refresh tokens carry a family"
            await self._storage.revoke_family(claims.fam)
            logger.warning("refresh token reused, family revoked", username=claims.sub)
            raise InvalidToken("refresh token was already used; its session is revoked")
        return await self._issue(claims.sub, claims.fam)

    async def logout(self, refresh_token: str) -> None:
        """Revoke a refresh token's family (the session ends on every device it reached)."""
        claims = self.tokens.verify(refresh_token, TokenType.REFRESH)
        assert claims.fam is not None, "refresh tokens carry a family"
        await self._storage.revoke_family(claims.fam)

    def authenticate(self, access_token: str) -> User:
        """The user an access token (or a service token) speaks for.

        Raises:
            InvalidToken: the token is invalid, expired, of the wrong type, or
                its user is gone, disabled or changed password since.
        """
        if parse_token(access_token) is not None:
            return self._service(access_token)[1]
        claims = self._verified.get(access_token)
        if claims is None or claims.exp + _EXPIRY_LEEWAY_S <= time.time():
            claims = self.tokens.verify(access_token, TokenType.ACCESS)
            self._remember(access_token, claims)
        return self.current(claims)

    def verify(self, access_token: str) -> tuple[User, Claims]:
        """The user and the claims of an access token or a service token (for sessions).

        A service token's claims stand for a JWT's: its principal as ``sub``,
        its expiry (or a century) as ``exp``, so sessions follow and expire it
        the same way.

        Raises:
            InvalidToken: as `authenticate`.
        """
        if parse_token(access_token) is not None:
            record, user = self._service(access_token)
            return user, principal_claims(record)
        claims = self.tokens.verify(access_token, TokenType.ACCESS)
        return self.authenticate(access_token), claims

    def _service(self, token: str) -> tuple[ServiceToken, User]:
        id = parse_token(token)
        found = None if id is None else self._principals.get(PRINCIPAL_PREFIX + id)
        if found is None or not matches(found[0], token):
            raise InvalidToken("token is invalid or revoked")
        expires = found[0].expires_at
        if expires is not None and expires.timestamp() <= time.time():
            raise InvalidToken("token has expired")
        return found

    # -- service tokens -----------------------------------------------------------

    def service_tokens(self) -> list[ServiceToken]:
        """Every service token, oldest first."""
        return sorted((t for t, _ in self._principals.values()), key=lambda t: t.created_at)

    def service_token(self, id: str) -> ServiceToken | None:
        """A service token by id, or ``None``."""
        found = self._principals.get(PRINCIPAL_PREFIX + id)
        return None if found is None else found[0]

    async def create_service_token(
        self, request: CreateServiceTokenRequest, created_by: str
    ) -> tuple[ServiceToken, str]:
        """Make and store a service token; the record and the token, to show once."""
        record, token = issue(request, created_by)
        await self._storage.put_service_token(record.id, _user_encoder.encode(record))
        self._set_token(PRINCIPAL_PREFIX + record.id, record)
        logger.info("service token created", id=record.id, name=record.name, by=created_by)
        return record, token

    async def revoke_service_token(self, id: str) -> bool:
        """Revoke a service token at once (its sessions end); return whether it existed."""
        name = PRINCIPAL_PREFIX + id
        if name not in self._principals:
            return False
        # Forgotten before the write: no request may pass with it once revoking began.
        self._set_token(name, None)
        await self._storage.delete_service_token(id)
        logger.info("service token revoked", id=id)
        return True

    def current(self, claims: Claims) -> User:
        """The user a verified token speaks for, as it is now (one dict look-up).

        Raises:
            InvalidToken: with code ``token_revoked``: the user is gone, disabled
                or changed its password since the token was issued.
        """
        user = self._users.get(claims.sub)
        if user is None and claims.sub in self._principals:
            user = self._principals[claims.sub][1]
        reason = revocation_reason(user, claims)
        if reason is not None:
            raise InvalidToken(f"token revoked: {reason}", code="token_revoked")
        assert user is not None, "a current token has its user"
        return user

    def _remember(self, token: str, claims: Claims) -> None:
        # A client sends the same access token with every request: verifying
        # its signature once per token, not per request, is most of the cost
        # of authentication. Only a byte-identical token hits this cache.
        verified = self._verified
        if len(verified) >= _VERIFIED_CACHE_SIZE:
            now = time.time()
            for key in [k for k, c in verified.items() if c.exp <= now]:
                del verified[key]
            while len(verified) >= _VERIFIED_CACHE_SIZE:
                del verified[next(iter(verified))]
        verified[token] = claims


def _decode_token(document: bytes | None) -> ServiceToken | None:
    return None if document is None else _token_decoder.decode(document)
