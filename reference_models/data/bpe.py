"""Byte-pair merging in ``O(n log n)`` for a word of ``n`` symbols, with CLIP's merge rule.

The textbook loop (and open_clip's ``SimpleTokenizer.bpe``) finds the best-ranked pair by
scanning the whole word, merges it everywhere, and starts again: ``O(n)`` scans of ``O(n)``
symbols, so a 100,000-character word takes minutes. Here the symbols form a linked list and
the candidate pairs wait in a heap ordered by ``(rank, position)``; a merge only creates the
two pairs around it. The result is the textbook one: all occurrences of the best pair are
merged, left to right and without overlap, before any pair of a later rank.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

__all__ = ["merge_pairs"]


def merge_pairs(symbols: list[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Merge adjacent symbols by rank (lowest first) until no ranked pair is left.

    Args:
        symbols: the word as initial symbols (CLIP: one per byte, the last with ``</w>``).
        ranks: ``(left, right) -> rank`` of every allowed merge.

    Returns:
        The merged symbols, in order.

    Example:
        >>> ranks = {("a", "b"): 0, ("ab", "c"): 1, ("c", "c"): 2}
        >>> merge_pairs(list("abccabc"), ranks)
        ['abc', 'c', 'abc']
        >>> merge_pairs(list("aaa"), {("a", "a"): 0})
        ['aa', 'a']
    """
    word = list(symbols)
    count = len(word)
    following = list(range(1, count + 1))  # following[i] == count: i is last
    preceding = list(range(-1, count - 1))
    heap = [(ranks[pair], i) for i, pair in enumerate(zip(word, word[1:])) if pair in ranks]
    heapq.heapify(heap)
    while heap:
        rank = heap[0][0]
        batch = []
        while heap and heap[0][0] == rank:
            batch.append(heapq.heappop(heap)[1])
        # One rank is one pair (left, right): merge its occurrences left to right, skipping
        # those that overlap one merged before (the batch pops in position order).
        left_symbol, right_symbol = _pair_of(ranks, rank, word, batch, following, count)
        for i in batch:
            j = following[i] if word[i] is not None else count
            if j >= count or word[i] != left_symbol or word[j] != right_symbol:
                continue  # stale: i or its neighbour has changed since this entry was pushed
            word[i] += word[j]
            word[j] = None
            following[i] = following[j]
            if following[i] < count:
                preceding[following[i]] = i
            _push(heap, ranks, word, preceding[i], i)
            _push(heap, ranks, word, i, following[i])
    return [symbol for symbol in word if symbol is not None]


def _pair_of(ranks, rank, word, batch, following, count) -> tuple[str, str]:
    """The pair whose rank is ``rank``: read from the first entry of the batch that is current."""
    for i in batch:
        j = following[i] if word[i] is not None else count
        if j < count and ranks.get((word[i], word[j])) == rank:
            return word[i], word[j]
    return "", ""  # every entry is stale: nothing to merge at this rank


def _push(heap, ranks, word, i: int, j: int) -> None:
    if i >= 0 and j < len(word):
        rank = ranks.get((word[i], word[j]))
        if rank is not None:
            heapq.heappush(heap, (rank, i))
