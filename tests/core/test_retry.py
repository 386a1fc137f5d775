"""The retry policy's arithmetic: each back-off formula, the cap, jitter, overrides, validation."""

from __future__ import annotations

import msgspec
import pytest

from broker_core.retry import MAX_DELAY_MS, Backoff, RetryPolicy, backoff_ms, requeue_delay_ms


def test_exponential_doubles_up_to_the_cap() -> None:
    """min 100, x2, max 1000: 100, 200, 400, 800, then 1000 for ever (no overflow at n=5000)."""
    policy = RetryPolicy(min_ms=100, max_ms=1000)
    assert [backoff_ms(policy, n) for n in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert backoff_ms(policy, 5000) == 1000


def test_linear_and_fixed() -> None:
    """Linear grows by min_ms each time up to max_ms; fixed is always min_ms."""
    linear = RetryPolicy(backoff=Backoff.LINEAR, min_ms=300, max_ms=1000)
    assert [backoff_ms(linear, n) for n in (1, 2, 3, 4)] == [300, 600, 900, 1000]
    fixed = RetryPolicy(backoff=Backoff.FIXED, min_ms=250, max_ms=9000)
    assert {backoff_ms(fixed, n) for n in (1, 2, 50)} == {250}


def test_a_multiplier_of_one_stays_at_min() -> None:
    """Exponential with multiplier 1 never grows."""
    policy = RetryPolicy(min_ms=100, max_ms=1000, multiplier=1.0)
    assert backoff_ms(policy, 40) == 100


def test_jitter_spreads_within_its_fraction() -> None:
    """jitter 0.1: draws 0 and 1 give -10% and +10%, 0.5 the exact wait."""
    policy = RetryPolicy(min_ms=1000, max_ms=1000, jitter=0.1)
    assert requeue_delay_ms(policy, 1, "nack", 0.0) == pytest.approx(900)
    assert requeue_delay_ms(policy, 1, "nack", 0.5) == pytest.approx(1000)
    assert requeue_delay_ms(policy, 1, "nack", 1.0) == pytest.approx(1100)


def test_triggers_and_overrides() -> None:
    """`on` filters the triggers; a consumer gone never waits; a nack's delay wins."""
    policy = RetryPolicy(min_ms=500, jitter=0.0, on=["nack"])
    assert requeue_delay_ms(policy, 1, "nack", 0.5) == 500
    assert requeue_delay_ms(policy, 1, "expired", 0.5) == 0
    assert requeue_delay_ms(policy, 1, "gone", 0.5) == 0
    assert requeue_delay_ms(policy, 3, "nack", 0.5, override_ms=0) == 0
    assert requeue_delay_ms(None, 3, "nack", 0.5, override_ms=70) == 70
    assert requeue_delay_ms(None, 3, "nack", 0.5) == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"min_ms": 500, "max_ms": 100}', "max_ms"),
        (b'{"min_ms": 0}', "min_ms"),
        (b'{"max_ms": %d}' % (MAX_DELAY_MS + 1), "max_ms"),
        (b'{"backoff": "random"}', "backoff"),
        (b'{"on": ["crash"]}', "on"),
        (b'{"mystery": 1}', "mystery"),
    ],
)
def test_bad_policies_name_their_field(raw: bytes, field: str) -> None:
    """Decoding refuses a bad policy with an error that names the field."""
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.json.decode(raw, type=RetryPolicy)
