"""Independent work sharded over the ranks of a ``torchrun`` launch.

Under ``torchrun`` every process (rank) gets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its
environment. :func:`world_from_env` reads them (a plain run is a world of one), :func:`shard`
gives each rank its share of a list, and :func:`process_group` joins the ranks for the one
collectives this mode needs: :func:`require_agreement` that every rank was given the same
work, and :func:`all_gather` of each rank's small results at the end. Nothing else is
synchronised; a world of one never touches :mod:`torch.distributed`.

The process group always uses the ``gloo`` backend, also when the work runs on CUDA: it only
carries a handful of pickled results, gloo lets several ranks share one GPU (NCCL refuses
that), and its timeouts raise an error instead of aborting the process.

A rank that dies closes its sockets, and the others' collective fails at once ("Connection
closed by peer"); a rank that hangs alive is given up on after the timeout
(:data:`TIMEOUT_ENV`). Either way every surviving rank raises :class:`DistributedError`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from physnode.errors import PhysnodeError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "DistributedError",
    "World",
    "all_gather",
    "all_reduce_sum",
    "process_group",
    "require_agreement",
    "shard",
    "world_from_env",
]

T = TypeVar("T")

#: Environment variable: seconds a rank waits for the others (to join, and at the final
#: gather) before giving up. A dead rank is noticed at once; this bounds a hung one.
TIMEOUT_ENV = "PHYSNODE_DIST_TIMEOUT"

#: The default of :data:`TIMEOUT_ENV`: one hour, far above the usual difference between the
#: ranks' finishing times. Raise it when single fits take longer.
DEFAULT_TIMEOUT_S = 3600.0


class DistributedError(PhysnodeError, RuntimeError):
    """The ranks could not join, or lost one another. Every file written is complete: rerun the
    same command to do the rest (finished files are skipped)."""


@dataclass(frozen=True)
class World:
    """Where this process stands: rank ``rank`` of ``size`` (``local_rank`` on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that reports."""
        return self.rank == 0


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The :class:`World` that ``torchrun`` describes in ``env`` (default: ``os.environ``);
    a world of one where ``WORLD_SIZE`` is unset.

    Raises:
        DistributedError: ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` are not integers, or ``RANK``
            is outside ``[0, WORLD_SIZE)``.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise DistributedError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers: {exc}") from None
    if size < 1 or not 0 <= rank < size:
        raise DistributedError(f"RANK {rank} is outside [0, WORLD_SIZE {size})")
    return World(rank, size, local_rank)


def shard(items: Sequence[T], world: World) -> list[T]:
    """Rank ``r``'s share of ``items``: items ``r, r + W, r + 2W, …`` (``W`` the world size).
    Shards differ in length by at most one; a rank beyond ``len(items)`` gets none."""
    return list(items[world.rank :: world.size])


def timeout_from_env(env: Mapping[str, str] | None = None) -> datetime.timedelta:
    """:data:`TIMEOUT_ENV` as a timedelta (default :data:`DEFAULT_TIMEOUT_S`)."""
    env = os.environ if env is None else env
    raw = env.get(TIMEOUT_ENV)
    try:
        seconds = DEFAULT_TIMEOUT_S if raw is None else float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DistributedError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def process_group(
    world: World, *, device: str = "cpu", timeout: datetime.timedelta | None = None
) -> Iterator[World]:
    """Join the other ranks for the block (a world of one does nothing) and leave at its end.

    Args:
        world: this process's place, from :func:`world_from_env`.
        device: the device the work runs on; for plain ``"cuda"`` each rank makes
            ``cuda:(LOCAL_RANK mod device count)`` its current device, so ranks on one node
            spread over its GPUs.
        timeout: how long to wait for the others; default :func:`timeout_from_env`.

    Raises:
        DistributedError: the others did not join in time, or the launch is incomplete
            (``MASTER_ADDR``/``MASTER_PORT`` missing).
    """
    if world.size == 1:
        yield world
        return
    import torch
    import torch.distributed as dist

    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    wait = timeout_from_env() if timeout is None else timeout
    try:
        dist.init_process_group(
            "gloo", rank=world.rank, world_size=world.size, timeout=wait, init_method="env://"
        )
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(
            f"rank {world.rank} of {world.size} could not join the other ranks: "
            f"{_first_line(exc)} (launch with torchrun, which sets MASTER_ADDR and MASTER_PORT)"
        ) from None
    try:
        yield world
        # every rank leaves together: a rank tearing gloo down while a peer still sends to it
        # can abort that peer ("terminate called without an active exception")
        with contextlib.suppress(RuntimeError):
            dist.barrier()
    finally:
        dist.destroy_process_group()


def all_gather(obj: Any, world: World) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in a world of
    one. Call it inside :func:`process_group`, on every rank.

    Raises:
        DistributedError: another rank died or did not arrive within the timeout.
    """
    if world.size == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world.size
    try:
        dist.all_gather_object(gathered, obj)
    except RuntimeError as exc:
        raise DistributedError(
            f"rank {world.rank} of {world.size} lost the other ranks before they all reported "
            f"({_first_line(exc)}); every file written is complete: rerun the same command to "
            "do the rest"
        ) from None
    return gathered


def all_reduce_sum(values: Any, world: World) -> Any:
    """The element-wise sum over the ranks of ``values`` (a float64 CPU tensor), in place, on
    every rank; ``values`` itself in a world of one. Call it on every rank, with tensors of one
    shape: the data-parallel step of a shared fit (:mod:`physnode.fit.shared`).

    Raises:
        DistributedError: another rank died or did not arrive within the timeout.
    """
    if world.size == 1:
        return values
    import torch.distributed as dist

    try:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    except RuntimeError as exc:
        raise DistributedError(
            f"rank {world.rank} of {world.size} lost the other ranks during a shared fit "
            f"({_first_line(exc)}); no fit file of this run was written: rerun the same command"
        ) from None
    return values


def require_agreement(value: Any, world: World, what: str) -> None:
    """Check that every rank holds the same ``value`` (picklable, compared with ``==``);
    nothing to check in a world of one.

    Raises:
        DistributedError: ranks differ (the message names them and ``what`` they differ in),
            or a rank was lost.
    """
    values = all_gather(value, world)
    differ = [r for r, v in enumerate(values) if v != values[0]]
    if differ:
        ranks = ", ".join(map(str, differ))
        raise DistributedError(
            f"rank(s) {ranks} were given other {what} than rank 0; every rank must get the same "
            "list in the same order"
        )


def _first_line(exc: BaseException) -> str:
    """The first two sentences of an exception's first line, without gloo's source location."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return ". ".join(text.split(". ")[:2]).rstrip(".")
