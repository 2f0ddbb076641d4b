"""The correction's size (physnode.fit.penalty) and the fit's correction_penalty."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from physnode.errors import InvalidInputError
from physnode.fit import Fitter
from physnode.fit.penalty import CHOICES, correction_size
from physnode.fit.shared import check_shared
from physnode.models.hybrid import HybridModel
from physnode.systems.nbody import NBody
from tests import reference

MASSES = np.array([0.8, 1.3, 1.0])


class Drag(nn.Module):
    """``-γ v`` for every body: a correction with a size known in closed form."""

    def __init__(self, gamma: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor(gamma, dtype=torch.float64))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return -self.gamma * y[..., y.shape[-1] // 2 :]


def _states() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q0, v0 = reference.bound_start(MASSES, 2, seed=0)
    run = reference.simulate(MASSES, q0, v0, np.linspace(0.0, 2.0, 21))
    n = len(run.times)
    y = np.concatenate([run.positions.reshape(n, -1), run.velocities.reshape(n, -1)], axis=1)
    return y, run.positions, run.velocities


def test_the_size_is_the_ratio_of_mean_squares_against_an_independent_force():
    y, q, v = _states()
    gamma = 0.3
    model = HybridModel(NBody(masses=tuple(MASSES)).set_learnable("masses"), Drag(gamma))
    prob = SimpleNamespace(times=np.array([0.0]), system=model.system, model=model)
    size = correction_size(prob, torch.as_tensor(y))
    accel = np.stack([reference.acceleration(qk, MASSES, 1.0) for qk in q])  # NumPy gravity
    expected = gamma**2 * np.mean(v**2) / np.mean(accel**2)
    # the same float64 sums by two codes: rounding only (~1e-16 per term over 126 terms)
    assert float(size.detach()) == pytest.approx(expected, rel=1e-12)
    size.backward()  # d size / d γ = 2 size / γ: the gradient reaches the correction
    assert float(model.correction.gamma.grad) == pytest.approx(2 * expected / gamma, rel=1e-12)
    # the physics' part is a fixed scale: the masses get no gradient from the penalty
    raw = model.system.params["masses"].raw
    assert raw.grad is None or float(raw.grad.abs().max()) == 0.0  # exact: no path at all


def test_the_penalty_is_for_hybrid_models_only():
    with pytest.raises(InvalidInputError, match="correction_penalty is for model='hybrid'"):
        Fitter(model="physics", correction_penalty=0.1).fit(None)
    with pytest.raises(InvalidInputError, match=r"correction_penalty must be one of \['auto'\]"):
        Fitter(model="hybrid", correction_penalty=-1.0).fit(None)
    with pytest.raises(InvalidInputError, match="give a validation window"):
        Fitter(model="hybrid", correction_penalty="auto", validation=0.0).fit(None)
    with pytest.raises(InvalidInputError, match="choosing the correction penalty"):
        check_shared(("correction",), {"model": "hybrid", "correction_penalty": "auto"})


def test_the_fit_s_loss_adds_the_weighted_size_along_the_solved_trajectory():
    _, q, v = _states()
    times = np.linspace(0.0, 2.0, 21)
    run = reference.simulate(MASSES, q[0], v[0], times, drag=0.1)
    data = reference.to_trajectory(run)
    fitter = Fitter(model="hybrid", correction="field", correction_penalty=0.5, epochs=0)
    prob = fitter._set_up(data, None)
    torch.manual_seed(1)
    with torch.no_grad():  # the zero-initialised network made to correct something
        for p in prob.model.correction.parameters():
            p.add_(0.1 * torch.randn_like(p))
    objective = fitter._objective
    m = 15
    ys = objective.solve(m).detach()
    misfit = float(objective.residual(ys, m).square().mean())
    size = float(correction_size(prob, ys).detach())
    assert size > 1e-6  # the network's correction is not nothing
    # the loss is the misfit plus 0.5 x the size, up to the solver's own determinism (the
    # same solve twice: equal to rounding)
    assert float(objective.loss(m).detach()) == pytest.approx(misfit + 0.5 * size, rel=1e-12)
    assert fitter.settings_["correction_penalty"] == 0.5  # stored, so a resume keeps it


@pytest.mark.slow  # ~30 s: four short hybrid fits (CI runs the slow tests)
def test_auto_fits_one_member_per_weight_and_keeps_the_lowest_validation_rmse():
    """``correction_penalty="auto"``: one member per weight of CHOICES on the default 0.2
    validation window; the reported fit is the member with the lowest validation RMSE, and it
    is the fit of that weight alone (bit for bit: the same operations in the same order), so
    the weight acted; the members differ, so it was not ignored either."""
    _, q, v = _states()
    times = np.linspace(0.0, 3.0, 31)
    data = reference.to_trajectory(reference.simulate(MASSES, q[0], v[0], times, drag=0.1))
    settings = dict(model="hybrid", correction="field", train_until=2.0, epochs=6,
                    lbfgs_steps=3, seed=2)  # fmt: skip
    chosen = Fitter(**settings, correction_penalty="auto").fit(data)
    found = chosen.candidates_
    assert found.penalties.tolist() == list(CHOICES) and found.score == "validation"
    assert found.best == int(np.argmin(found.validation_rmse))
    assert len(set(found.validation_rmse.tolist())) == len(CHOICES)  # the weight changed the fit
    assert chosen.correction_penalty_ == CHOICES[found.best]
    assert chosen.settings_["correction_penalty"] == "auto"
    alone = Fitter(**settings, correction_penalty=CHOICES[found.best], validation=0.2).fit(data)
    assert alone.candidates_ is None
    assert alone.validation_rmse_ == chosen.validation_rmse_
    np.testing.assert_array_equal(alone.params_["masses"], chosen.params_["masses"])
