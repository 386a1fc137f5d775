"""The input rule (`transports.decoding.check_json`) without a server: depth against a model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from transports.decoding import check_json
from transports.errors import InvalidEncoding, TooDeep

# Strings full of what could fool a bracket count: brackets, quotes, backslashes.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\ab\u00e9\U0001f600'), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=40,
)


def depth(value: Any) -> int:
    """How deep arrays and objects nest in ``value`` (a scalar: 0)."""
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


def too_deep(data: bytes | str, limit: int) -> bool:
    try:
        check_json(data, limit)
    except TooDeep:
        return True
    return False


@settings(max_examples=400, deadline=None)
@given(value=json_values, limit=st.integers(min_value=0, max_value=6))
def test_depth_agrees_with_the_model_on_bytes_and_text(value: Any, limit: int) -> None:
    """A body is too deep exactly when its arrays and objects nest past the limit."""
    text = json.dumps(value, ensure_ascii=False)
    expected = depth(value) > limit and len(text.encode()) > 2 * limit
    assert too_deep(text.encode(), limit) == expected
    assert too_deep(text, limit) == expected


@settings(max_examples=200, deadline=None)
@given(values=st.lists(json_values, min_size=1, max_size=30), limit=st.integers(1, 4))
def test_a_batch_of_shallow_bodies_is_not_too_deep(values: list[Any], limit: int) -> None:
    """Many shallow bodies side by side (a batch frame) count their depth, not their brackets."""
    shallow = [value for value in values if depth(value) < limit]
    frame = json.dumps({"op": "batch", "frames": [{"content": v} for v in shallow]}).encode()
    assert not too_deep(frame, limit + 2)


@pytest.mark.parametrize(
    "body",
    [b'["\\\\"]', b'["\\\\\\"]"]', b'{"a": "[[[[[[", "b": [1]}', b'["\\"[[[[[["]'],
)
def test_brackets_in_strings_and_escapes_do_not_count(body: bytes) -> None:
    """Escaped backslashes and quotes don't end a string early or late."""
    json.loads(body)
    assert not too_deep(body, 2)


def test_lone_surrogate_escape_is_refused_and_a_pair_is_kept() -> None:
    """``\\ud800`` alone is invalid_encoding; a surrogate pair and an escaped backslash pass."""
    with pytest.raises(InvalidEncoding):
        check_json(b'["\\ud800"]', 128)
    check_json(b'["\\ud83d\\ude00", "\\\\ud800"]', 128)
