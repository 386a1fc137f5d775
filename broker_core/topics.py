"""Topic routing: AMQP binding patterns, routing keys, and `BindingTrie`, their index.

A routing key is words separated by dots (``orders.eu.created``). A binding
pattern is the same, where a word may also be ``*`` (exactly one word) or
``#`` (zero or more words), as in RabbitMQ's topic exchanges.

Rules chosen here (documented in README, "Topics"):

* a word is never empty: ``a..b``, ``.a`` and ``a.`` are refused, in keys
  and patterns alike;
* a routing key holds no ``*`` or ``#`` (a key names one subject; a wildcard
  in it would be a pattern sent where a subject was meant);
* ``*`` and ``#`` are whole words: ``a*`` or ``#b`` are refused rather than
  read as literals, since a user who wrote them meant a wildcard;
* the empty string is a key (or pattern) of zero words: only the empty pattern
  and patterns made of ``#`` alone (``#``, ``#.#``) match the empty key, and
  ``*`` does not (it needs one word).

This module is pure: no I/O, no asyncio. `BindingTrie` matches a key in time
bounded by (trie nodes reached) x (words in the key), never by the number of
bindings: a publish to a topic with 10,000 bindings walks only the branches
its words lead into.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InvalidRoutingKey

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_WORDS",
    "BindingTrie",
    "check_pattern",
    "check_routing_key",
    "split_words",
]

MAX_KEY_LENGTH = 255
"""Longest routing key or pattern, in characters (AMQP's short string)."""
MAX_WORDS = 32
"""Most words in a routing key or pattern: bounds the matcher's work per publish."""

STAR = "*"
HASH = "#"


def split_words(text: str, what: str) -> list[str]:
    """The words of a routing key or pattern (``[]`` for the empty string).

    Raises:
        InvalidRoutingKey: too long, too many words, or an empty word.
    """
    if len(text) > MAX_KEY_LENGTH:
        raise InvalidRoutingKey(what, text, f"longer than {MAX_KEY_LENGTH} characters")
    if text == "":
        return []
    words = text.split(".")
    if len(words) > MAX_WORDS:
        raise InvalidRoutingKey(what, text, f"more than {MAX_WORDS} words")
    if "" in words:
        raise InvalidRoutingKey(what, text, "a word is empty (two dots, or a dot at an end)")
    return words


def check_routing_key(key: str) -> list[str]:
    """Return the words of a publish's routing key, or raise `InvalidRoutingKey`.

    A routing key holds no wildcard: ``*`` and ``#`` are refused anywhere in it.
    """
    words = split_words(key, "routing_key")
    if STAR in key or HASH in key:
        raise InvalidRoutingKey("routing_key", key, "'*' and '#' are for binding patterns")
    return words


def check_pattern(pattern: str) -> list[str]:
    """Return the words of a binding pattern, or raise `InvalidRoutingKey`.

    ``*`` and ``#`` must each be a whole word.
    """
    words = split_words(pattern, "pattern")
    for word in words:
        if word not in (STAR, HASH) and (STAR in word or HASH in word):
            raise InvalidRoutingKey(
                "pattern", pattern, f"'*' and '#' must be whole words, not part of {word!r}"
            )
    return words


class _Node:
    """One position in the trie: the edges out of it and the queues whose pattern ends here."""

    __slots__ = ("children", "hash", "queues", "star")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        self.queues: set[str] = set()

    def empty(self) -> bool:
        return not (self.children or self.star or self.hash or self.queues)


class BindingTrie:
    """The bindings of one topic, indexed by pattern words for matching routing keys.

    A binding is ``(queue, pattern)``; adding the same one twice is a no-op.
    `match` returns each queue once, however many of its bindings match.
    """

    __slots__ = ("_count", "_root")

    def __init__(self) -> None:
        self._root = _Node()
        self._count = 0

    def __len__(self) -> int:
        """How many bindings the trie holds."""
        return self._count

    def add(self, queue: str, pattern: str) -> bool:
        """Index a binding; return whether it is new.

        Raises:
            InvalidRoutingKey: ``pattern`` breaks the pattern rules (`check_pattern`).
        """
        node = self._root
        for word in check_pattern(pattern):
            if word == STAR:
                if node.star is None:
                    node.star = _Node()
                node = node.star
            elif word == HASH:
                if node.hash is None:
                    node.hash = _Node()
                node = node.hash
            else:
                child = node.children.get(word)
                if child is None:
                    child = node.children[word] = _Node()
                node = child
        if queue in node.queues:
            return False
        node.queues.add(queue)
        self._count += 1
        return True

    def remove(self, queue: str, pattern: str) -> bool:
        """Drop a binding (and the branches left empty); return whether it was there."""
        try:
            words = check_pattern(pattern)
        except InvalidRoutingKey:
            return False
        path: list[tuple[_Node, str]] = []
        node: _Node | None = self._root
        for word in words:
            assert node is not None, "the loop stops at a missing branch"
            path.append((node, word))
            if word == STAR:
                node = node.star
            elif word == HASH:
                node = node.hash
            else:
                node = node.children.get(word)
            if node is None:
                return False
        assert node is not None, "a path of zero words ends at the root"
        if queue not in node.queues:
            return False
        node.queues.discard(queue)
        self._count -= 1
        # Prune from the end: a trie of deleted bindings must not keep growing.
        for parent, word in reversed(path):
            if not node.empty():
                break
            if word == STAR:
                parent.star = None
            elif word == HASH:
                parent.hash = None
            else:
                del parent.children[word]
            node = parent
        return True

    def match(self, key: str) -> set[str]:
        """The queues bound by a pattern that matches routing key ``key``.

        Raises:
            InvalidRoutingKey: ``key`` breaks the routing key rules (`check_routing_key`).
        """
        return self.match_words(check_routing_key(key))

    def match_words(self, words: list[str]) -> set[str]:
        """`match` for a key already split (and checked) into ``words``."""
        found: set[str] = set()
        size = len(words)
        # (node, position) pairs already walked: with several '#' the same pair is
        # reached along many paths, and walking it once keeps the cost at
        # nodes x words instead of exponential in the number of '#'.
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[_Node, int, bool]] = [(self._root, 0, False)]
        while stack:
            node, at, is_hash = stack.pop()
            mark = (id(node), at)
            if mark in seen:
                continue
            seen.add(mark)
            if node.hash is not None:
                stack.append((node.hash, at, True))  # '#' taking zero words
            if at == size:
                found |= node.queues
                continue
            if is_hash:
                stack.append((node, at + 1, True))  # this '#' takes one more word
            child = node.children.get(words[at])
            if child is not None:
                stack.append((child, at + 1, False))
            if node.star is not None:
                stack.append((node.star, at + 1, False))
        return found

    def bindings(self) -> Iterator[tuple[str, str]]:
        """Every ``(queue, pattern)`` in the trie, in no particular order."""
        stack: list[tuple[_Node, list[str]]] = [(self._root, [])]
        while stack:
            node, words = stack.pop()
            pattern = ".".join(words)
            for queue in node.queues:
                yield queue, pattern
            for word, child in node.children.items():
                stack.append((child, [*words, word]))
            if node.star is not None:
                stack.append((node.star, [*words, STAR]))
            if node.hash is not None:
                stack.append((node.hash, [*words, HASH]))
