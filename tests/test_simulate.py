"""``simulate`` refuses settings that would be ignored and records only those that acted."""

from __future__ import annotations

import pytest

from physnode.errors import InvalidInputError
from physnode.simulate import simulate


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"system": "pendulum", "preset": "pythagorean"}, "preset applies to the three-body"),
        ({"system": "lorenz", "dim": 3}, "dim applies to"),
        ({"system": "three-body", "bodies": 4}, "bodies applies to the n-body"),
        ({"system": "pendulum", "step_size": 0.01}, "step_size applies to fixed-step"),
    ],
)
def test_ignored_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        simulate(points=5, t_end=0.1, **kwargs)


def test_recorded_settings_are_those_that_acted() -> None:
    fixed, _ = simulate("pendulum", method="rk4", step_size=0.01, points=5, t_end=0.1)
    assert fixed.parameters["step_size"] == 0.01
    assert "rtol" not in fixed.parameters and "atol" not in fixed.parameters
    symplectic, _ = simulate("three-body", method="yoshida4", points=5, periods=0.01)
    assert "rtol" not in symplectic.parameters and symplectic.parameters["step_size"] > 0
    adaptive, _ = simulate("pendulum", rtol=1e-9, atol=1e-10, points=5, t_end=0.1)
    assert (adaptive.parameters["rtol"], adaptive.parameters["atol"]) == (1e-9, 1e-10)
    assert "step_size" not in adaptive.parameters


def test_masses_replace_the_start_s() -> None:
    """``masses`` act: the file records them, and the motion from the same start follows
    them (by t = 0.1 period the bodies have moved apart from the unit-mass run by far more
    than the 1e-13 solver tolerance)."""
    import numpy as np

    traj, _ = simulate("three-body", masses=(0.8, 1.3, 1.0), points=5, periods=0.1)
    unit, _ = simulate("three-body", points=5, periods=0.1)
    np.testing.assert_array_equal(traj.masses, [0.8, 1.3, 1.0])
    np.testing.assert_array_equal(traj.positions[0], unit.positions[0])  # same start
    assert np.abs(traj.positions[-1] - unit.positions[-1]).max() > 1e-3
    with pytest.raises(InvalidInputError, match="one per body"):
        simulate("n-body", bodies=4, masses=(1.0, 2.0), points=5, t_end=0.1)
    with pytest.raises(InvalidInputError, match="positive"):
        simulate("three-body", masses=(1.0, -1.0, 1.0), points=5, periods=0.01)
    with pytest.raises(InvalidInputError, match="masses applies to"):
        simulate("lorenz", masses=(1.0,), points=5, t_end=0.1)
