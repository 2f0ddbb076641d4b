"""Trajectory data: the :class:`Trajectory` container, H5MD files, noise and splits, and the
initial conditions of a run (:func:`read_initial`: JSON, CSV or an H5MD file's last frame).

::

    from physnode.data import Trajectory, write_trajectory, read_trajectory, add_noise, split

    traj = Trajectory.from_state(t, y, n_bodies=3, dim=2, masses=[1.0, 1.0, 1.0],
                                 parameters={"system": "n-body", "G": 1.0})
    write_trajectory("fig8.h5", add_noise(traj, 0.01, seed=0))
    train, test = split(read_trajectory("fig8.h5"), until=1.0)

The file layout is documented in ``docs/FORMAT.md``. This subpackage needs only NumPy and h5py.
"""

from physnode.data.atomic import atomic_write
from physnode.data.h5md import (
    FORMAT_VERSION,
    PARTICLE_GROUP,
    describe,
    read_trajectory,
    write_trajectory,
)
from physnode.data.initial import INITIAL_SUFFIXES, InitialConditions, read_initial
from physnode.data.noise import add_noise, split
from physnode.data.trajectory import Trajectory

__all__ = [
    "FORMAT_VERSION",
    "INITIAL_SUFFIXES",
    "PARTICLE_GROUP",
    "InitialConditions",
    "Trajectory",
    "add_noise",
    "atomic_write",
    "describe",
    "read_initial",
    "read_trajectory",
    "split",
    "write_trajectory",
]
