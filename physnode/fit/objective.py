"""The fit's solver settings applied to one problem: solve it, score it.

This is the small public interface that the schedule, multiple shooting and the uncertainties
share; none of them needs the :class:`~physnode.fit.Fitter` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from physnode.errors import MaxStepsReachedError
from physnode.fit.penalty import correction_size
from physnode.fit.problem import FitProblem
from physnode.solver import api
from physnode.solver.api import PER_SAMPLE_GRADS
from physnode.solver.stats import SolverStats
from physnode.solver.tableaus import RK_METHODS

#: A fit's solve may take at most ``STEP_BUDGET`` times the step attempts that the fit's first
#: solve over the same times took (and never fewer than :data:`MIN_STEP_BUDGET`). A trial point
#: that needs far more steps than the start did has moved into a close encounter, a blow-up or
#: a stiff region; without a budget one such solve runs to the solver's ``max_steps`` (500 000
#: attempts: minutes) and cannot be interrupted. Past the budget the solve raises
#: :class:`~physnode.errors.MaxStepsReachedError`: an L-BFGS line search and the
#: least-squares finish reject the trial point, an Adam step fails the fit with that message.
#: 20x leaves room for the steps to grow as the parameters move (the masses of a fit started
#: 30 % off change the step count by well under 2x, tests/fit/test_objective.py).
STEP_BUDGET = 20
MIN_STEP_BUDGET = 20_000


class StepBudget:
    """The step attempts of the first solve over each set of times (and shape and tolerances):
    the budget of the later ones (:data:`STEP_BUDGET` times as many, at least ``floor``)."""

    def __init__(self, floor: int = MIN_STEP_BUDGET) -> None:
        self.reference: dict[tuple, int] = {}
        self.floor = floor

    @staticmethod
    def key(y0: torch.Tensor, t: torch.Tensor, rtol: float, atol: float) -> tuple:
        return (float(t[0]), float(t[-1]), len(t), tuple(y0.shape), rtol, atol)

    def limit(self, key: tuple) -> int | None:
        """The most step attempts a solve over ``key`` may take; ``None`` for the first."""
        ref = self.reference.get(key)
        return None if ref is None else max(self.floor, STEP_BUDGET * ref)

    def record(self, key: tuple, stats: SolverStats) -> None:
        self.reference.setdefault(key, stats.n_accepted + stats.n_rejected)


@dataclass(frozen=True)
class Objective:
    """A :class:`FitProblem` under fixed solver settings.

    Args:
        problem: the model, its start and the observations.
        method, rtol, atol, grad: the solver's method, tolerances and gradient method.
        device: where the time grids are made (that of the problem's tensors).
        penalty: the weight of the correction's size (:mod:`physnode.fit.penalty`) in the
            loss; 0: none.
    """

    problem: FitProblem
    method: str
    rtol: float
    atol: float
    grad: str
    device: str
    penalty: float = 0.0
    budget: StepBudget = field(default_factory=StepBudget, compare=False, repr=False)

    def integrate(
        self,
        y0: torch.Tensor,
        t: torch.Tensor,
        *,
        grad: str | None = None,
        rtol: float | None = None,
        atol: float | None = None,
    ) -> torch.Tensor:
        """The model's solution from ``y0`` (shape ``(..., D)``) at times ``t`` (shape ``(L,)``):
        shape ``(L, ..., D)``. ``grad``, ``rtol``, ``atol`` override the settings when given.

        A batch ``(B, D)`` of independent starts (multiple shooting's segments) is solved with
        per-sample steps (each start its own steps, ``options={"steps": "per-sample"}``)
        where the method is adaptive and the gradient method supports them (``aca``,
        ``backprop``); else with one shared step sequence, within the :data:`STEP_BUDGET`."""
        grad = grad or self.grad
        per_sample = y0.ndim == 2 and grad in PER_SAMPLE_GRADS and RK_METHODS[self.method].adaptive
        settings = {"rtol": rtol or self.rtol, "atol": atol or self.atol, "grad": grad}
        if per_sample:
            options = {"steps": "per-sample", "sample_failure": "raise"}
            return self._solve(y0, t, settings, options).ys
        key = self.budget.key(y0, t, settings["rtol"], settings["atol"])
        limit = self.budget.limit(key)
        try:
            sol = self._solve(y0, t, settings, None if limit is None else {"max_steps": limit})
        except MaxStepsReachedError as exc:
            if limit is None:
                raise
            raise MaxStepsReachedError(
                f"a fit solve over t in [{key[0]:.6g}, {key[1]:.6g}] needed more than {limit} "
                f"step attempts (the fit's budget: {STEP_BUDGET}x the "
                f"{self.budget.reference[key]} its first solve there took, at least "
                f"{MIN_STEP_BUDGET}): the parameters tried have moved into a close "
                "encounter, a blow-up or a stiff region (physnode.fit.objective.STEP_BUDGET); "
                "start nearer, lower lr, or shorten the training window"
            ) from exc
        self.budget.record(key, sol.stats)
        return sol.ys

    def _solve(self, y0: torch.Tensor, t: torch.Tensor, settings: dict, options: dict | None):
        return api.solve(self.problem.model, y0, t, method=self.method, options=options, **settings)

    def solve(
        self,
        m: int,
        *,
        grad: str | None = None,
        rtol: float | None = None,
        atol: float | None = None,
    ) -> torch.Tensor:
        """The solution from the problem's start at its first ``m`` data times: ``(m, D)``."""
        t = torch.as_tensor(self.problem.times[:m], dtype=torch.float64, device=self.device)
        return self.integrate(self.problem.start(), t, grad=grad, rtol=rtol, atol=atol)

    def residual(self, ys: torch.Tensor, m: int) -> torch.Tensor:
        """Scaled misfit of ``ys`` at the first ``m`` data times (:meth:`FitProblem.residual`)."""
        return self.problem.residual(ys, m)

    def loss(self, m: int) -> torch.Tensor:
        """Mean squared scaled misfit over the first ``m`` data times plus the penalty on
        the correction's size along them (a scalar)."""
        ys = self.solve(m)
        return self.residual(ys, m).square().mean() + self.correction_term(ys)

    def correction_term(self, ys: torch.Tensor) -> torch.Tensor | float:
        """``penalty`` times the correction's size at the solved states ``ys`` ``(..., D)``
        (held fixed: the penalty moves the correction, not the trajectory); 0 without one."""
        if not self.penalty:
            return 0.0
        return self.penalty * correction_size(self.problem, ys.detach())
