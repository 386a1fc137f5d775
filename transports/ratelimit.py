"""Token-bucket rate limiting, keyed by client (IP, user or token).

One :class:`TokenBucketLimiter` per route class (auth, publish, consume,
admin, default). A bucket holds up to ``burst`` tokens and refills at
``rate_per_s``; a request spends ``cost`` tokens or is refused with the time
until it could pass, which becomes the ``Retry-After`` of a 429 (RFC 6585
section 4). Logins go through a :class:`LoginLimiter`: per-minute buckets of
attempts and of failures, per client address and per username.

The limiter is plain synchronous code with ``now`` passed in (monotonic
seconds), used from one event loop: no locks, no clock reads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from broker_core.settings import Settings

__all__ = ["LoginLimiter", "TokenBucketLimiter"]


class TokenBucketLimiter:
    """Per-key token buckets in one dict, bounded to ``max_keys`` entries.

    A key not seen for ``burst / rate_per_s`` seconds has a full bucket, the
    same as a key never seen; such keys are what eviction drops first, so
    eviction only changes behaviour under a flood of distinct keys.

    Args:
        rate_per_s: Tokens added per second; 0 disables the limit.
        burst: Bucket size: requests allowed at once after a quiet period.
        max_keys: Most keys remembered.

    Raises:
        ValueError: A negative rate, a burst below 1 or ``max_keys`` below 1.
    """

    def __init__(self, rate_per_s: float, burst: float, max_keys: int = 100_000) -> None:
        if rate_per_s < 0:
            raise ValueError(f"rate_per_s must be zero or more, got {rate_per_s}")
        if rate_per_s and burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> (tokens, last update). Insertion order is recency order:
        # every update re-inserts the key at the end.
        self._buckets: dict[str, tuple[float, float]] = {}

    @classmethod
    def per_minute(cls, count: float, max_keys: int = 100_000) -> TokenBucketLimiter:
        """A limiter allowing ``count`` hits per minute, all of them at once if saved up."""
        return cls(count / 60.0, count, max_keys)

    @property
    def enabled(self) -> bool:
        """False when the rate is 0 and every hit passes."""
        return self.rate_per_s > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return self.burst
        tokens, last = state
        # max(): a clock step backwards must not drain the bucket.
        return min(self.burst, tokens + max(0.0, now - last) * self.rate_per_s)

    def hit(self, key: str, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens from ``key``'s bucket if it has them.

        A cost above the burst is capped at the burst: such a request passes
        when the bucket is full and empties it.

        Args:
            key: Who is limited (``"ip:10.0.0.1"``, ``"user:alice"``).
            now: Monotonic time in seconds.
            cost: Tokens this request spends (e.g. messages in a batch).

        Returns:
            0.0 if the request may proceed, else the seconds until it could
            (round up for ``Retry-After``). A refused request spends nothing.
        """
        if not self.enabled:
            return 0.0
        cost = min(cost, self.burst)
        tokens = self._tokens(key, now)
        self._buckets.pop(key, None)
        if tokens >= cost:
            self._buckets[key] = (tokens - cost, now)
            if len(self._buckets) > self.max_keys:
                self._evict(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (cost - tokens) / self.rate_per_s

    def check(self, key: str, now: float, cost: float = 1.0) -> float:
        """Like :meth:`hit` but spends nothing: the wait before ``cost`` tokens are there."""
        if not self.enabled:
            return 0.0
        cost = min(cost, self.burst)
        tokens = self._tokens(key, now)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate_per_s

    def refund(self, key: str, cost: float = 1.0) -> None:
        """Give back ``cost`` tokens :meth:`hit` spent for something that did not happen."""
        state = self._buckets.get(key)
        if state is not None:
            tokens, last = state
            self._buckets[key] = (min(self.burst, tokens + cost), last)

    def reset(self, key: str) -> None:
        """Forget ``key``: its next request sees a full bucket."""
        self._buckets.pop(key, None)

    def _evict(self, now: float) -> None:
        """Drop full buckets, then the least recently used, down to 90% of ``max_keys``.

        Dropping a tenth at a time keeps the amortised cost per hit constant.
        """
        # Never below one: the key just spent must survive its own eviction.
        target = max(1, self.max_keys - max(1, self.max_keys // 10))
        full_after = self.burst / self.rate_per_s
        stale = [key for key, (_, last) in self._buckets.items() if now - last >= full_after]
        for key in stale:
            del self._buckets[key]
        excess = len(self._buckets) - target
        if excess > 0:
            for key in list(self._buckets)[:excess]:
                del self._buckets[key]


class LoginLimiter:
    """How often logins may be tried: per client address and per username, failures tighter.

    Every attempt, a successful one included, spends a token of its
    address's and its username's attempt buckets (each costs a password
    hash, tens of milliseconds of CPU); a failure also spends one of each
    failure bucket. A username's failure budget is below its address's, so
    that guessing one account's password locks that account (for everyone,
    the price of refusing guessers) well before the address, and the other
    users behind the same address (a NAT) log in until the address's own
    limit. Names that don't exist are limited the same, so a 429 tells
    nothing about which ones do.

    Call :meth:`begin` before checking the password and :meth:`succeeded`
    when it matched: the failure tokens are taken up front and given back,
    so concurrent attempts can't all pass a check before any failure counts.
    """

    def __init__(self, settings: Settings) -> None:
        per_minute = TokenBucketLimiter.per_minute
        self._buckets = (
            (per_minute(settings.rate_login_per_min), "too many login attempts from this address"),
            (per_minute(settings.rate_auth_per_min), "too many failed logins from this address"),
            (per_minute(settings.rate_login_user_per_min), "too many login attempts for this user"),
            (per_minute(settings.rate_auth_user_per_min), "too many failed logins for this user"),
        )

    def begin(self, address: str, username: str, now: float) -> tuple[int, str] | None:
        """Spend one attempt (and one failure, until :meth:`succeeded`) of both keys.

        Args:
            address: The client's IP address.
            username: The name the client logs in as.
            now: Monotonic time in seconds.

        Returns:
            None if the attempt may go on, else the seconds to wait (for
            ``Retry-After``) and why; a refused attempt spends nothing.
        """
        keys = (address, address, username, username)
        waits = [
            (limiter.check(key, now), reason)
            for (limiter, reason), key in zip(self._buckets, keys, strict=True)
        ]
        wait, reason = max(waits, key=lambda pair: pair[0])
        if wait > 0:
            return max(1, math.ceil(wait)), reason
        for (limiter, _), key in zip(self._buckets, keys, strict=True):
            limiter.hit(key, now)
        return None

    def succeeded(self, address: str, username: str) -> None:
        """The password matched: give back the failure tokens :meth:`begin` took."""
        self._buckets[1][0].refund(address)
        self._buckets[3][0].refund(username)
