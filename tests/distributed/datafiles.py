"""Small data files for the many-files tests: the figure-eight start with unequal masses over
half a period, from the reference simulator (``tests/reference.py``), written as H5MD.

Half a period of 30 samples keeps one fit (5 Adam epochs, 5 L-BFGS steps, the least-squares
finish) near 1 s on one core, and the default start (unit masses) is 10-30 % off every set.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from physnode.data import write_trajectory
from tests import reference

#: one period of the equal-mass figure-eight (Chenciner & Montgomery; docs/three-body.md)
FIGURE_EIGHT_PERIOD = 6.325914012016

#: true masses by file stem; none is the fit's default start of ones
MASSES = {
    "a": (0.8, 1.3, 1.0),
    "b": (1.2, 0.9, 1.1),
    "c": (0.7, 1.0, 1.25),
    "d": (1.1, 1.2, 0.85),
}

#: short fits: the CLI has no --lbfgs-steps, so tests set it through the Fitter seam
LBFGS_STEPS = 5
EPOCHS = 5


def write_data(
    path: str | Path, masses: tuple[float, ...], points: int = 30, *, G: float = 1.0,
    drag: float = 0.0, record_G: bool = True,
) -> Path:  # fmt: skip
    """The reference motion with ``masses`` over half a period, ``points`` samples; ``G`` and
    a linear ``drag`` (``-drag v``) as :func:`tests.reference.simulate` takes them.
    ``record_G=False`` leaves ``G`` out of the file, so a fit that learns it starts from its
    default (1), not from the value recorded."""
    t = np.linspace(0.0, 0.5 * FIGURE_EIGHT_PERIOD, points)
    q0, v0 = reference.FIGURE_EIGHT_POSITIONS, reference.FIGURE_EIGHT_VELOCITIES
    path = Path(path)
    traj = reference.to_trajectory(reference.simulate(masses, q0, v0, t, G=G, drag=drag))
    if not record_G:
        traj = replace(traj, parameters={k: v for k, v in traj.parameters.items() if k != "G"})
    write_trajectory(path, traj)
    return path


def write_named(directory: str | Path, *stems: str) -> list[Path]:
    """``directory/<stem>.h5`` for each stem, with that stem's :data:`MASSES`."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return [write_data(Path(directory) / f"{stem}.h5", MASSES[stem]) for stem in stems]
