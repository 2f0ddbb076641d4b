"""add_noise (reproducible, right statistics) and split (a clean partition in time)."""

from __future__ import annotations

import numpy as np
import pytest

from physnode.data import Trajectory, add_noise, split
from physnode.errors import InvalidInputError

N_SAMPLES = 20_000
# Statistical tolerances below: for n iid N(0, 1) draws the sample mean has standard error
# 1/sqrt(n) and the sample standard deviation 1/sqrt(2 n). With n = 20 000 these are 0.0071 and
# 0.0050; we allow 5 standard errors (two-sided chance of a false failure ~6e-7 per check, so the
# ~50 checks here are not tuned to the fixed seed), i.e. 0.035 on means and 0.025 on stds.
MEAN_TOL = 5 / np.sqrt(N_SAMPLES)
STD_TOL = 5 / np.sqrt(2 * N_SAMPLES)


def rms(x):
    return np.sqrt(np.mean(x**2, axis=0))


def test_same_seed_same_noise_and_input_untouched(particle):
    before = particle.positions.copy()
    a = add_noise(particle, 0.01, seed=42)
    b = add_noise(particle, 0.01, seed=42)
    c = add_noise(particle, 0.01, seed=43)
    assert np.array_equal(a.positions, b.positions)
    assert np.array_equal(a.velocities, b.velocities)
    assert not np.array_equal(a.positions, c.positions)
    assert np.array_equal(particle.positions, before)
    assert not np.array_equal(a.positions, particle.positions)
    # times, masses, energy untouched; energy stays the clean reference
    assert np.array_equal(a.times, particle.times)
    assert np.array_equal(a.masses, particle.masses)
    assert np.array_equal(a.energy, particle.energy)
    assert a.parameters["noise_std"] == 0.01
    assert a.parameters["noise_seed"] == 42 and a.parameters["noise_relative"] is True


def test_relative_noise_has_the_right_std_per_component(make_particle):
    clean = make_particle(n_times=N_SAMPLES, n_bodies=3, dim=2)
    std = 0.01
    noisy = add_noise(clean, std, seed=0)
    z_parts = []
    for name in ("positions", "velocities"):
        x = getattr(clean, name)
        z = (getattr(noisy, name) - x) / (std * rms(x))  # should be iid N(0, 1)
        z_parts.append(z.reshape(N_SAMPLES, -1))
        assert np.all(np.abs(z.mean(axis=0)) < MEAN_TOL), name
        assert np.all(np.abs(z.std(axis=0) - 1) < STD_TOL), name
    # Independent across components and between positions and velocities: for independent
    # N(0, 1) columns the sample correlation has standard error 1/sqrt(n); same 5-sigma bound.
    corr = np.corrcoef(np.concatenate(z_parts, axis=1), rowvar=False)
    off_diagonal = corr[~np.eye(corr.shape[0], dtype=bool)]
    assert np.all(np.abs(off_diagonal) < MEAN_TOL)


def test_absolute_noise_and_state_noise():
    t = np.linspace(0, 10, N_SAMPLES)
    state = np.stack([100 * np.sin(t), 0.01 * np.cos(t)], axis=1)  # very different scales
    clean = Trajectory(t, state=state, state_names=("big", "small"))

    noisy = add_noise(clean, 0.5, seed=1, relative=False)
    z = (noisy.state - state) / 0.5
    assert np.all(np.abs(z.std(axis=0) - 1) < STD_TOL)  # same absolute std for both
    assert noisy.parameters["noise_relative"] is False

    noisy = add_noise(clean, 0.02, seed=2)
    z = (noisy.state - state) / (0.02 * rms(state))
    assert np.all(np.abs(z.std(axis=0) - 1) < STD_TOL)  # each scaled by its own RMS


def test_ensemble_members_get_their_own_scale(make_ensemble):
    ens = make_ensemble(n_members=2, n_times=N_SAMPLES)
    ens.positions[:, 1] *= 1000.0  # member 1 is much larger
    noisy = add_noise(ens, 0.01, seed=3)
    z = (noisy.positions - ens.positions) / (0.01 * rms(ens.positions))
    assert np.all(np.abs(z.std(axis=0) - 1) < STD_TOL)


def test_zero_std_is_identity(particle):
    same = add_noise(particle, 0.0, seed=0)
    assert np.array_equal(same.positions, particle.positions)
    assert same.parameters["noise_std"] == 0.0


@pytest.mark.parametrize(
    ("std", "seed", "match"),
    [
        (-0.1, 0, "std must be >= 0"),
        (float("nan"), 0, "finite"),
        ("1%", 0, "finite number"),
        (0.01, -1, "seed must be an int"),
        (0.01, 1.5, "seed must be an int"),
        (0.01, None, "seed must be an int"),
    ],
)
def test_bad_noise_arguments(particle, std, seed, match):
    with pytest.raises(InvalidInputError, match=match):
        add_noise(particle, std, seed)


def test_noise_twice_refused(particle):
    noisy = add_noise(particle, 0.01, seed=0)
    with pytest.raises(InvalidInputError, match="already has noise"):
        add_noise(noisy, 0.01, seed=1)


def test_split_partitions_in_time(particle):
    train, test = split(particle, until=1.0)
    assert train.times[-1] <= 1.0 < test.times[0]
    assert train.n_times + test.n_times == particle.n_times
    assert np.array_equal(np.concatenate([train.times, test.times]), particle.times)
    assert np.array_equal(np.concatenate([train.positions, test.positions]), particle.positions)
    assert np.array_equal(np.concatenate([train.energy, test.energy]), particle.energy)
    assert np.array_equal(train.masses, particle.masses)
    assert train.parameters == particle.parameters
    # A sample exactly at `until` goes to train.
    train, test = split(particle, until=float(particle.times[10]))
    assert train.n_times == 11 and test.times[0] == particle.times[11]


def test_split_ensemble_and_state(ensemble, state_traj):
    train, test = split(ensemble, until=0.5)
    assert train.n_members == test.n_members == 4
    train, test = split(state_traj, until=2.5)
    assert train.state_names == ("theta", "omega")


@pytest.mark.parametrize(("until", "match"), [(-1.0, "empty train"), (2.0, "empty test")])
def test_split_empty_part_refused(particle, until, match):
    with pytest.raises(InvalidInputError, match=match):
        split(particle, until)


def test_split_bad_until(particle):
    with pytest.raises(InvalidInputError, match="finite"):
        split(particle, float("inf"))
    with pytest.raises(InvalidInputError, match="number"):
        split(particle, "soon")
