"""The Trajectory container: layout conversions and constructor validation."""

from __future__ import annotations

import numpy as np
import pytest

from physnode.data import Trajectory
from physnode.errors import InvalidInputError, InvalidTimeGridError


def test_to_state_is_positions_then_velocities_body_major():
    pos = np.array([[[1.0, 2.0], [3.0, 4.0]]])  # T=1, N=2, D=2
    vel = np.array([[[5.0, 6.0], [7.0, 8.0]]])
    traj = Trajectory(np.array([0.0]), positions=pos, velocities=vel)
    # x1, y1, x2, y2, vx1, vy1, vx2, vy2
    assert np.array_equal(traj.to_state(), [[1, 2, 3, 4, 5, 6, 7, 8]])
    assert traj.to_state().dtype == np.float64


def test_from_state_inverts_to_state_exactly(particle, ensemble):
    y = particle.to_state()
    back = Trajectory.from_state(particle.times, y, n_bodies=3, dim=2, masses=particle.masses)
    assert np.array_equal(back.positions, particle.positions)
    assert np.array_equal(back.velocities, particle.velocities)
    assert np.array_equal(back.to_state(), y)

    ye = ensemble.to_state()
    assert ye.shape == (30, 4, 2 * 3 * 3)
    back = Trajectory.from_state(ensemble.times, ye, n_bodies=3, dim=3)
    assert back.n_members == 4
    assert np.array_equal(back.positions, ensemble.positions)
    assert np.array_equal(back.velocities, ensemble.velocities)


def test_from_state_rejects_wrong_width():
    with pytest.raises(InvalidInputError, match=r"\(T, 12\)"):
        Trajectory.from_state(np.arange(3.0), np.zeros((3, 11)), n_bodies=3, dim=2)


def test_sizes(particle, ensemble, state_traj):
    assert (particle.n_times, particle.n_bodies, particle.dim, particle.n_members) == (
        50,
        3,
        2,
        None,
    )
    assert (ensemble.n_times, ensemble.n_bodies, ensemble.dim, ensemble.n_members) == (30, 3, 3, 4)
    assert ensemble.is_ensemble and not particle.is_ensemble
    assert state_traj.n_bodies is None and state_traj.dim is None
    assert np.array_equal(state_traj.to_state(), state_traj.state)


def test_torch_tensor_accepted():
    import torch

    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    y = torch.ones(5, 4, dtype=torch.float64, requires_grad=True)
    traj = Trajectory.from_state(t, y, n_bodies=1, dim=2)
    assert traj.positions.dtype == np.float64
    assert traj.positions.shape == (5, 1, 2)


@pytest.mark.parametrize(
    ("times", "match"),
    [
        (np.array([0.0, 1.0, 1.0]), "strictly increasing"),
        (np.array([0.0, 2.0, 1.0]), "strictly increasing"),
        (np.array([0.0, np.nan, 1.0]), "not finite"),
        (np.zeros((3, 1)), "1-D"),
        (np.array([]), "empty"),
        (np.array(["a", "b", "c"]), "real numbers"),
    ],
)
def test_bad_times(times, match):
    with pytest.raises(InvalidTimeGridError, match=match):
        Trajectory(times, state=np.zeros((max(len(times), 1), 1)))


def _kw(**over):
    kw = {
        "positions": np.zeros((4, 2, 3)),
        "velocities": np.zeros((4, 2, 3)),
        "masses": np.ones(2),
        "energy": np.zeros(4),
    }
    kw.update(over)
    return kw


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"positions": None, "velocities": None, "masses": None}, "needs positions"),
        ({"positions": np.zeros((5, 2, 3))}, "positions has 5 samples"),
        ({"positions": np.zeros((4, 6))}, "positions must have 3 dimensions"),
        ({"velocities": np.zeros((4, 3, 3))}, "velocities has shape"),
        ({"masses": np.ones(3)}, "masses has shape"),
        ({"masses": -np.ones(2)}, "non-negative"),
        ({"masses": np.array([1.0, np.inf])}, "masses holds NaN or inf"),
        ({"energy": np.zeros(5)}, "energy has"),
        ({"positions": np.full((4, 2, 3), np.nan)}, r"positions holds NaN or inf .*\[0, 0, 0\]"),
        ({"body_names": ("a", "b", "c")}, "body_names has 3 entries"),
        ({"body_names": "ab"}, "not one string"),
        ({"parameters": [1, 2]}, "parameters must be a dict"),
        ({"parameters": {1: 2}}, "parameter names must be strings"),
        ({"state_names": ("x",)}, "state_names given without state"),
        ({"state": np.zeros((4, 2, 1))}, "disagree on the ensemble axis"),
    ],
)
def test_constructor_names_the_problem(over, match):
    with pytest.raises(InvalidInputError, match=match):
        Trajectory(np.arange(4.0), **_kw(**over))


def test_velocities_without_positions_refused():
    with pytest.raises(InvalidInputError, match="velocities given without positions"):
        Trajectory(np.arange(2.0), state=np.zeros((2, 1)), velocities=np.zeros((2, 1, 1)))


def test_state_names_length_checked():
    with pytest.raises(InvalidInputError, match="state_names has 1 entries"):
        Trajectory(np.arange(2.0), state=np.zeros((2, 2)), state_names=("x",))


def test_ensemble_masses_and_energy_shapes(ensemble):
    kw = dict(positions=ensemble.positions, velocities=ensemble.velocities)
    Trajectory(ensemble.times, masses=np.ones((4, 3)), energy=np.zeros((30, 4)), **kw)
    with pytest.raises(InvalidInputError, match="masses has shape"):
        Trajectory(ensemble.times, masses=np.ones((3, 4)), **kw)
    with pytest.raises(InvalidInputError, match="energy has shape"):
        Trajectory(ensemble.times, energy=np.zeros(30), **kw)


def test_position_only_trajectory_has_no_full_state(particle):
    traj = Trajectory(particle.times, positions=particle.positions)
    with pytest.raises(InvalidInputError, match="no velocities"):
        traj.to_state()


def test_select_and_member(particle, ensemble):
    first = particle.select(slice(0, 10))
    assert first.n_times == 10
    assert np.array_equal(first.positions, particle.positions[:10])
    assert first.parameters == particle.parameters
    assert first.parameters is not particle.parameters
    m2 = ensemble.member(2)
    assert not m2.is_ensemble
    assert np.array_equal(m2.positions, ensemble.positions[:, 2])
    assert np.array_equal(m2.energy, ensemble.energy[:, 2])
    with pytest.raises(InvalidInputError, match="out of range"):
        ensemble.member(4)
    with pytest.raises(InvalidInputError, match="needs an ensemble"):
        particle.member(0)


def test_energy_drift(particle, state_traj):
    # energy = E0 + 1e-12 sin(t), t in [0, 2]: max |E - E0| = 1e-12 * sin(pi/2) (t reaches pi/2)
    expected = 1e-12 / 1.2871419917663258
    # rel=1e-3: the sampled grid (50 points on [0, 2]) hits t = pi/2 only to within 0.02, and
    # 1 - cos(0.02) ~ 2e-4 of the peak.
    assert particle.energy_drift() == pytest.approx(expected, rel=1e-3)
    zero = Trajectory(np.arange(3.0), state=np.zeros((3, 1)), energy=np.array([0.0, 1e-3, -2e-3]))
    assert zero.energy_drift() == 2e-3  # E0 == 0: absolute drift, exact arithmetic here
    assert Trajectory(np.arange(2.0), state=np.zeros((2, 1))).energy_drift() is None
    assert state_traj.energy_drift() >= 0


def test_repr_is_a_summary(particle, ensemble, state_traj):
    assert repr(particle) == (
        "Trajectory(T=50, t=[0, 2], bodies=3, dim=2, velocities, masses, energy, system='n-body')"
    )
    assert "members=4" in repr(ensemble)
    assert "state=2" in repr(state_traj)
