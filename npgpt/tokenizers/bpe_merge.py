"""The two loops that apply BPE merges to one chunk's ids; both give tiktoken's result.

`pairs` maps (left id, right id) -> (rank, new id) for every pair that may merge; each step merges
the lowest-rank adjacent pair, the leftmost among equal ranks, until no adjacent pair merges.
"""

from __future__ import annotations

import heapq

NO_MERGE = (float("inf"), -1)  # (rank, new id) of a pair that does not merge


def merge_by_scan(ids: list[int], pairs: dict) -> list[int]:
    """Merge `ids` in place until no pair merges: each step the lowest-rank adjacent pair, the
    leftmost among equal ranks (tiktoken's loop). O(n^2) in the worst case, fast for short chunks."""
    get = pairs.get
    ranks = [get(p, NO_MERGE) for p in zip(ids, ids[1:])]  # ranks[i]: pair (ids[i], ids[i+1])
    while ranks:
        best = min(ranks)
        if best[1] < 0:
            break
        i = ranks.index(best)  # leftmost of the lowest rank
        ids[i:i + 2] = [best[1]]
        del ranks[i]
        if i > 0:
            ranks[i - 1] = get((ids[i - 1], ids[i]), NO_MERGE)
        if i < len(ranks):
            ranks[i] = get((ids[i], ids[i + 1]), NO_MERGE)
    return ids


def merge_with_heap(ids: list[int], pairs: dict) -> list[int]:
    """Same result as merge_by_scan in O(n log n): a heap of (rank, position) over a linked list.

    Positions are original indices and merges keep the left one, so list order = index order and
    the heap's (rank, position) minimum is the leftmost lowest-rank pair. Stale heap entries are
    dropped when popped by checking them against the current tokens.
    """
    n = len(ids)
    tok = list(ids)
    nxt = list(range(1, n + 1))  # nxt[i] == n: i is last
    prv = list(range(-1, n - 1))
    get = pairs.get
    heap = []
    for i in range(n - 1):
        rank, new = get((tok[i], tok[i + 1]), NO_MERGE)
        if new >= 0:
            heap.append((rank, i, new))
    heapq.heapify(heap)
    while heap:
        rank, i, new = heapq.heappop(heap)
        j = nxt[i]
        if tok[i] < 0 or j >= n or get((tok[i], tok[j])) != (rank, new):
            continue
        tok[i], tok[j] = new, -1
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        for a in (prv[i], i):
            if a >= 0 and nxt[a] < n:
                r, m = get((tok[a], tok[nxt[a]]), NO_MERGE)
                if m >= 0:
                    heapq.heappush(heap, (r, a, m))
    out, i = [], 0
    while i < n:
        out.append(tok[i])
        i = nxt[i]
    return out
