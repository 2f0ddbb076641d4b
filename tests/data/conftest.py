"""Small synthetic trajectories shared by the data-layer tests (no solver needed)."""

from __future__ import annotations

import numpy as np
import pytest

from physnode.data import Trajectory


def make_particle(n_times: int = 50, n_bodies: int = 3, dim: int = 2, seed: int = 0) -> Trajectory:
    """Bodies on circles of different radii and speeds: smooth, every value distinct."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 2.0, n_times)
    radius = rng.uniform(0.5, 2.0, size=(n_bodies, 1))
    omega = rng.uniform(0.5, 3.0, size=(n_bodies, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_bodies, 1))
    angle = omega[None] * t[:, None, None] + phase[None]  # (T, N, 1)
    pos = np.zeros((n_times, n_bodies, dim))
    vel = np.zeros((n_times, n_bodies, dim))
    pos[..., 0:1] = radius * np.cos(angle)
    vel[..., 0:1] = -radius * omega * np.sin(angle)
    if dim > 1:
        pos[..., 1:2] = radius * np.sin(angle)
        vel[..., 1:2] = radius * omega * np.cos(angle)
    if dim > 2:
        pos[..., 2:] = rng.normal(size=(1, n_bodies, dim - 2))
    energy = -1.2871419917663258 + 1e-12 * np.sin(t)
    return Trajectory(
        t,
        positions=pos,
        velocities=vel,
        masses=rng.uniform(0.5, 2.0, size=n_bodies),
        energy=energy,
        body_names=tuple(f"body{i}" for i in range(n_bodies)),
        parameters={
            "system": "n-body",
            "G": 1.0,
            "preset": "figure-eight",
            "method": "dopri5",
            "rtol": 1e-9,
            "atol": 1e-11,
            "seed": 7,
            "noise_std": 0.0,
            "adaptive": True,
            "softening": None,
            "t_span": [0.0, 2.0],
        },
    )


def make_state(n_times: int = 40) -> Trajectory:
    """A small-angle pendulum: state (theta, omega)."""
    t = np.linspace(0.0, 5.0, n_times)
    theta = 0.1 * np.cos(t)
    omega = -0.1 * np.sin(t)
    return Trajectory(
        t,
        state=np.stack([theta, omega], axis=1),
        state_names=("theta", "omega"),
        energy=0.5 * omega**2 + 0.5 * theta**2,
        parameters={"system": "pendulum", "g_over_l": 1.0},
    )


def make_ensemble(n_members: int = 4, n_times: int = 30, per_member_masses: bool = False):
    """B members of a 3-D three-body system on one time grid: arrays (T, B, N, D)."""
    members = [make_particle(n_times, 3, 3, seed=b) for b in range(n_members)]
    masses = np.stack([m.masses for m in members]) if per_member_masses else members[0].masses
    return Trajectory(
        members[0].times,
        positions=np.stack([m.positions for m in members], axis=1),
        velocities=np.stack([m.velocities for m in members], axis=1),
        masses=masses,
        energy=np.stack([m.energy for m in members], axis=1),
        body_names=("a", "b", "c"),
        parameters={"system": "n-body", "G": 1.0, "ensemble_seed": 3},
    )


@pytest.fixture
def particle() -> Trajectory:
    return make_particle()


@pytest.fixture
def state_traj() -> Trajectory:
    return make_state()


@pytest.fixture
def ensemble() -> Trajectory:
    return make_ensemble()


@pytest.fixture(name="make_particle")
def _make_particle_fixture():
    return make_particle


@pytest.fixture(name="make_ensemble")
def _make_ensemble_fixture():
    return make_ensemble
