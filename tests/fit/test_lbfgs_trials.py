"""An L-BFGS trial point the solver cannot integrate ends the phase at its best point (one
warning) instead of failing the fit."""

from __future__ import annotations

import pytest
import torch

from physnode.errors import StepSizeTooSmallError
from physnode.fit.schedule import Cursor, LbfgsTrialWarning, Phase, Training


class _Wall:
    """A loss ``(p - 3)²`` that the "solver" cannot evaluate beyond ``p = wall``."""

    def __init__(self, p: torch.nn.Parameter, wall: float) -> None:
        self.p, self.wall, self.seen = p, wall, []

    def loss(self, horizon: int) -> torch.Tensor:
        value = float(self.p.detach())
        self.seen.append(value)
        if value > self.wall:
            raise StepSizeTooSmallError(f"step size fell below the floor at p={value:.3g}")
        return (self.p - 3.0).square().sum()


def _train(objective, p):
    adam = torch.optim.Adam([p], lr=0.1)
    return Training(objective, [Phase("lbfgs", 1, 20)], [p], adam, 0.1, lambda _: None,
                    lambda: False)  # fmt: skip


def test_an_unintegrable_trial_ends_the_phase_at_its_best_point():
    p = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    objective = _Wall(p, wall=2.5)  # L-BFGS's first trial from 0 is p = 6: beyond the wall
    with pytest.warns(LbfgsTrialWarning, match="could not integrate"):
        _train(objective, p).run(_cursor())
    assert any(v > 2.5 for v in objective.seen)  # it did try beyond the wall
    # the best point evaluated before the failure: a value it saw, with the lowest loss
    feasible = [v for v in objective.seen if v <= 2.5]
    assert float(p.detach()) == min(feasible, key=lambda v: (v - 3.0) ** 2)


def test_without_a_wall_lbfgs_converges_and_warns_nothing(recwarn):
    p = torch.nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    _train(_Wall(p, wall=1e9), p).run(_cursor())
    # a quadratic: L-BFGS with a Wolfe line search lands on the minimum to rounding
    assert abs(float(p.detach()) - 3.0) < 1e-8
    assert not [w for w in recwarn if issubclass(w.category, LbfgsTrialWarning)]


def test_a_start_that_cannot_be_integrated_raises_its_error(recwarn):
    # nothing was evaluated before the failure: there is no best point to end at, so the
    # solver's own error must surface (no warning that the fit "goes on")
    p = torch.nn.Parameter(torch.tensor([4.0], dtype=torch.float64))
    with pytest.raises(StepSizeTooSmallError, match="p=4"):
        _train(_Wall(p, wall=2.5), p).run(_cursor())
    assert not [w for w in recwarn if issubclass(w.category, LbfgsTrialWarning)]


def _cursor() -> Cursor:
    return Cursor(phase=0, step=0)
