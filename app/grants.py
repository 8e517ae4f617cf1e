"""The ``channels`` claim: channel names and ``*`` globs, matched in time linear in the name.

A claim is client-influenced input (whoever mints tokens copies patterns into it), and a glob
compiled to a regex backtracks: ``team:*-*-*-*-*-end`` against a 125-character near miss took
over a second, during which the instance served no one. Here a pattern is split at its stars
once, per token, and matched without backtracking:

* the piece before the first star must be a prefix and the piece after the last a suffix;
* every piece in between is found with ``str.find``, each at the leftmost place after the last.

Taking the leftmost place is always right, because a star matches any run: if the pieces fit at
all, they fit with each one as early as possible. So each piece is searched for once, and the cost
is at most the name's length times the pattern's, never exponential in the number of stars.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Glob:
    """One pattern: exact when it has no star, otherwise head, middle pieces and tail."""

    head: str
    middle: tuple[str, ...]
    tail: str | None  # None: no star, the name must equal ``head``

    @classmethod
    def parse(cls, pattern: str) -> Glob:
        pieces = pattern.split("*")
        if len(pieces) == 1:
            return cls(pattern, (), None)
        # Empty middle pieces (``a**b``) match anywhere: dropping them changes nothing.
        return cls(pieces[0], tuple(p for p in pieces[1:-1] if p), pieces[-1])

    def matches(self, name: str) -> bool:
        if self.tail is None:
            return name == self.head
        head, tail = self.head, self.tail
        if len(name) < len(head) + len(tail) or not name.startswith(head) or not name.endswith(tail):
            return False
        at, end = len(head), len(name) - len(tail)
        for piece in self.middle:
            found = name.find(piece, at, end)
            if found < 0:
                return False
            at = found + len(piece)
        return True


class Grants:
    """A claim's patterns, parsed once per token; exact names are a set lookup."""

    __slots__ = ("_exact", "_globs")

    def __init__(self, patterns: tuple[str, ...]) -> None:
        globs = [Glob.parse(p) for p in patterns]
        self._exact = frozenset(g.head for g in globs if g.tail is None)
        self._globs = tuple(dict.fromkeys(g for g in globs if g.tail is not None))  # duplicates once

    def matches(self, name: str) -> bool:
        return name in self._exact or any(glob.matches(name) for glob in self._globs)


def compile_grants(patterns: tuple[str, ...]) -> Grants | None:
    """The ``channels`` claim, ready to match; None when it grants nothing."""
    return Grants(patterns) if patterns else None
