"""Server-side partition assignors for KIP-848 consumer groups.

An assignor maps the group's members (each with the topic ids it
subscribes to) and the subscribed topics' partition counts to a target
assignment: member id -> {topic id: set of partitions}.  It must give every
partition of a subscribed topic to exactly one subscribed member.

* ``uniform`` (the default): balanced and sticky.  Partitions keep their
  previous owner when it is still subscribed, the rest go to the least
  loaded eligible member, then partitions move from the most to the least
  loaded eligible members until no eligible pair differs by more than one.
* ``range``: per topic, the subscribed members in member-id order receive
  contiguous ranges, the first ``partitions % members`` one more each.

Both are deterministic: the same input gives the same assignment.
"""

from __future__ import annotations

import uuid
from typing import Mapping

Assignment = dict[uuid.UUID, set[int]]


def _sorted_topics(topics: Mapping[uuid.UUID, int]) -> list[uuid.UUID]:
    return sorted(topics, key=str)


def uniform(members: Mapping[str, set[uuid.UUID]], topics: Mapping[uuid.UUID, int],
            previous: Mapping[str, Assignment]) -> dict[str, Assignment]:
    names = sorted(members)
    owner: dict[tuple, str] = {}
    load = {m: 0 for m in names}
    # 1. Stickiness: keep what each member had, if still valid.
    for m in names:
        for tid, parts in (previous.get(m) or {}).items():
            if tid not in members[m] or tid not in topics:
                continue
            for p in sorted(parts):
                if p < topics[tid] and (tid, p) not in owner:
                    owner[(tid, p)] = m
                    load[m] += 1
    eligible_cache: dict[uuid.UUID, list[str]] = {
        tid: [m for m in names if tid in members[m]] for tid in topics
    }
    # 2. Everything else to the least loaded eligible member.
    for tid in _sorted_topics(topics):
        eligible = eligible_cache[tid]
        if not eligible:
            continue
        for p in range(topics[tid]):
            if (tid, p) in owner:
                continue
            m = min(eligible, key=lambda x: (load[x], x))
            owner[(tid, p)] = m
            load[m] += 1
    # 3. Balance: move from overloaded to underloaded eligible members.
    by_member: dict[str, list[tuple]] = {m: [] for m in names}
    for tp, m in sorted(owner.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        by_member[m].append(tp)
    moved = True
    while moved:
        moved = False
        for m in sorted(names, key=lambda x: (-load[x], x)):
            for tp in list(reversed(by_member[m])):
                eligible = eligible_cache[tp[0]]
                target = min(eligible, key=lambda x: (load[x], x))
                if load[target] + 1 < load[m]:
                    by_member[m].remove(tp)
                    by_member[target].append(tp)
                    load[m] -= 1
                    load[target] += 1
                    moved = True
    out: dict[str, Assignment] = {m: {} for m in names}
    for m, tps in by_member.items():
        for tid, p in tps:
            out[m].setdefault(tid, set()).add(p)
    return out


def range_(members: Mapping[str, set[uuid.UUID]], topics: Mapping[uuid.UUID, int],
           previous: Mapping[str, Assignment]) -> dict[str, Assignment]:
    out: dict[str, Assignment] = {m: {} for m in members}
    for tid in _sorted_topics(topics):
        subs = sorted(m for m in members if tid in members[m])
        if not subs:
            continue
        n = topics[tid]
        per, extra = divmod(n, len(subs))
        start = 0
        for i, m in enumerate(subs):
            count = per + (1 if i < extra else 0)
            if count:
                out[m][tid] = set(range(start, start + count))
            start += count
    return out


ASSIGNORS = {"uniform": uniform, "range": range_}
