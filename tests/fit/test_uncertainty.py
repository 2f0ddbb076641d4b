"""Parameters the data cannot determine are reported as undetermined, never with a finite σ."""

from __future__ import annotations

import numpy as np

from physnode.data import Trajectory
from physnode.fit import Fitter
from physnode.fit.uncertainty import undetermined_columns
from tests.reference import (
    FIGURE_EIGHT_POSITIONS,
    FIGURE_EIGHT_VELOCITIES,
    simulate,
    to_trajectory,
)


def test_zero_and_collinear_columns_are_undetermined() -> None:
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=(50, 1)) for _ in range(3))
    values = np.ones(4)
    # a well-posed pair, then a column the residual does not depend on
    jac = np.hstack([a, b, np.zeros((50, 1)), 3.0 * b + 1e-3 * c])
    assert undetermined_columns(jac[:, :2], values[:2]).tolist() == [False, False]
    assert undetermined_columns(jac[:, :3], values[:3]).tolist() == [False, False, True]
    # exactly collinear with b: b and its copy cannot be told apart, a still can
    dup = np.hstack([a, b, -2.0 * b])
    assert undetermined_columns(dup, values[:3]).tolist() == [False, True, True]
    # nearly but not exactly collinear (1e-3 of a third direction): still determined
    assert undetermined_columns(jac[:, [0, 1, 3]], values[:3]).tolist() == [False] * 3


def test_a_lone_body_does_not_determine_its_mass() -> None:
    """One free body moves in a straight line whatever its mass (data written analytically,
    not by physnode's N-body code): its mass is undetermined, σ = inf, not a number."""
    t = np.linspace(0.0, 2.0, 40)
    q = np.stack([0.3 + 0.5 * t, -0.1 + 0.2 * t], axis=-1)[:, None, :]
    v = np.broadcast_to(np.array([0.5, 0.2]), (40, 1, 2)).copy()
    data = Trajectory(t, positions=q, velocities=v, masses=np.array([2.0]),
                      parameters={"system": "n-body", "G": 1.0})  # fmt: skip
    fitter = Fitter(epochs=2, lbfgs_steps=0).fit(data)
    assert fitter.undetermined_ == ["masses[0]"]
    assert np.isinf(fitter.uncertainties_["masses"]).all()


def test_degenerate_combination_is_undetermined() -> None:
    """With G and the masses both learned only the products G·m_j enter the motion: neither G
    nor any mass is determined on its own (data: half a figure-eight period from the reference
    simulator, independent of physnode's)."""
    t = np.linspace(0.0, 0.5 * 6.325914012016, 60)
    run = simulate(np.ones(3), FIGURE_EIGHT_POSITIONS, FIGURE_EIGHT_VELOCITIES, t)
    data = to_trajectory(run)
    fitter = Fitter(learn=("masses", "G"), epochs=2, lbfgs_steps=0).fit(data)
    assert sorted(fitter.undetermined_) == ["G", "masses[0]", "masses[1]", "masses[2]"]
    assert all(np.isinf(s).all() for s in fitter.uncertainties_.values())
