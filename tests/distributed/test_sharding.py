"""physnode.distributed without launching anything: the world from the environment, the
shards, and that a world of one never touches torch.distributed."""

from __future__ import annotations

import datetime

import pytest
import torch.distributed as dist

from physnode.distributed import (
    DEFAULT_TIMEOUT_S,
    DistributedError,
    World,
    all_gather,
    process_group,
    shard,
    timeout_from_env,
    world_from_env,
)


def test_a_plain_run_is_a_world_of_one() -> None:
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}) == World(2, 4, 0)
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3"}).local_rank == 3


@pytest.mark.parametrize(
    "env", [{"WORLD_SIZE": "two"}, {"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "0"}]
)
def test_a_broken_launch_environment_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(DistributedError):
        world_from_env(env)


@pytest.mark.parametrize("n_items", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shards_cover_every_item_once_round_robin(n_items: int, size: int) -> None:
    """Uneven shards and more ranks than items: every item on exactly one rank, rank r gets
    items r, r + W, ...; lengths differ by at most one."""
    items = list(range(n_items))
    shards = [shard(items, World(r, size)) for r in range(size)]
    assert sorted(i for s in shards for i in s) == items
    for r, s in enumerate(shards):
        assert s == list(range(r, n_items, size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_timeout_from_the_environment() -> None:
    assert timeout_from_env({}) == datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    assert timeout_from_env({"PHYSNODE_DIST_TIMEOUT": "2.5"}).total_seconds() == 2.5
    for bad in ("soon", "0", "-3"):
        with pytest.raises(DistributedError, match="PHYSNODE_DIST_TIMEOUT"):
            timeout_from_env({"PHYSNODE_DIST_TIMEOUT": bad})


def test_a_world_of_one_needs_no_process_group() -> None:
    with process_group(World()) as world:
        assert all_gather({"x": 1}, world) == [{"x": 1}]
        assert not dist.is_initialized()


def test_ranks_given_other_files_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank must shard the same list: a rank whose list differs (another glob order on
    another node) is named, and no rank fits anything."""
    import physnode.distributed as distributed

    world = World(0, 3)
    monkeypatch.setattr(distributed, "all_gather", lambda v, w: [["a", "b"], ["a", "b"], ["a"]])
    with pytest.raises(DistributedError, match=r"rank\(s\) 2 were given other data files"):
        distributed.require_agreement(["a", "b"], world, "data files")
    monkeypatch.setattr(distributed, "all_gather", lambda v, w: [v] * w.size)
    distributed.require_agreement(["a", "b"], world, "data files")
