"""Pieces shared by the gradient strategies."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from physnode.solver.integrate import Trajectory, integrate
from physnode.solver.options import SolverOptions
from physnode.solver.stepper import RHS
from physnode.solver.tableaus import ButcherTableau


@dataclass
class Problem:
    """Everything a gradient strategy needs besides the differentiable inputs."""

    func: object
    tab: ButcherTableau
    t_out: list[float]
    rtol: float
    atol: float
    options: SolverOptions
    stats: object

    def run(self, y0: torch.Tensor, *, record: bool = False, naive: bool = False) -> Trajectory:
        """The forward solve from ``y0`` (autograd mode chosen by the caller)."""
        rhs = RHS(self.func, y0, self.stats, "nfe_forward")
        return integrate(
            rhs, self.tab, self.t_out, y0, self.rtol, self.atol, self.options, self.stats,
            record=record, naive=naive,
        )  # fmt: skip


def time_gradient(
    rhs: RHS,
    t_out: Sequence[float],
    ys: torch.Tensor,
    grad_ys: torch.Tensor,
    grad_y0_flow: torch.Tensor,
    t_dtype: torch.dtype,
    t_device: torch.device,
) -> torch.Tensor:
    """``dL/dt`` for every output time, shape ``(len(t),)``.

    ``dL/dt_k = <dL/dy_k, f(t_k, y_k)>`` for ``k ≥ 1`` and ``dL/dt_0 = -<λ_0, f(t_0, y_0)>``,
    where ``λ_0`` is the gradient reaching ``y0`` through the flow (outputs ``k ≥ 1`` only;
    ``ys[0] = y0`` does not depend on ``t_0``). Exact derivatives of the flow, so they agree with
    the discrete solve to its tolerance.
    """
    out = torch.zeros(len(t_out), dtype=torch.float64)
    with torch.no_grad():
        for k in range(1, len(t_out)):
            g = grad_ys[k]
            if bool(g.any()):
                out[k] = (g * rhs(t_out[k], ys[k])).sum().double()
        out[0] = -(grad_y0_flow * rhs(t_out[0], ys[0])).sum().double()
    return out.to(dtype=t_dtype, device=t_device)


def zeros_for(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) for p in params]


def fill_none(
    grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, like, strict=True)]
