"""Small data files for the many-files tests: the figure-eight start with unequal masses over
half a period, from the reference simulator (``tests/reference.py``), written as H5MD.

Half a period of 30 samples keeps one fit (5 Adam epochs, 5 L-BFGS steps, the least-squares
finish) near 1 s on one core, and the default start (unit masses) is 10-30 % off every set.
"""

from __future__ import annotations

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


def write_data(path: str | Path, masses: tuple[float, ...], points: int = 30) -> Path:
    """The reference motion with ``masses`` over half a period, ``points`` samples."""
    t = np.linspace(0.0, 0.5 * FIGURE_EIGHT_PERIOD, points)
    q0, v0 = reference.FIGURE_EIGHT_POSITIONS, reference.FIGURE_EIGHT_VELOCITIES
    path = Path(path)
    write_trajectory(path, reference.to_trajectory(reference.simulate(masses, q0, v0, t)))
    return path


def write_named(directory: str | Path, *stems: str) -> list[Path]:
    """``directory/<stem>.h5`` for each stem, with that stem's :data:`MASSES`."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    return [write_data(Path(directory) / f"{stem}.h5", MASSES[stem]) for stem in stems]
