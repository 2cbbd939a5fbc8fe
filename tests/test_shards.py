"""Which shard holds a task (core/shards.py) and the key names each shard uses (core/keys.py)."""

from __future__ import annotations

import pytest

from core import keys
from core.models import is_task_id, new_task_ids
from core.shards import ids_in_shard, shard_of, shard_of_key


def test_the_single_redis_queue_keeps_its_plain_key_names() -> None:
    assert keys.shard_keys(1, cluster=False) == (keys.SINGLE,)
    single = keys.SINGLE
    assert single.queues == ("queue:tasks:high", "queue:tasks", "queue:tasks:low")
    assert single.task("abc") == "task:abc"
    assert single.processing("w-1") == "queue:processing:w-1"
    assert single.idempotency("k") == "idempotency:k"
    assert (single.stats, single.dead, single.scheduled) == ("stats:counters", "queue:dead", "queue:scheduled")


def test_cluster_shards_put_every_key_under_their_hash_tag() -> None:
    shards = keys.shard_keys(3, cluster=True)
    assert [s.prefix for s in shards] == ["{q0}", "{q1}", "{q2}"]
    assert keys.shard_keys(1, cluster=True)[0].task("abc") == "{q0}task:abc"
    shard = shards[2]
    names = [
        *shard.queues,
        shard.cancelled,
        shard.stats,
        shard.attempts,
        shard.cancel_requests,
        shard.task("x"),
        shard.processing("w"),
        shard.idempotency("k"),
        shard.purging("t"),
    ]
    assert all(name.startswith("{q2}") for name in names)


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_ids_made_for_a_shard_map_there_and_stay_task_ids(shards: int) -> None:
    ids = new_task_ids(200)
    for shard in range(shards):
        moved = ids_in_shard(ids, shard, shards)
        assert all(is_task_id(i) for i in moved)
        assert {shard_of(i, shards) for i in moved} == {shard}
        assert [i[:-12] for i in moved] == [i[:-12] for i in ids]  # the time-ordered head is kept


def test_ids_spread_over_the_shards_and_keys_land_in_one() -> None:
    ids = new_task_ids(3000)
    counts = [sum(1 for i in ids if shard_of(i, 3) == s) for s in range(3)]
    assert min(counts) > 800
    assert shard_of("not-a-task-id", 3) in range(3)
    assert shard_of_key("my-key", 3) == shard_of_key("my-key", 3)
    assert {shard_of_key(f"key-{n}", 3) for n in range(50)} == {0, 1, 2}
