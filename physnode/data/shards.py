"""An ensemble written in parts (one shard file per rank) joined into one trajectory file.

``physnode simulate --batch N`` under ``torchrun`` has every rank write its contiguous block of
members to :func:`shard_path` (``<out>.part-<r>-of-<W>.h5``, an ordinary trajectory file),
and rank 0 then :func:`join_shards` them: the parts are read, checked to belong together, and
**copied** into one plain H5MD ensemble file, written all-or-nothing; the parts are removed
afterwards. The joined file is exactly what :func:`~physnode.data.write_trajectory` writes
for the whole ensemble: it needs no part beside it (an HDF5 virtual dataset would, and a
missing part would read as zeros without an error).
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from physnode.data.h5md import read_trajectory, write_trajectory
from physnode.data.trajectory import Trajectory
from physnode.errors import DataError

__all__ = ["join_shards", "member_blocks", "shard_path"]


def shard_path(out: str | os.PathLike[str], rank: int, size: int) -> Path:
    """Where rank ``rank`` of ``size`` writes its part of ``out``: ``<out>.part-<r>-of-<W>.h5``
    beside it (``run.h5`` -> ``run.h5.part-0-of-2.h5``)."""
    out = Path(out)
    return out.with_name(f"{out.name}.part-{rank}-of-{size}.h5")


def member_blocks(n_members: int, size: int) -> list[tuple[int, int]]:
    """Contiguous blocks ``(lo, hi)`` of ``n_members`` members over ``size`` ranks, in rank
    order: the first ``n_members % size`` ranks get one member more; with more ranks than
    members the last ranks get empty blocks (``lo == hi``). Rank 0's block is never empty."""
    base, extra = divmod(n_members, size)
    bounds = [0]
    for rank in range(size):
        bounds.append(bounds[-1] + base + (rank < extra))
    return list(itertools.pairwise(bounds))


def join_shards(
    parts: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    remove: bool = True,
) -> Path:
    """Copy the ensemble trajectories in ``parts`` (in member order) into one ensemble file.

    Args:
        parts: shard files, each an ensemble of a block of members, all on one time grid with
            the same bodies and parameters (as :func:`shard_path` files of one run are).
        out: the joined file, written all-or-nothing by :func:`write_trajectory`.
        overwrite: replace an existing ``out``.
        remove: delete the parts once ``out`` is complete (they stay when anything fails).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: a part is unreadable, not an ensemble, or does not match the first part
            (times, bodies, masses' kind, parameters); the message names the part.
        FileExistsOutputError: ``out`` exists and ``overwrite`` is False.
    """
    if not parts:
        raise DataError(f"{out}: no shard files to join")
    trajs = [read_trajectory(p) for p in parts]
    for path, traj in zip(parts, trajs, strict=True):
        _check_matches(Path(path), traj, trajs[0], Path(parts[0]))
    path = write_trajectory(out, _concatenate(trajs), overwrite=overwrite)
    if remove:
        for part in parts:
            with contextlib.suppress(FileNotFoundError):
                Path(part).unlink()
    return path


def _check_matches(path: Path, traj: Trajectory, first: Trajectory, first_path: Path) -> None:
    """DataError unless ``traj`` (in ``path``) is an ensemble that fits beside ``first``."""
    if traj.n_members is None:
        raise DataError(f"{path}: not an ensemble (no ensemble_size); cannot join it")
    if not np.array_equal(traj.times, first.times):
        raise DataError(f"{path}: its times differ from {first_path}'s; cannot join them")
    for name in ("positions", "velocities", "energy", "state"):
        mine, theirs = getattr(traj, name), getattr(first, name)
        if (mine is None) != (theirs is None) or (
            mine is not None and mine.shape[2:] != theirs.shape[2:]
        ):
            raise DataError(f"{path}: its {name} do not match {first_path}'s; cannot join them")
    if (traj.masses is None) != (first.masses is None):
        raise DataError(f"{path}: its masses do not match {first_path}'s; cannot join them")
    if not _same(traj.parameters, first.parameters):
        raise DataError(f"{path}: its parameters differ from {first_path}'s; cannot join them")


def _same(a: Any, b: Any) -> bool:
    """Parameter values equal, arrays and nested mappings included."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


def _concatenate(trajs: Sequence[Trajectory]) -> Trajectory:
    """One ensemble of every member of ``trajs``, in order (member axis 1; masses axis 0)."""
    first = trajs[0]

    def join(name: str) -> np.ndarray | None:
        arrays = [getattr(t, name) for t in trajs]
        return None if arrays[0] is None else np.concatenate(arrays, axis=1)

    return Trajectory(
        first.times.copy(),
        positions=join("positions"),
        velocities=join("velocities"),
        masses=_masses(trajs),
        energy=join("energy"),
        state=join("state"),
        state_names=first.state_names,
        body_names=first.body_names,
        parameters=dict(first.parameters),
    )


def _masses(trajs: Sequence[Trajectory]) -> np.ndarray | None:
    """Shared masses ``(N,)`` when every part has the same, else per member ``(B, N)``."""
    masses = [t.masses for t in trajs]
    if masses[0] is None:
        return None
    if all(m is not None and m.ndim == 1 and np.array_equal(m, masses[0]) for m in masses):
        return masses[0].copy()
    rows = [
        np.broadcast_to(m, (t.n_members or 1, m.shape[-1]))
        for m, t in zip(masses, trajs, strict=True)
    ]
    return np.concatenate(rows, axis=0)
