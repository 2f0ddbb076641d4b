"""The fit's step budget (physnode.fit.objective.STEP_BUDGET): a trial point that needs far
more steps than the fit's first solve is refused quickly instead of running to max_steps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from physnode.errors import MaxStepsReachedError, SolverError
from physnode.fit import Fitter
from physnode.fit.objective import MIN_STEP_BUDGET, STEP_BUDGET, Objective
from physnode.solver import solve
from tests import reference
from tests.distributed.datafiles import FIGURE_EIGHT_PERIOD


class Decay(nn.Module):
    """dy/dt = -k y: explicit RK methods need h < ~3.3/k, so k sets the step count."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(k, dtype=torch.float64))

    def forward(self, t, y):
        return -self.k * y


def _objective(model: nn.Module, times: np.ndarray) -> Objective:
    y0 = torch.ones(1, dtype=torch.float64)
    problem = SimpleNamespace(model=model, start=lambda: y0, times=times)
    return Objective(problem, method="dopri5", rtol=1e-7, atol=1e-9, grad="aca", device="cpu")


TIMES = np.linspace(0.0, 10.0, 11)


def test_a_trial_far_over_the_budget_is_refused_quickly():
    model = Decay(1.0)
    objective = _objective(model, TIMES)
    objective.solve(len(TIMES))  # the fit's first solve: the reference (a few dozen steps)
    with torch.no_grad():
        model.k.fill_(1e5)  # stability alone needs ~10 / (3.3e-5) = 3e5 steps
    with pytest.raises(MaxStepsReachedError, match="STEP_BUDGET") as caught:
        objective.solve(len(TIMES))
    assert isinstance(caught.value, SolverError)  # what L-BFGS and the finish reject
    # refused at the floor, MIN_STEP_BUDGET attempts (~1 s), not at the solver's own
    # max_steps of 500 000 (the reference is a few dozen steps: 20x is below the floor)
    assert f"more than {MIN_STEP_BUDGET} step attempts" in str(caught.value)


def test_within_the_budget_the_solve_is_the_plain_solve():
    model = Decay(1.0)
    objective = _objective(model, TIMES)
    objective.solve(len(TIMES))
    with torch.no_grad():
        model.k.fill_(300.0)  # ~10 / (3.3 / 300) ≈ 900 steps: more than the first, in budget
    t = torch.as_tensor(TIMES)
    ys = objective.solve(len(TIMES)).detach()
    plain = solve(model, torch.ones(1, dtype=torch.float64), t, rtol=1e-7, atol=1e-9)
    assert plain.stats.n_accepted > 10 * 30  # the check is of a solve far over the first one's
    assert torch.equal(ys, plain.ys.detach())  # the same solve: the budget only caps it
    # and it is the true solution exp(-k t) to the tolerance (atol 1e-9, a few steps' worth)
    exact = torch.exp(-300.0 * t)[:, None]
    assert float((ys - exact).abs().max()) < 1e-7


def test_the_budget_leaves_room_for_a_fit_started_far_off():
    # the figure-eight with masses 30 % apart: the start of ones and the truth must both be
    # well inside STEP_BUDGET x each other's step count, or fits would be refused en route
    t = torch.linspace(0.0, FIGURE_EIGHT_PERIOD, 50, dtype=torch.float64)
    q0, v0 = reference.FIGURE_EIGHT_POSITIONS, reference.FIGURE_EIGHT_VELOCITIES
    counts = []
    for masses in ((1.0, 1.0, 1.0), (0.8, 1.3, 1.0), (0.7, 1.0, 1.25)):
        data = reference.to_trajectory(reference.simulate(masses, q0, v0, t.numpy()))
        fitter = Fitter(epochs=0, lbfgs_steps=0, init_masses=list(masses))
        problem = fitter._set_up(data, None)
        sol = solve(problem.model, problem.start().detach(), t, rtol=1e-7, atol=1e-9)
        counts.append(sol.stats.n_accepted + sol.stats.n_rejected)
    assert max(counts) / min(counts) < STEP_BUDGET / 4  # 4x head-room on the documented 20x


def test_the_least_squares_finish_rejects_a_trial_over_the_budget(monkeypatch):
    # the finish's Levenberg-Marquardt trials get the same budget (on its own tolerances):
    # with the budget cut to 2x the first point's attempts (floor 10), masses 2.5x the
    # start (3x the steps over this quarter period, measured) are rejected as a huge residual,
    # while the
    # same trial solved without a reference is an ordinary finite one: the budget acted
    from physnode.fit import least_squares

    monkeypatch.setattr("physnode.fit.objective.STEP_BUDGET", 2)
    monkeypatch.setattr("physnode.fit.least_squares.FINISH_MIN_STEPS", 10)  # its own floor
    t = np.linspace(0.0, FIGURE_EIGHT_PERIOD / 4, 10)
    q0, v0 = reference.FIGURE_EIGHT_POSITIONS, reference.FIGURE_EIGHT_VELOCITIES
    data = reference.to_trajectory(reference.simulate((1.0, 1.0, 1.0), q0, v0, t))
    problem = Fitter(epochs=0, lbfgs_steps=0, init_masses=[1.2, 0.9, 1.1])._set_up(data, None)
    objective = Objective(problem, method="dop853", rtol=1e-8, atol=1e-10, grad="aca", device="cpu")

    def residuals():
        space = least_squares._Space(problem)
        return space, least_squares._Residuals(objective, space)

    space, budgeted = residuals()
    x0 = space.get()
    first, _ = budgeted.raw(x0)
    assert np.all(np.abs(first) < 1.0)  # the first point: an ordinary solve, the reference
    trial = x0.copy()
    n = len(space.raws[0].reshape(-1))  # the masses' raw (softplus) values come first
    trial[:n] = np.log(np.expm1(2.5 * np.logaddexp(0.0, x0[:n])))
    refused, _ = budgeted.raw(trial)
    assert np.all(refused == 1e100)  # the finish's rejection marker
    _, fresh = residuals()
    plain, _ = fresh.raw(trial)  # no reference yet: the same trial is solved in full
    assert np.all(np.isfinite(plain)) and np.abs(plain).max() < 1e100
