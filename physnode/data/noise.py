"""Observation noise and train/test splits.

"1 % noise" in physnode means ``add_noise(traj, 0.01, seed)`` with the default ``relative=True``:
every component (body i, axis d) of the positions, and separately of the velocities, gets
independent Gaussian noise whose standard deviation is 1 % of that component's root-mean-square
value over the trajectory. The noise then scales with each quantity's own size, so positions of
order 1 and velocities of order 0.01 are both perturbed by 1 %.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from physnode.data.trajectory import Trajectory
from physnode.errors import InvalidInputError

__all__ = ["add_noise", "split"]


def _noisy(x: np.ndarray | None, std: float, relative: bool, rng: np.random.Generator) -> Any:
    if x is None:
        return None
    # Relative: sigma per component = std * RMS over time (axis 0) of that component; an
    # ensemble member's components get their own RMS, as the time axis is the only one averaged.
    scale = std * np.sqrt(np.mean(x * x, axis=0)) if relative else std
    return x + scale * rng.standard_normal(x.shape)


def _check_noise_args(traj: Any, std: Any, seed: Any) -> None:
    """InvalidInputError for anything :func:`add_noise` refuses (see its Raises)."""
    if not isinstance(traj, Trajectory):
        raise InvalidInputError(f"traj must be a Trajectory; got {type(traj).__name__}")
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not math.isfinite(std):
        raise InvalidInputError(f"std must be a finite number; got {std!r}")
    if std < 0:
        raise InvalidInputError(f"std must be >= 0; got {std}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InvalidInputError(f"seed must be an int >= 0; got {seed!r}")
    if traj.parameters.get("noise_std"):
        raise InvalidInputError(
            f"this trajectory already has noise (noise_std = {traj.parameters['noise_std']}); "
            "add noise to the clean trajectory once, at the total level wanted"
        )


def add_noise(traj: Trajectory, std: float, seed: int, *, relative: bool = True) -> Trajectory:
    """A copy of ``traj`` with independent Gaussian noise on positions, velocities and state.

    Args:
        traj: the clean trajectory (single or ensemble).
        std: the noise level, >= 0. With ``relative=True`` (default, recommended) the noise on
            each component (body, axis; or state component) has standard deviation
            ``std * RMS_t(component)``, the RMS taken over the time samples; ``std = 0.01`` is
            "1 % noise". With ``relative=False`` it is an absolute standard deviation in the
            trajectory's own units, the same for positions, velocities and state.
        seed: seed of the NumPy generator (``numpy.random.default_rng``), an int >= 0; the same
            seed gives bit-identical noise. The draws are made in the order positions,
            velocities, state, each in C order.

    Returns:
        A new Trajectory (the input is unchanged). Times, masses, names and ``energy`` are
        copied unchanged; ``energy`` stays the clean value (a reference, not an observation).
        ``parameters`` gains ``noise_std``, ``noise_seed`` and ``noise_relative``.

    Raises:
        InvalidInputError: ``std`` negative or not finite, ``seed`` not a non-negative int, or
            ``traj`` already carries noise (``parameters["noise_std"]`` non-zero): add the noise
            to the clean trajectory once, at the total level wanted.
    """
    _check_noise_args(traj, std, seed)
    std = float(std)
    rng = np.random.default_rng(int(seed))
    positions = _noisy(traj.positions, std, relative, rng)
    velocities = _noisy(traj.velocities, std, relative, rng)
    state = _noisy(traj.state, std, relative, rng)
    parameters = dict(traj.parameters)
    parameters.update(noise_std=std, noise_seed=int(seed), noise_relative=bool(relative))
    return Trajectory(
        traj.times.copy(),
        positions=positions,
        velocities=velocities,
        masses=None if traj.masses is None else traj.masses.copy(),
        energy=None if traj.energy is None else traj.energy.copy(),
        state=state,
        state_names=traj.state_names,
        body_names=traj.body_names,
        parameters=parameters,
    )


def split(traj: Trajectory, until: float) -> tuple[Trajectory, Trajectory]:
    """Split by time into a training part and a test (extrapolation) part.

    Args:
        traj: the trajectory.
        until: the split time, in the trajectory's time unit.

    Returns:
        ``(train, test)``: ``train`` holds the samples with ``t <= until``, ``test`` those with
        ``t > until``; no sample is in both. Parameters are copied to both.

    Raises:
        InvalidInputError: ``until`` is not finite, or either part would be empty (the message
            gives the trajectory's time span).
    """
    if not isinstance(traj, Trajectory):
        raise InvalidInputError(f"traj must be a Trajectory; got {type(traj).__name__}")
    try:
        until = float(until)
    except (TypeError, ValueError):
        raise InvalidInputError(f"until must be a number; got {until!r}") from None
    if not math.isfinite(until):
        raise InvalidInputError(f"until must be finite; got {until}")
    mask = traj.times <= until
    n_train = int(mask.sum())
    if n_train == 0 or n_train == traj.n_times:
        raise InvalidInputError(
            f"split at until={until} leaves an empty {'train' if n_train == 0 else 'test'} part: "
            f"the samples span [{traj.times[0]}, {traj.times[-1]}]; choose until with "
            f"{traj.times[0]} <= until < {traj.times[-1]}"
        )
    return traj.select(mask), traj.select(~mask)
