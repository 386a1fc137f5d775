"""Tests of the token-bucket rate limiter, driven with simulated time."""

from __future__ import annotations

import pytest

from broker_core.settings import Settings
from transports.ratelimit import LoginLimiter, TokenBucketLimiter


def test_burst_passes_then_requests_are_limited() -> None:
    """A full bucket admits `burst` requests at once, then refuses."""
    limiter = TokenBucketLimiter(rate_per_s=10, burst=5)
    assert [limiter.hit("ip", now=0.0) for _ in range(5)] == [0.0] * 5
    assert limiter.hit("ip", now=0.0) > 0


def test_retry_after_is_time_to_next_token() -> None:
    """An empty bucket at 10/s answers a wait of 0.1 s."""
    limiter = TokenBucketLimiter(rate_per_s=10, burst=1)
    limiter.hit("ip", now=0.0)
    assert limiter.hit("ip", now=0.0) == pytest.approx(0.1)
    assert limiter.hit("ip", now=0.05) == pytest.approx(0.05)


def test_bucket_refills_over_time() -> None:
    """After waiting the advertised time, the request passes."""
    limiter = TokenBucketLimiter(rate_per_s=2, burst=1)
    limiter.hit("ip", now=0.0)
    wait = limiter.hit("ip", now=0.0)
    assert limiter.hit("ip", now=wait) == 0.0


def test_refill_is_capped_at_burst() -> None:
    """A long idle period saves up at most `burst` tokens."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=3)
    limiter.hit("ip", now=0.0)
    passed = sum(limiter.hit("ip", now=1000.0) == 0.0 for _ in range(10))
    assert passed == 3


def test_refused_request_spends_nothing() -> None:
    """Hammering an empty bucket does not push the retry time further out."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1)
    limiter.hit("ip", now=0.0)
    for _ in range(100):
        limiter.hit("ip", now=0.5)
    assert limiter.hit("ip", now=1.0) == 0.0


def test_keys_are_limited_independently() -> None:
    """One client's empty bucket does not limit another."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1)
    limiter.hit("a", now=0.0)
    assert limiter.hit("a", now=0.0) > 0
    assert limiter.hit("b", now=0.0) == 0.0


def test_cost_spends_several_tokens() -> None:
    """A batch of 3 costs 3 tokens."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=4)
    assert limiter.hit("ip", now=0.0, cost=3) == 0.0
    assert limiter.hit("ip", now=0.0, cost=3) == pytest.approx(2.0)


def test_cost_above_burst_is_capped() -> None:
    """A request costing more than the burst passes on a full bucket."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=2)
    assert limiter.hit("ip", now=0.0, cost=50) == 0.0
    assert limiter.hit("ip", now=0.0) > 0


def test_clock_going_backwards_does_not_drain() -> None:
    """A backwards step of the clock neither refills nor empties the bucket."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=2)
    limiter.hit("ip", now=10.0)
    assert limiter.hit("ip", now=5.0) == 0.0


def test_check_does_not_spend() -> None:
    """check() reports the wait without taking tokens."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1)
    assert limiter.check("ip", now=0.0) == 0.0
    assert limiter.check("ip", now=0.0) == 0.0
    limiter.hit("ip", now=0.0)
    assert limiter.check("ip", now=0.0) == pytest.approx(1.0)


def test_per_minute_limits_failed_logins() -> None:
    """per_minute(10) allows 10 failures at once, then one every 6 seconds."""
    limiter = TokenBucketLimiter.per_minute(10)
    assert all(limiter.hit("ip", now=0.0) == 0.0 for _ in range(10))
    assert limiter.hit("ip", now=0.0) == pytest.approx(6.0)


def test_zero_rate_disables_the_limit() -> None:
    """A rate of 0 admits everything and remembers nothing."""
    limiter = TokenBucketLimiter(rate_per_s=0, burst=0)
    assert not limiter.enabled
    assert all(limiter.hit("ip", now=0.0) == 0.0 for _ in range(1000))
    assert len(limiter) == 0


def test_reset_forgets_a_key() -> None:
    """After reset(), the key has a full bucket again."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1)
    limiter.hit("ip", now=0.0)
    limiter.reset("ip")
    assert limiter.hit("ip", now=0.0) == 0.0


def test_refund_gives_back_tokens_up_to_the_burst() -> None:
    """refund() returns what hit() spent, never more than a full bucket."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=2)
    limiter.hit("ip", now=0.0)
    limiter.hit("ip", now=0.0)
    limiter.refund("ip")
    limiter.refund("ip", cost=5)
    assert limiter.check("ip", now=0.0, cost=2) == 0.0
    assert limiter.check("ip", now=0.0, cost=3) == 0.0  # capped at the burst of 2


def test_login_limiter_refuses_with_the_longest_wait_and_spends_nothing() -> None:
    """A refused login attempt says why and spends no token of any bucket."""
    settings = Settings(rate_login_per_min=60, rate_login_user_per_min=2, rate_auth_user_per_min=60)
    limiter = LoginLimiter(settings)
    assert limiter.begin("ip", "alice", now=0.0) is None
    limiter.succeeded("ip", "alice")
    assert limiter.begin("ip", "alice", now=0.0) is None
    wait, reason = limiter.begin("ip", "alice", now=0.0) or (0, "")
    assert wait == 30
    assert reason == "too many login attempts for this user"
    assert limiter.begin("ip", "bob", now=0.0) is None


def test_key_count_stays_bounded() -> None:
    """A flood of distinct keys never grows the table beyond max_keys."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=5, max_keys=100)
    for i in range(10_000):
        limiter.hit(f"ip{i}", now=0.0)
        assert len(limiter) <= 100


def test_eviction_keeps_recently_active_keys() -> None:
    """Eviction drops the least recently used keys, not the active one."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1, max_keys=10)
    limiter.hit("busy", now=0.0)
    for i in range(50):
        limiter.hit("busy", now=0.0)
        limiter.hit(f"ip{i}", now=0.0)
    assert limiter.hit("busy", now=0.0) > 0


def test_eviction_prefers_full_buckets() -> None:
    """Idle keys whose buckets refilled are dropped before recent ones."""
    limiter = TokenBucketLimiter(rate_per_s=1, burst=1, max_keys=10)
    limiter.hit("recent", now=0.0)
    for i in range(9):
        limiter.hit(f"idle{i}", now=-100.0)
    limiter.hit("new", now=0.0)
    assert len(limiter) == 2
    assert limiter.hit("recent", now=0.0) > 0


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"), [(-1.0, 1.0, 10), (1.0, 0.5, 10), (1.0, 1.0, 0)]
)
def test_invalid_parameters_are_rejected(rate: float, burst: float, max_keys: int) -> None:
    """Negative rates, bursts below one and empty tables are refused."""
    with pytest.raises(ValueError, match="must be"):
        TokenBucketLimiter(rate, burst, max_keys)
