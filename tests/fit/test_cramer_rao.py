"""The fit is statistically efficient: with positions and velocities observed at different
noise levels, the reported σ of the masses equals the Cramér–Rao bound, computed here
independently from central differences of the reference simulator (scipy DOP853)."""

from __future__ import annotations

import numpy as np
import pytest

from physnode.data import Trajectory
from physnode.fit import Fitter
from tests.reference import bound_start, simulate, to_trajectory

TRUE_MASSES = np.array([0.7, 1.6, 1.1])
TIMES = np.linspace(0.0, 2.0, 60)
#: noise per coordinate, relative to the kind's spread: velocities 6x noisier than positions,
#: so weighting both kinds alike (by their spread) would be far from efficient
NOISE = {"positions": 0.002, "velocities": 0.012}
SEEDS = 6


def _spread(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x - x.mean(axis=0)) ** 2)))


def _observations(theta: np.ndarray, q_shape: tuple[int, ...]) -> np.ndarray:
    """Positions and velocities at TIMES, flattened, for θ = (masses, q0, v0)."""
    n = len(TRUE_MASSES)
    size = int(np.prod(q_shape))
    q0, v0 = theta[n : n + size].reshape(q_shape), theta[n + size :].reshape(q_shape)
    run = simulate(theta[:n], q0, v0, TIMES)
    return np.concatenate([run.positions.reshape(len(TIMES), -1),
                           run.velocities.reshape(len(TIMES), -1)], axis=1)  # fmt: skip


def _cramer_rao(theta: np.ndarray, q_shape, sigma: np.ndarray) -> np.ndarray:
    """sqrt(diag(F⁻¹)) for the masses, F = Jᵀ Σ⁻¹ J with J by central differences (h = 1e-6:
    truncation ~h² and rounding ~1e-12/h both ~1e-6 relative, far below the 25 % asserted)."""
    cols = []
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = 1e-6
        cols.append(
            ((_observations(theta + e, q_shape) - _observations(theta - e, q_shape)) / 2e-6).ravel()
        )
    jac = np.stack(cols, axis=1) / np.tile(sigma, len(TIMES))[:, None]
    cov = np.linalg.inv(jac.T @ jac)
    return np.sqrt(np.diag(cov))[: len(TRUE_MASSES)]


@pytest.mark.slow  # 6 fits of a few seconds and 30 reference solves
def test_reported_sigma_meets_the_cramer_rao_bound():
    """Three bodies in 2-D, 60 samples on [0, 2], masses and start learned from masses of
    one. Asserted per seed and mass: reported σ within 25 % of the bound (the issue's
    target; the σ estimate itself fluctuates by ~1/sqrt(2·360) = 4 % through the estimated
    noise levels) and the error within 3σ; the estimated noise levels within 15 % (their
    own scatter ~4 %, their bias from the 15 fitted parameters ~2 %).

    Measured (seeds 0-5): σ / bound 0.92-1.02, RMS error / bound 0.9-1.2. Weighting both
    kinds by their spread instead (the fit before noise levels were estimated): σ / bound
    1.5-1.96 and RMS error / bound 1.8-2.9, so this test fails on that weighting."""
    q0, v0 = bound_start(TRUE_MASSES, 2, seed=2)
    clean = to_trajectory(simulate(TRUE_MASSES, q0, v0, TIMES))
    levels = {k: NOISE[k] * _spread(getattr(clean, k)) for k in NOISE}
    per_component = np.r_[
        np.full(q0.size, levels["positions"]), np.full(v0.size, levels["velocities"])
    ]
    bound = _cramer_rao(np.r_[TRUE_MASSES, q0.ravel(), v0.ravel()], q0.shape, per_component)
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        noisy = {
            k: getattr(clean, k) + levels[k] * rng.standard_normal(getattr(clean, k).shape)
            for k in NOISE
        }
        data = Trajectory(clean.times, **noisy, masses=clean.masses, parameters=clean.parameters)
        fit = Fitter(learn=("masses", "y0"), schedule="full", epochs=0, lbfgs_steps=200,
                     train_until=float(TIMES[-1])).fit(data)  # fmt: skip
        sigma = fit.uncertainties_["masses"]
        err = fit.params_["masses"] - TRUE_MASSES
        assert np.all(np.abs(sigma / bound - 1) < 0.25), (seed, sigma, bound)
        assert np.all(np.abs(err) < 3 * sigma), (seed, err, sigma)
        for kind, level in levels.items():  # the noise levels the finish estimated
            assert fit.noise_[kind] == pytest.approx(level, rel=0.15), (kind, fit.noise_)
