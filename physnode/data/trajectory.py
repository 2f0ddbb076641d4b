"""The in-memory trajectory container.

A :class:`Trajectory` holds one sampled solution (or an ensemble of solutions on one time grid) as
plain float64 NumPy arrays, time first. Particle systems (N-body) fill ``positions`` and
``velocities``; other systems (pendulum, Lotka–Volterra, ...) fill ``state``. The arrays are checked
once, in the constructor, so every later consumer can trust the shapes.

Ensembles: B trajectories of one system on one time grid carry an extra member axis right after
the time axis, as ``odeint`` returns for a batch of initial conditions: positions ``(T, B, N, D)``,
energy ``(T, B)``, state ``(T, B, S)``. Masses are ``(N,)`` when shared, ``(B, N)`` per member.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import numpy as np

from physnode.errors import InvalidInputError, InvalidTimeGridError

__all__ = ["Trajectory"]


def as_numpy(x: Any) -> Any:
    """``x.detach().cpu().numpy()`` for a torch tensor (recognised without importing torch);
    anything else is returned unchanged."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x


def _as_float64(x: Any, name: str) -> np.ndarray:
    """Convert an array-like (NumPy, list, CPU torch tensor) to a float64 ndarray."""
    arr = np.asarray(as_numpy(x))
    if arr.dtype.kind not in "fiu":
        raise InvalidInputError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    return np.asarray(arr, dtype=np.float64)


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = np.argwhere(bad)[0]
        where = ", ".join(str(int(i)) for i in first)
        raise InvalidInputError(f"{name} holds NaN or inf (first at index [{where}])")


def first_non_increasing(times: np.ndarray) -> int | None:
    """Index ``i`` of the first pair with ``times[i + 1] <= times[i]``, or None if strictly
    increasing."""
    bad = np.diff(times) <= 0
    return int(np.argmax(bad)) if bad.any() else None


def _names(names: Sequence[str], expected: int, name: str, what: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise InvalidInputError(f"{name} must be a sequence of strings, not one string")
    out = tuple(str(n) for n in names)
    if len(out) != expected:
        raise InvalidInputError(f"{name} has {len(out)} entries but there are {expected} {what}")
    return out


def _one_ensemble_size(members: dict[str, int | None]) -> int | None:
    """The ensemble size all fields agree on (None: a single trajectory)."""
    sizes = set(members.values())
    if len(sizes) > 1:
        raise InvalidInputError(
            f"positions and state disagree on the ensemble axis: {members} "
            "(None means a single trajectory)"
        )
    return next(iter(sizes))


@dataclass(eq=False, repr=False)
class Trajectory:
    """A sampled trajectory of one system, or an ensemble of them on one time grid.

    Attributes:
        times: shape ``(T,)``, float64, strictly increasing and finite, in the system's time unit.
        positions: shape ``(T, N, D)`` (ensemble: ``(T, B, N, D)``), body positions in the system's
            length unit, or None for a non-particle system.
        velocities: same shape as ``positions``, or None (e.g. position-only observations).
        masses: shape ``(N,)`` (ensemble: ``(N,)`` shared or ``(B, N)`` per member), finite and
            non-negative, in units where G = ``parameters["G"]``; None when unknown.
        energy: shape ``(T,)`` (ensemble: ``(T, B)``), the total energy, or None.
        state: shape ``(T, S)`` (ensemble: ``(T, B, S)``), the state of a non-particle system.
        state_names: ``S`` component names for ``state`` (e.g. ``("theta", "omega")``), or None.
        body_names: ``N`` body names (e.g. ``("sun", "earth")``), or None.
        parameters: the run's settings: ``system``, ``G``, preset, method, rtol, atol, seed,
            noise_std, ... Values are str, bool, int, float, None, NumPy arrays, lists of numbers
            or strings, or nested dicts of those.

    At least one of ``positions`` and ``state`` must be given. Arrays are converted to float64
    (a CPU torch tensor is accepted and detached); float64 NumPy input is kept without a copy, so
    the trajectory shares memory with the caller's array. Invalid input raises
    :class:`~physnode.errors.InvalidInputError` (:class:`~physnode.errors.InvalidTimeGridError`
    for the time grid) with a message naming the field.
    """

    times: np.ndarray
    _: KW_ONLY
    positions: np.ndarray | None = None
    velocities: np.ndarray | None = None
    masses: np.ndarray | None = None
    energy: np.ndarray | None = None
    state: np.ndarray | None = None
    state_names: tuple[str, ...] | None = None
    body_names: tuple[str, ...] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._check_times()
        if self.positions is None and self.state is None:
            raise InvalidInputError(
                "a trajectory needs positions (particle systems) or state (other systems); "
                "both are None"
            )
        members: dict[str, int | None] = {}  # field -> ensemble size (None: single trajectory)
        if self.positions is not None:
            members["positions"] = self._check_positions()
        for name in ("velocities", "masses", "body_names"):
            if getattr(self, name) is not None and self.positions is None:
                raise InvalidInputError(f"{name} given without positions")
        if self.velocities is not None:
            self._check_velocities()
        if self.state is not None:
            members["state"] = self._check_state()
        elif self.state_names is not None:
            raise InvalidInputError("state_names given without state")
        n_members = _one_ensemble_size(members)
        if self.energy is not None:
            self._check_energy(n_members)
        if self.masses is not None:
            self._check_masses(n_members)
        if self.body_names is not None:
            self.body_names = _names(self.body_names, self.n_bodies or 0, "body_names", "bodies")
        self._check_parameters_dict()

    def __repr__(self) -> str:
        parts = [f"T={self.n_times}", f"t=[{self.times[0]:g}, {self.times[-1]:g}]"]
        if self.n_members is not None:
            parts.append(f"members={self.n_members}")
        if self.positions is not None:
            parts.append(f"bodies={self.n_bodies}, dim={self.dim}")
        if self.state is not None:
            parts.append(f"state={self.state.shape[-1]}")
        present = [n for n in ("velocities", "masses", "energy") if getattr(self, n) is not None]
        parts += present
        if "system" in self.parameters:
            parts.append(f"system={self.parameters['system']!r}")
        return f"Trajectory({', '.join(parts)})"

    # ---------------------------------------------------------------- validation helpers
    def _check_times(self) -> None:
        try:
            times = _as_float64(self.times, "times")
        except InvalidInputError as err:
            raise InvalidTimeGridError(str(err)) from None
        if times.ndim != 1:
            raise InvalidTimeGridError(f"times must be 1-D, shape (T,); got shape {times.shape}")
        if times.size == 0:
            raise InvalidTimeGridError("times is empty; a trajectory needs at least one sample")
        if not np.isfinite(times).all():
            i = int(np.argmin(np.isfinite(times)))
            raise InvalidTimeGridError(f"times[{i}] = {times[i]} is not finite")
        i = first_non_increasing(times)
        if i is not None:
            raise InvalidTimeGridError(
                f"times must be strictly increasing, but times[{i + 1}] = {times[i + 1]!r} "
                f"<= times[{i}] = {times[i]!r}. For a backward integration reverse the arrays "
                "(times[::-1], y[::-1])"
            )
        self.times = times

    def _check_positions(self) -> int | None:
        """Convert and check ``positions``; returns their ensemble size (None: single)."""
        self.positions = self._check_series(self.positions, "positions", (3, 4), "(T, N, D)")
        if self.positions.shape[-1] < 1 or self.positions.shape[-2] < 1:
            raise InvalidInputError(
                f"positions has shape {self.positions.shape}: need at least one body and one "
                "spatial dimension"
            )
        return self.positions.shape[1] if self.positions.ndim == 4 else None

    def _check_velocities(self) -> None:
        self.velocities = self._check_series(self.velocities, "velocities", (3, 4), "")
        pos_shape = None if self.positions is None else self.positions.shape
        if self.velocities.shape != pos_shape:
            raise InvalidInputError(
                f"velocities has shape {self.velocities.shape} but positions has shape "
                f"{pos_shape}; they must match"
            )

    def _check_state(self) -> int | None:
        """Convert and check ``state`` and ``state_names``; returns the state's ensemble size."""
        self.state = self._check_series(self.state, "state", (2, 3), "(T, S)")
        if self.state_names is not None:
            self.state_names = _names(
                self.state_names, self.state.shape[-1], "state_names", "state components"
            )
        return self.state.shape[1] if self.state.ndim == 3 else None

    def _check_energy(self, n_members: int | None) -> None:
        self.energy = self._check_series(self.energy, "energy", (1, 2), "(T,)")
        expected = (self.n_times,) if n_members is None else (self.n_times, n_members)
        if self.energy.shape != expected:
            raise InvalidInputError(f"energy has shape {self.energy.shape}; expected {expected}")

    def _check_parameters_dict(self) -> None:
        """``parameters``: a mapping with string keys, stored as a (shallow) copy."""
        if not isinstance(self.parameters, Mapping):
            raise InvalidInputError(
                f"parameters must be a dict; got {type(self.parameters).__name__}"
            )
        self.parameters = dict(self.parameters)
        for key in self.parameters:
            if not isinstance(key, str):
                raise InvalidInputError(f"parameter names must be strings; got {key!r}")

    def _check_series(
        self, value: Any, name: str, ndims: tuple[int, int], layout: str
    ) -> np.ndarray:
        arr = _as_float64(value, name)
        if arr.ndim not in ndims:
            hint = f" {layout}" if layout else ""
            raise InvalidInputError(
                f"{name} must have {ndims[0]} dimensions{hint} (or {ndims[1]} for an ensemble); "
                f"got shape {arr.shape}"
            )
        if arr.shape[0] != self.times.shape[0]:
            raise InvalidInputError(
                f"{name} has {arr.shape[0]} samples (shape {arr.shape}) but times has "
                f"{self.times.shape[0]}"
            )
        _check_finite(arr, name)
        return arr

    def _check_masses(self, n_members: int | None) -> None:
        masses = _as_float64(self.masses, "masses")
        n = self.n_bodies
        allowed = [(n,)] if n_members is None else [(n,), (n_members, n)]
        if masses.shape not in allowed:
            raise InvalidInputError(
                f"masses has shape {masses.shape}; expected " + " or ".join(map(str, allowed))
            )
        _check_finite(masses, "masses")
        if (masses < 0).any():
            raise InvalidInputError(f"masses must be non-negative; got {masses}")
        self.masses = masses

    # ---------------------------------------------------------------- sizes
    @property
    def n_times(self) -> int:
        """T, the number of samples."""
        return int(self.times.shape[0])

    @property
    def n_bodies(self) -> int | None:
        """N, the number of bodies; None for a non-particle system."""
        return None if self.positions is None else int(self.positions.shape[-2])

    @property
    def dim(self) -> int | None:
        """D, the spatial dimension; None for a non-particle system."""
        return None if self.positions is None else int(self.positions.shape[-1])

    @property
    def n_members(self) -> int | None:
        """B, the number of ensemble members; None for a single trajectory."""
        if self.positions is not None:
            return int(self.positions.shape[1]) if self.positions.ndim == 4 else None
        state = self.state if self.state is not None else np.empty((0, 0))  # never empty here
        return int(state.shape[1]) if state.ndim == 3 else None

    @property
    def is_ensemble(self) -> bool:
        """True when the arrays carry an ensemble axis (even of size 1)."""
        return self.n_members is not None

    # ---------------------------------------------------------------- conversions
    def to_state(self) -> np.ndarray:
        """The flat ODE state at every sample.

        Returns:
            For a particle system: shape ``(T, 2 * N * D)`` (ensemble: ``(T, B, 2 * N * D)``),
            positions then velocities, body-major: ``x1, y1, x2, y2, ..., vx1, vy1, ...``.
            For a non-particle system: ``state`` itself, ``(T, S)`` or ``(T, B, S)``.

        Raises:
            InvalidInputError: a particle trajectory without velocities has no full state.
        """
        if self.positions is None:
            return np.asarray(self.state)  # the constructor ensures state is set
        if self.velocities is None:
            raise InvalidInputError(
                "this trajectory has no velocities, so it has no full (positions, velocities) "
                "state; use .positions"
            )
        lead = self.positions.shape[:-2]
        return np.concatenate(
            [self.positions.reshape(*lead, -1), self.velocities.reshape(*lead, -1)], axis=-1
        )

    @classmethod
    def from_state(
        cls,
        times: Any,
        y: Any,
        n_bodies: int,
        dim: int,
        *,
        masses: Any = None,
        energy: Any = None,
        body_names: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Trajectory:
        """Build a particle trajectory from a flat ODE state (the inverse of :meth:`to_state`).

        Args:
            times: shape ``(T,)``, the sample times.
            y: shape ``(T, 2 * n_bodies * dim)``, or ``(T, B, 2 * n_bodies * dim)`` for an
                ensemble: positions then velocities, body-major
                (``x1, y1, x2, y2, ..., vx1, vy1, ...``), as ``odeint`` returns it. NumPy array or
                CPU torch tensor.
            n_bodies: N. dim: D.
            masses, energy, body_names, parameters: passed through to :class:`Trajectory`.
        """
        if int(n_bodies) < 1 or int(dim) < 1:
            raise InvalidInputError(f"n_bodies and dim must be >= 1; got {n_bodies}, {dim}")
        arr = _as_float64(y, "y")
        width = 2 * int(n_bodies) * int(dim)
        if arr.ndim not in (2, 3) or arr.shape[-1] != width:
            raise InvalidInputError(
                f"y must have shape (T, {width}) or (T, B, {width}) for n_bodies={n_bodies}, "
                f"dim={dim} (positions then velocities); got shape {arr.shape}"
            )
        lead = arr.shape[:-1]
        half = width // 2
        return cls(
            times,
            positions=arr[..., :half].reshape(*lead, n_bodies, dim),
            velocities=arr[..., half:].reshape(*lead, n_bodies, dim),
            masses=masses,
            energy=energy,
            body_names=tuple(body_names) if body_names is not None else None,
            parameters=dict(parameters or {}),
        )

    # ---------------------------------------------------------------- selections
    def select(self, index: Any) -> Trajectory:
        """The samples at ``index`` along the time axis (a slice, boolean mask or index array).

        The result must still hold strictly increasing times. Masses, names and a copy of the
        parameters are kept.
        """
        times = np.asarray(self.times[index])
        if times.ndim != 1:
            raise InvalidInputError("select() needs a slice, a boolean mask or an index array")
        return self._rebuilt(times, lambda arr: arr[index], self.masses)

    def member(self, b: int) -> Trajectory:
        """Ensemble member ``b`` as a single trajectory (no ensemble axis)."""
        n = self.n_members
        if n is None:
            raise InvalidInputError("member() needs an ensemble; this is a single trajectory")
        if not -n <= b < n:
            raise InvalidInputError(f"member index {b} out of range for an ensemble of {n}")
        masses = self.masses
        if masses is not None and masses.ndim == 2:
            masses = masses[b]
        return self._rebuilt(self.times, lambda arr: arr[:, b], masses)

    def _rebuilt(
        self, times: np.ndarray, take: Callable[[np.ndarray], np.ndarray], masses: Any
    ) -> Trajectory:
        """A new Trajectory on ``times`` with ``take`` applied to each time series (positions,
        velocities, energy, state), the given ``masses``, the names and a copy of the
        parameters."""

        def series(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else take(arr)

        return Trajectory(
            times,
            positions=series(self.positions),
            velocities=series(self.velocities),
            masses=masses,
            energy=series(self.energy),
            state=series(self.state),
            state_names=self.state_names,
            body_names=self.body_names,
            parameters=dict(self.parameters),
        )

    # ---------------------------------------------------------------- physics summaries
    def energy_drift(self) -> float | None:
        """``max_t |E(t) - E(0)| / |E(0)|`` (largest over ensemble members), or None without energy.

        When ``E(0) == 0`` the relative drift is undefined; the absolute drift
        ``max_t |E(t) - E(0)|`` is returned instead.
        """
        if self.energy is None:
            return None
        e0 = self.energy[0]
        diff = np.abs(self.energy - e0)
        scale = np.abs(e0)
        rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), diff)
        value = float(np.max(rel))
        return value if math.isfinite(value) else None
