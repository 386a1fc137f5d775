"""Token-bucket rate limiting, keyed by client (IP, user or token).

One :class:`TokenBucketLimiter` per route class (auth, publish, consume,
admin, default). A bucket holds up to ``burst`` tokens and refills at
``rate_per_s``; a request spends ``cost`` tokens or is refused with the time
until it could pass, which becomes the ``Retry-After`` of a 429 (RFC 6585
section 4). Failed logins use the same bucket with a per-minute rate
(:meth:`TokenBucketLimiter.per_minute`): :meth:`~TokenBucketLimiter.check`
before verifying a password, :meth:`~TokenBucketLimiter.hit` after a failure.

The limiter is plain synchronous code with ``now`` passed in (monotonic
seconds), used from one event loop: no locks, no clock reads.
"""

from __future__ import annotations

__all__ = ["TokenBucketLimiter"]


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
