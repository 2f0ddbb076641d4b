"""The reference simulator of ``tests/reference.py`` against truths that need no simulator: the
two-body problem in closed form (Kepler's equation), Newton's third law, a force worked out by
hand, and the conservation of energy and momentum."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq

from tests.reference import acceleration, bound_start, energy, simulate, to_trajectory


def kepler_two_body(m1: float, m2: float, G: float, a: float, e: float, t: np.ndarray):
    """Both bodies of a bound two-body orbit that starts at pericentre, centre of mass at rest
    at the origin, in the x-y plane: positions and velocities ``(T, 2, 2)`` from Kepler's
    equation ``E - e sin E = n t`` (solved by bracketing, not by integrating)."""
    mu = G * (m1 + m2)
    n = math.sqrt(mu / a**3)  # mean motion
    big_e = np.array(
        [
            brentq(lambda x, m=m: x - e * math.sin(x) - m, m - 1.0, m + 1.0, xtol=1e-15)
            for m in n * t
        ]
    )
    b = a * math.sqrt(1 - e * e)
    r = np.stack([a * (np.cos(big_e) - e), b * np.sin(big_e)], axis=-1)
    rate = n / (1 - e * np.cos(big_e))  # dE/dt
    w = np.stack([-a * np.sin(big_e) * rate, b * np.cos(big_e) * rate], axis=-1)
    total = m1 + m2
    q = np.stack([-m2 / total * r, m1 / total * r], axis=1)
    v = np.stack([-m2 / total * w, m1 / total * w], axis=1)
    return q, v


def _rotation() -> np.ndarray:
    """A fixed 3-D rotation (the orbit's plane tilted out of x-y)."""
    rot, _ = np.linalg.qr(np.array([[1.0, 0.4, -0.3], [0.2, 1.0, 0.5], [-0.6, 0.1, 1.0]]))
    return rot


@pytest.mark.parametrize("e", [0.0, 0.6])  # circular, and eccentric enough to vary the speed
@pytest.mark.parametrize("dim", [2, 3])
def test_two_body_orbit_matches_keplers_equation(e: float, dim: int) -> None:
    m1, m2, G, a = 0.8, 1.7, 1.3, 1.5
    period = 2 * math.pi * math.sqrt(a**3 / (G * (m1 + m2)))
    t = np.linspace(0.0, period, 41)
    q, v = kepler_two_body(m1, m2, G, a, e, t)
    if dim == 3:  # the same orbit in a tilted plane
        rot = _rotation()
        q, v = (
            np.pad(q, ((0, 0), (0, 0), (0, 1))) @ rot.T,
            np.pad(v, ((0, 0), (0, 0), (0, 1))) @ rot.T,
        )
    run = simulate([m1, m2], q[0], v[0], t, G=G)
    assert run.positions.shape == (41, 2, dim) and run.velocities.shape == (41, 2, dim)
    # Measured over one period at rtol = atol = 1e-12: 6e-12 (e = 0) and, for e = 0.6 (fast
    # at pericentre), 7e-11 in position and 2e-10 in velocity. 1e-9 is 5x above the worst yet
    # far below any fit test's bound (1e-4).
    np.testing.assert_allclose(run.positions, q, rtol=0, atol=1e-9)
    np.testing.assert_allclose(run.velocities, v, rtol=0, atol=1e-9)
    # After a full period the orbit closes: back at the start, to the same 1e-9.
    np.testing.assert_allclose(run.positions[-1], q[0], rtol=0, atol=1e-9)


def test_force_by_hand_and_newtons_third_law() -> None:
    # Two bodies 2 apart on the x-axis, G = 3: |a1| = G m2 / r² = 3 * 5 / 4, |a2| = 3 * 2 / 4.
    q = np.array([[0.0, 0.0], [2.0, 0.0]])
    acc = acceleration(q, np.array([2.0, 5.0]), 3.0)
    # a handful of float64 operations on O(1) numbers: a few ulps
    np.testing.assert_allclose(acc, [[3.75, 0.0], [-1.5, 0.0]], rtol=0, atol=1e-15)
    rng = np.random.default_rng(4)
    masses = rng.uniform(0.5, 2.0, size=5)
    q = rng.normal(size=(5, 3))
    # Σ m a = 0: the pair forces cancel; rounding of sums of O(10) terms: ~1e-14.
    np.testing.assert_allclose(masses @ acceleration(q, masses, 1.0), 0.0, atol=1e-12)
    # m a = -∇U, with U from the energy function (central differences, h = 1e-6: truncation
    # ~h² |U'''| ~ 1e-11, rounding ~1e-16 / h = 1e-10, so agreement to 1e-8 is a tight check).
    h = 1e-6
    grad = np.zeros_like(q)
    for i in range(5):
        for d in range(3):
            step = np.zeros_like(q)
            step[i, d] = h
            grad[i, d] = (
                energy(q + step, 0 * q, masses, 1.0) - energy(q - step, 0 * q, masses, 1.0)
            ) / (2 * h)
    np.testing.assert_allclose(masses[:, None] * acceleration(q, masses, 1.0), -grad, atol=1e-8)


def test_three_body_conserves_energy_and_momentum() -> None:
    masses = np.array([0.7, 1.6, 1.1])
    q0, v0 = bound_start(masses, 3, seed=9)
    run = simulate(masses, q0, v0, np.linspace(0.0, 10.0, 101))
    e = np.array(
        [energy(q, v, masses, 1.0) for q, v in zip(run.positions, run.velocities, strict=True)]
    )
    # The start is bound (virial ratio 1/2 gives E = U / 2 < 0).
    assert e[0] < 0
    # Measured |ΔE / E| up to t = 10 (several crossing times, ~200 steps): 1.1e-11. 1e-9 is
    # 100x above it, a bound a force or energy formula off by even 1e-9 relative would break.
    assert np.abs(e / e[0] - 1).max() < 1e-9
    momentum = np.einsum("n,tnd->td", masses, run.velocities)
    # Zero at the start up to rounding, and every Runge–Kutta stage conserves it exactly in
    # exact arithmetic (the pair forces cancel): measured 7e-16; 1e-12 is rounding headroom.
    np.testing.assert_allclose(momentum, 0.0, atol=1e-12)


def test_to_trajectory_packs_a_fit_input() -> None:
    masses = np.array([1.0, 2.0])
    q0, v0 = bound_start(masses, 2, seed=0)
    run = simulate(masses, q0, v0, np.linspace(0.0, 1.0, 5), G=0.5)
    traj = to_trajectory(run, preset="test")
    assert traj.parameters == {"system": "n-body", "G": 0.5, "preset": "test"}
    assert traj.positions.shape == (5, 2, 2) and traj.masses.tolist() == [1.0, 2.0]
    assert to_trajectory(run, velocities=False).velocities is None
