"""Which queue shard holds what: a task by its id, an Idempotency-Key's batch by the key.

A task id's last 12 hex digits are random (UUID v4 and v7 alike), so they spread tasks evenly
over the shards and any process finds a task's shard from its id alone. A batch is all or none in
one script call, so all of its ids are made to map to one shard (ids_in_shard).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence

#: The hex digits of an id that choose its shard: the random tail.
_TAIL = 12
_TAIL_SPAN = 16**_TAIL


def shard_of(task_id: str, shards: int) -> int:
    """The shard that holds `task_id`."""
    if shards == 1:
        return 0
    try:
        return int(task_id[-_TAIL:], 16) % shards
    except ValueError:  # no task id (a hand-planted entry): any stable choice will do
        return zlib.crc32(task_id.encode()) % shards


def shard_of_key(idempotency_key: str, shards: int) -> int:
    """The shard that holds an Idempotency-Key's record, and so the batch it came with: a replay
    of the key finds it there."""
    if shards == 1:
        return 0
    return int.from_bytes(hashlib.blake2b(idempotency_key.encode(), digest_size=8).digest(), "big") % shards


def ids_in_shard(ids: Iterable[str], shard: int, shards: int) -> list[str]:
    """`ids` with their random tails moved to the nearest value that maps to `shard`: log2(shards)
    bits of randomness fewer, the rest (a v7 id's time order too) kept."""
    if shards == 1:
        return list(ids)
    out = []
    for task_id in ids:
        tail = int(task_id[-_TAIL:], 16)
        moved = tail - tail % shards + shard
        if moved >= _TAIL_SPAN:
            moved -= shards
        out.append(f"{task_id[:-_TAIL]}{moved:0{_TAIL}x}")
    return out


def by_shard(task_ids: Sequence[str], shards: int) -> dict[int, list[str]]:
    """`task_ids` grouped by their shard, each group in the given order."""
    groups: dict[int, list[str]] = {}
    for task_id in task_ids:
        groups.setdefault(shard_of(task_id, shards), []).append(task_id)
    return groups
