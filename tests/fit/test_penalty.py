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


@pytest.mark.slow  # ~45 s: six short hybrid fits (CI runs the slow tests)
def test_auto_keeps_the_lowest_validation_rmse_then_fits_that_weight_on_the_whole_window():
    """``correction_penalty="auto"``: one member per weight of CHOICES on the default 0.2
    validation window; the weight of the lowest validation RMSE is chosen, then fitted once
    more on the whole training window, and that fit is reported. Each is checked against a fit
    of that weight alone (bit for bit: the same operations in the same order), so the weight
    acted, the members differ (it was not ignored), and the retrain held nothing out."""
    _, q, v = _states()
    times = np.linspace(0.0, 3.0, 31)
    data = reference.to_trajectory(reference.simulate(MASSES, q[0], v[0], times, drag=0.1))
    settings = dict(model="hybrid", correction="field", train_until=2.0, epochs=6,
                    lbfgs_steps=3, seed=2)  # fmt: skip
    chosen = Fitter(**settings, correction_penalty="auto").fit(data)
    found = chosen.candidates_
    assert found.penalties.tolist() == list(CHOICES) and found.score == "validation"
    assert found.best == int(np.argmin(found.validation_rmse)) and found.retrained
    assert len(set(found.validation_rmse.tolist())) == len(CHOICES)  # the weight changed the fit
    weight = CHOICES[found.best]
    assert chosen.correction_penalty_ == weight
    assert chosen.settings_["correction_penalty"] == "auto"
    member = Fitter(**settings, correction_penalty=weight, validation=0.2).fit(data)
    assert member.validation_rmse_ == found.validation_rmse[found.best]  # the one that chose
    whole = Fitter(**settings, correction_penalty=weight).fit(data)  # validation 0: all of it
    assert whole.candidates_ is None and chosen.validation_rmse_ is None
    assert chosen.fit_until_ == whole.fit_until_ == 2.0
    np.testing.assert_array_equal(whole.params_["masses"], chosen.params_["masses"])
    assert whole.train_rmse_ == chosen.train_rmse_
    assert not np.array_equal(member.params_["masses"], chosen.params_["masses"])


def test_the_retrain_follows_a_choice_made_on_a_validation_window_with_one_seed_each():
    """Which multi-fits end with a retrain (``ensemble._retrains``): only a choice among
    kinds or weights, on a validation window, with one seed per choice, and not when asked
    not to."""
    from physnode.fit.ensemble import Variant, _retrains

    def fitter(retrain=True, validation=0.2, ensemble=1):
        return SimpleNamespace(retrain=retrain, validation_=validation, ensemble=ensemble)

    weights = [Variant(0, "field", w) for w in CHOICES]
    kinds = [Variant(0, "field"), Variant(0, "pairwise")]
    seeds = [Variant(0, "field"), Variant(1, "field")]
    assert _retrains(fitter(), weights) and _retrains(fitter(), kinds)
    assert not _retrains(fitter(retrain=False), weights)
    assert not _retrains(fitter(validation=0.0), kinds)  # chosen on the training RMSE
    assert not _retrains(fitter(ensemble=2), weights + seeds)  # the window chose the seed
    assert not _retrains(fitter(), seeds)  # nothing but seeds: no kind or weight chosen


@pytest.mark.slow  # ~35 s: nine tiny hybrid fits (CI runs the slow tests)
def test_a_fit_stopped_in_its_retrain_resumes_exactly():
    """Stopped inside the retrain (after the three members) and resumed, the result is the
    straight run's bit for bit (deterministic CPU arithmetic in the same order)."""
    _, q, v = _states()
    data = reference.to_trajectory(
        reference.simulate(MASSES, q[0], v[0], np.linspace(0.0, 2.0, 21), drag=0.1)
    )
    settings = dict(model="hybrid", correction="field", train_until=1.0, epochs=2,
                    lbfgs_steps=1, schedule="full", correction_penalty="auto")  # fmt: skip
    polls = []
    straight = Fitter(**settings).fit(data, should_stop=lambda: polls.append(1) and False)
    calls = iter(range(10_000))
    last = len(polls) - 2  # a poll inside the last fit: the retrain
    first = Fitter(**settings).fit(data, should_stop=lambda: next(calls) >= last)
    assert first.interrupted_ and f"member/{len(CHOICES)}/epoch" in first.state_
    resumed = Fitter(**settings).fit(data, resume=first.state_)
    assert resumed.candidates_.retrained
    np.testing.assert_array_equal(resumed.params_["masses"], straight.params_["masses"])
    assert resumed.train_rmse_ == straight.train_rmse_
