"""Pieces shared by the gradient methods: the :class:`Problem` and the time gradient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from physnode.errors import DoubleBackwardError, ModifiedInputError
from physnode.solver.integrate import ForwardRecord, integrate
from physnode.solver.options import SolverOptions
from physnode.solver.stats import SolverStats
from physnode.solver.stepper import RHS
from physnode.solver.tableaus import ButcherTableau
from physnode.solver.vector_field import VectorField


@dataclass
class Problem:
    """Everything a gradient method needs besides the differentiable inputs.

    Attributes:
        func: the user's vector field.
        tab: the Runge–Kutta method.
        t_out: the output times in float64, strictly monotone.
        rtol, atol: tolerances of the forward solve.
        options: validated solver options.
        stats: the counters of this solve, filled in place.
    """

    func: VectorField
    tab: ButcherTableau
    t_out: list[float]
    rtol: float
    atol: float
    options: SolverOptions
    stats: SolverStats

    def run(self, y0: torch.Tensor, *, record: bool = False, naive: bool = False) -> ForwardRecord:
        """The forward solve from ``y0`` (autograd mode chosen by the caller)."""
        rhs = RHS(self.func, y0, self.stats.count_forward_eval)
        return integrate(
            rhs, self.tab, self.t_out, y0, self.rtol, self.atol, self.options, self.stats,
            record=record, naive=naive,
        )  # fmt: skip

    def backward_rhs(self, y_like: torch.Tensor) -> RHS:
        """``func`` wrapped for the backward pass: its evaluations count as ``nfe_backward``."""
        return RHS(self.func, y_like, self.stats.count_backward_eval)


def remember(
    ctx, problem: Problem, t: torch.Tensor, y0: torch.Tensor, params: Sequence[torch.Tensor]
) -> None:
    """Keep on an autograd ``ctx`` what every backward pass reads: the problem, the
    parameters, the dtype/device of ``t`` (for the time gradient) and the version counters of
    ``y0`` and the parameters (to detect in-place changes before backward)."""
    ctx.problem = problem
    ctx.params = params
    ctx.t_meta = (t.dtype, t.device)
    ctx.versions = [(x, x._version) for x in (y0, *params)]


def check_backward(ctx, grad: str) -> None:
    """Refuse a backward pass that would be silently wrong: a second derivative
    (``create_graph=True``: these backward passes are not differentiable) or inputs changed in
    place since the forward solve.

    Raises:
        DoubleBackwardError, ModifiedInputError.
    """
    if torch.is_grad_enabled():
        raise DoubleBackwardError(
            f"grad={grad!r} gives first derivatives only: its backward pass is not "
            "differentiable, so create_graph=True would treat the gradient as a constant. Use "
            "grad='backprop' or grad='naive' (with t not requiring grad) for higher derivatives"
        )
    for i, (x, version) in enumerate(ctx.versions):
        if x._version != version:
            what = "y0" if i == 0 else f"parameter #{i - 1} (shape {tuple(x.shape)})"
            raise ModifiedInputError(
                f"{what} was changed in place after the solve and before backward(); the "
                "gradient would belong to other values. Call backward() before changing it "
                "(e.g. before optimizer.step()), or solve from a clone"
            )


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
    device = ys.device
    with torch.no_grad():
        # one host synchronisation for the whole grid: which outputs the loss reads at all
        used = grad_ys[1:].reshape(len(t_out) - 1, -1).any(dim=1).tolist()
        zero = torch.zeros((), dtype=torch.float64, device=device)
        terms = [-(grad_y0_flow * rhs(t_out[0], ys[0])).sum().double()]
        for k in range(1, len(t_out)):
            terms.append(
                (grad_ys[k] * rhs(t_out[k], ys[k])).sum().double() if used[k - 1] else zero
            )
        out = torch.stack(terms)
    return out.to(dtype=t_dtype, device=t_device)


#: phrases of torch.func.vmap's own refusals (data-dependent control flow, .item(), in-place
#: writes into unbatched tensors, randomness, missing batching rules): only these fall back
_VMAP_LIMITATIONS = (
    "vmap",
    "batching rule",
    "batched tensor",
    "data-dependent control flow",
    "Batching rule",
)


def is_vmap_limitation(exc: BaseException) -> bool:
    """Whether ``exc`` says torch.func.vmap has no batching rule for an operation (the
    only error on which a batched path may fall back to a one-at-a-time one)."""
    message = str(exc)
    return any(phrase in message for phrase in _VMAP_LIMITATIONS)


def zeros_for(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(p) for p in params]


def fill_none(
    grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, like, strict=True)]
