"""A reference N-body simulator written independently of :class:`physnode.systems.NBody`.

Fit tests must not fit the class to data that the same class produced: a wrong force law would
then be recovered perfectly. This module writes Newton's law of gravitation again, in plain
NumPy (an explicit loop over pairs, no softening), and integrates it with SciPy's DOP853 at
rtol = atol = 1e-12. Nothing here imports physnode except :func:`to_trajectory`, which only
packs the arrays into the container the fitter reads.

Units: any consistent set in which the gravitational constant is ``G``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp

#: DOP853 tolerances of every reference run: the data are exact to ~1e-12 relative, far below
#: any bound a fit test asserts (1e-4 and looser).
TOL = 1e-12

#: The figure-eight start (Chenciner & Montgomery 2000, 8 digits as published): G = m = 1.
#: Bodies 1 and 2 start at ±q, body 3 at the origin; v3 = -2 v1 = -2 v2 (zero momentum).
FIGURE_EIGHT_POSITIONS = np.array([[0.97000436, -0.24308753], [-0.97000436, 0.24308753], [0, 0]])
FIGURE_EIGHT_VELOCITIES = np.array([[-0.5, -0.5], [-0.5, -0.5], [1.0, 1.0]]) * [
    -0.93240737,
    -0.86473146,
]


@dataclass(frozen=True)
class Run:
    """One reference run: ``times`` ``(T,)``, ``positions`` and ``velocities`` ``(T, N, dim)``,
    ``masses`` ``(N,)``, the gravitational constant ``G``."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    masses: np.ndarray
    G: float
    stats: dict[str, Any] = field(default_factory=dict)


def acceleration(q: np.ndarray, masses: np.ndarray, G: float) -> np.ndarray:
    """Newton: ``a_i = Σ_{j≠i} G m_j (q_j - q_i) / |q_j - q_i|³``; ``q`` ``(N, dim)``."""
    a = np.zeros_like(q)
    n = len(masses)
    for i in range(n):
        for j in range(i + 1, n):
            d = q[j] - q[i]
            inv_r3 = 1.0 / (d @ d) ** 1.5
            a[i] += G * masses[j] * inv_r3 * d
            a[j] -= G * masses[i] * inv_r3 * d
    return a


def energy(q: np.ndarray, v: np.ndarray, masses: np.ndarray, G: float) -> float:
    """``Σ m v² / 2 - Σ_{i<j} G m_i m_j / r_ij`` of one state (``q``, ``v``: ``(N, dim)``)."""
    kinetic = 0.5 * float(np.sum(masses * np.sum(v * v, axis=-1)))
    potential = 0.0
    for i in range(len(masses)):
        for j in range(i + 1, len(masses)):
            potential -= G * masses[i] * masses[j] / float(np.linalg.norm(q[j] - q[i]))
    return kinetic + potential


def simulate(
    masses, q0, v0, times, G: float = 1.0, rtol: float = TOL, atol: float = TOL,
    drag: float = 0.0, extra: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> Run:  # fmt: skip
    """Integrate from ``q0``, ``v0`` (``(N, dim)``) and sample at ``times`` (``(T,)``, from the
    start time on). ``drag`` adds ``-drag * v_i`` to every acceleration, ``extra(q, v)``
    (``(N, dim)`` each) its ``(N, dim)`` result (physics a fit's model may lack)."""
    masses = np.asarray(masses, dtype=np.float64)
    q0 = np.asarray(q0, dtype=np.float64)
    v0 = np.asarray(v0, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    n, dim = q0.shape

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        del t  # autonomous
        q = y[: n * dim].reshape(n, dim)
        v = y[n * dim :]
        a = acceleration(q, masses, G).ravel() - drag * v
        if extra is not None:
            a = a + extra(q, v.reshape(n, dim)).ravel()
        return np.concatenate([v, a])

    sol = solve_ivp(
        rhs, (times[0], times[-1]), np.concatenate([q0.ravel(), v0.ravel()]),
        method="DOP853", t_eval=times, rtol=rtol, atol=atol,
    )  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"reference integration failed: {sol.message}")
    ys = sol.y.T
    return Run(
        times=times.copy(),
        positions=ys[:, : n * dim].reshape(len(times), n, dim),
        velocities=ys[:, n * dim :].reshape(len(times), n, dim),
        masses=masses,
        G=float(G),
        stats={"nfev": int(sol.nfev)},
    )


def bound_start(masses, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random bound start: positions uniform in the unit cube ``[-1, 1]^dim`` (no pair
    closer than 0.3), Gaussian velocities scaled to kinetic / |potential| energy = 1/2, centre
    of mass at rest at the origin (G = 1). Returns ``(q0, v0)``, each ``(N, dim)``."""
    masses = np.asarray(masses, dtype=np.float64)
    n = len(masses)
    rng = np.random.default_rng(seed)
    while True:
        q = rng.uniform(-1.0, 1.0, size=(n, dim))
        gaps = [np.linalg.norm(q[i] - q[j]) for i in range(n) for j in range(i)]
        if min(gaps) > 0.3:
            break
    v = rng.normal(size=(n, dim))
    total = masses.sum()
    q -= masses @ q / total
    v -= masses @ v / total
    kinetic = energy(q, v, masses, 0.0)  # G = 0: the kinetic part alone
    potential = energy(q, 0 * v, masses, 1.0)
    v *= np.sqrt(0.5 * -potential / kinetic)
    return q, v


def to_trajectory(run: Run, *, velocities: bool = True, **parameters: Any):
    """The run as a physnode :class:`~physnode.data.Trajectory` of the ``n-body`` system
    (``parameters`` are added to ``system`` and ``G``); ``velocities=False`` keeps positions
    only."""
    from physnode.data import Trajectory

    return Trajectory(
        run.times,
        positions=run.positions,
        velocities=run.velocities if velocities else None,
        masses=run.masses,
        parameters={"system": "n-body", "G": run.G, **parameters},
    )
