"""The topic matcher: a table of AMQP patterns and keys, and the trie against a naive matcher."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from broker_core.errors import InvalidRoutingKey
from broker_core.topics import (
    MAX_KEY_LENGTH,
    MAX_WORDS,
    BindingTrie,
    check_pattern,
    check_routing_key,
)


def naive_match(pattern: list[str], key: list[str]) -> bool:
    """AMQP topic matching by its definition, by plain recursion (the model)."""
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(naive_match(rest, key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head in ("*", key[0])) and naive_match(rest, key[1:])


def words(text: str) -> list[str]:
    return text.split(".") if text else []


TABLE = [
    # (pattern, key, matches)
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#.#", "", True),
    ("#.#", "a.b", True),
    ("*", "", False),
    ("*", "a", True),
    ("*", "a.b", False),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("*.*", "a.b.c", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.b.c", False),
    ("a.#.b", "b.a.b", False),
    ("a.#", "a", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b", False),
    ("#.a", "a", True),
    ("#.a", "x.y.a", True),
    ("#.a", "a.x", False),
    ("a.*.#", "a", False),
    ("a.*.#", "a.b", True),
    ("#.*", "", False),
    ("#.*", "a.b", True),
    ("", "", True),
    ("", "a", False),
    ("a", "", False),
    ("orders.*.created", "orders.eu.created", True),
    ("orders.*.created", "orders.eu.west.created", False),
    ("orders.#.created", "orders.eu.west.created", True),
    ("a.b", "a.b", True),
    ("a.b", "a.bb", False),
    ("#.b.#", "a.b.c", True),
    ("#.b.#", "a.c", False),
]


@pytest.mark.parametrize(("pattern", "key", "expected"), TABLE)
def test_table_of_patterns_and_keys(pattern: str, key: str, expected: bool) -> None:
    """Each pattern matches exactly the keys the AMQP topic rules say."""
    trie = BindingTrie()
    trie.add("q", pattern)
    assert trie.match(key) == ({"q"} if expected else set())
    assert naive_match(words(pattern), words(key)) is expected


@pytest.mark.parametrize("key", ["a..b", ".a", "a.", ".", "a.*", "#", "a.#.b", "a*b", "x" * 256])
def test_bad_routing_keys_are_refused(key: str) -> None:
    """Empty words, wildcards and over-long keys are refused, naming routing_key."""
    with pytest.raises(InvalidRoutingKey) as raised:
        check_routing_key(key)
    assert raised.value.field == "routing_key"


@pytest.mark.parametrize("pattern", ["a..b", ".", "#.", "a*", "#b", "a.b#", ".".join("a" * 33)])
def test_bad_patterns_are_refused(pattern: str) -> None:
    """Empty words, partial wildcards and too many words are refused, naming pattern."""
    with pytest.raises(InvalidRoutingKey) as raised:
        check_pattern(pattern)
    assert raised.value.field == "pattern"


def test_limits_are_inclusive() -> None:
    """A key of MAX_WORDS words and MAX_KEY_LENGTH characters is accepted."""
    assert len(check_routing_key(".".join("a" * MAX_WORDS))) == MAX_WORDS
    assert check_routing_key("a" * MAX_KEY_LENGTH) == ["a" * MAX_KEY_LENGTH]


def test_a_queue_is_matched_once_by_several_bindings() -> None:
    """Two matching bindings of one queue give one queue."""
    trie = BindingTrie()
    assert trie.add("q", "a.*")
    assert trie.add("q", "#")
    assert not trie.add("q", "#")
    assert len(trie) == 2
    assert trie.match("a.b") == {"q"}


def test_remove_prunes_and_reports() -> None:
    """remove says whether the binding was there and leaves other bindings alone."""
    trie = BindingTrie()
    trie.add("q", "a.*.c")
    trie.add("r", "a.*")
    assert not trie.remove("q", "a.*")
    assert not trie.remove("q", "a..")
    assert trie.remove("q", "a.*.c")
    assert trie.match("a.b.c") == set()
    assert trie.match("a.b") == {"r"}
    assert sorted(trie.bindings()) == [("r", "a.*")]
    assert trie.remove("r", "a.*")
    assert len(trie) == 0
    assert list(trie.bindings()) == []


def test_many_hashes_match_in_bounded_work() -> None:
    """A pattern of many '#' against a long key stays quick (no exponential walk)."""
    trie = BindingTrie()
    trie.add("q", ".".join(["#"] * 16 + ["z"]))
    assert trie.match(".".join(["a"] * MAX_WORDS)) == set()
    assert trie.match(".".join(["a"] * (MAX_WORDS - 1) + ["z"])) == {"q"}


# -- properties: the trie agrees with the naive matcher --------------------------------

_word = st.sampled_from(["a", "b", "c"])
_pattern_word = st.sampled_from(["a", "b", "c", "*", "#"])
_key = st.lists(_word, max_size=6)
_pattern = st.lists(_pattern_word, max_size=6)
_binding = st.tuples(st.sampled_from(["q1", "q2", "q3", "q4"]), _pattern)


@settings(max_examples=400, deadline=None)
@given(bindings=st.lists(_binding, max_size=12), keys=st.lists(_key, min_size=1, max_size=8))
def test_trie_matches_as_the_naive_matcher(
    bindings: list[tuple[str, list[str]]], keys: list[list[str]]
) -> None:
    """For any bindings and keys, the trie returns the queues a scan of every binding finds."""
    trie = BindingTrie()
    for queue, pattern in bindings:
        trie.add(queue, ".".join(pattern))
    for key in keys:
        expected = {q for q, pattern in bindings if naive_match(pattern, key)}
        assert trie.match(".".join(key)) == expected


@settings(max_examples=300, deadline=None)
@given(
    bindings=st.lists(_binding, max_size=12),
    removed=st.lists(st.integers(min_value=0, max_value=11), max_size=8),
    keys=st.lists(_key, min_size=1, max_size=6),
)
def test_trie_after_removals_matches_the_remaining_bindings(
    bindings: list[tuple[str, list[str]]], removed: list[int], keys: list[list[str]]
) -> None:
    """Removing bindings leaves a trie that matches as the bindings that remain."""
    trie = BindingTrie()
    for queue, pattern in bindings:
        trie.add(queue, ".".join(pattern))
    remaining = {(q, ".".join(p)) for q, p in bindings}
    for index in removed:
        if index < len(bindings):
            queue, pattern = bindings[index]
            key = (queue, ".".join(pattern))
            assert trie.remove(*key) == (key in remaining)
            remaining.discard(key)
    assert len(trie) == len(remaining)
    assert set(trie.bindings()) == remaining
    for key_words in keys:
        expected = {q for q, p in remaining if naive_match(words(p), key_words)}
        assert trie.match(".".join(key_words)) == expected
