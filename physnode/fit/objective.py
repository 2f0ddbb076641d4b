"""The fit's solver settings applied to one problem: solve it, score it.

This is the small public interface that the schedule, multiple shooting and the uncertainties
share; none of them needs the :class:`~physnode.fit.Fitter` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from physnode.fit.problem import FitProblem
from physnode.solver import odeint
from physnode.solver.api import PER_SAMPLE_GRADS
from physnode.solver.tableaus import RK_METHODS


@dataclass(frozen=True)
class Objective:
    """A :class:`FitProblem` under fixed solver settings.

    Args:
        problem: the model, its start and the observations.
        method, rtol, atol, grad: the solver's method, tolerances and gradient method.
        device: where the time grids are made (that of the problem's tensors).
    """

    problem: FitProblem
    method: str
    rtol: float
    atol: float
    grad: str
    device: str

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
        ``backprop``); else with one shared step sequence."""
        grad = grad or self.grad
        per_sample = y0.ndim == 2 and grad in PER_SAMPLE_GRADS and RK_METHODS[self.method].adaptive
        return odeint(
            self.problem.model, y0, t, rtol=rtol or self.rtol, atol=atol or self.atol,
            method=self.method, grad=grad,
            options={"steps": "per-sample", "sample_failure": "raise"} if per_sample else None,
        )  # fmt: skip

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
        """Mean squared scaled misfit over the first ``m`` data times (a scalar)."""
        return self.residual(self.solve(m), m).square().mean()
