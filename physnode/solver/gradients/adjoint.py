"""The continuous adjoint ("backsolve", Chen et al. 2018).

The backward pass solves the augmented system ``[y, a, a_θ]`` from ``t_K`` back to ``t_0``:
``dy/dt = f``, ``da/dt = -aᵀ ∂f/∂y``, ``da_θ/dt = -aᵀ ∂f/∂θ``, one interval at a time, adding
``dL/dy_k`` to ``a`` at each output time and resetting ``y`` to the forward solution there (as
torchdiffeq does). ``y`` is re-integrated backwards, so in chaotic systems it drifts from the
forward path and the gradient is only approximate: that is what ACA fixes.
"""

from __future__ import annotations

import torch

from physnode.solver.gradients.base import GradientMethod, register_gradient
from physnode.solver.gradients.common import (
    Problem,
    check_backward,
    fill_none,
    remember,
    time_gradient,
)
from physnode.solver.integrate import integrate
from physnode.solver.stats import SolverStats
from physnode.solver.stepper import RHS


@register_gradient("adjoint")
class Adjoint(GradientMethod):
    """Continuous adjoint: constant memory, approximate gradient (the backward solve drifts).
    Fills ``nfe_backward`` and ``n_steps_backward``."""

    def apply(self, problem, t, y0, params):
        return AdjointFunction.apply(problem, t, y0, *params)


class _Augmented:
    """Vector field of the flat augmented state ``z = [y, a, a_θ]`` (1-D)."""

    def __init__(self, func, shape: torch.Size, params: tuple[torch.Tensor, ...]) -> None:
        self.func = func
        self.shape = shape
        self.n = shape.numel()
        self.params = params

    def __call__(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        n = self.n
        y = z[:n].view(self.shape)
        a = z[n : 2 * n].view(self.shape)
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            f = self.func(t, y_)
            vjps = torch.autograd.grad(f, [y_, *self.params], -a, allow_unused=True)
        parts = [f.detach().reshape(-1), _flat(vjps[0], y)]
        parts += [_flat(g, p).to(z.dtype) for g, p in zip(vjps[1:], self.params, strict=True)]
        return torch.cat(parts)


def _flat(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return (torch.zeros_like(like) if g is None else g).reshape(-1)


class AdjointFunction(torch.autograd.Function):
    """``ys = AdjointFunction.apply(problem, t, y0, *params)``."""

    @staticmethod
    def forward(ctx, problem: Problem, t: torch.Tensor, y0: torch.Tensor, *params):
        with torch.no_grad():
            ys = torch.stack(problem.run(y0).ys)
        remember(ctx, problem, t, y0, params)
        ctx.save_for_backward(ys)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        check_backward(ctx, "adjoint")
        problem: Problem = ctx.problem
        params = ctx.params
        (ys,) = ctx.saved_tensors
        shape = ys.shape[1:]
        n = shape.numel()
        z = _solve_backwards(problem, ys, grad_ys, params)
        lam_total = z[n : 2 * n].view(shape)
        grad_params, offset = [], 2 * n
        for p in params:
            grad_params.append(z[offset : offset + p.numel()].view(p.shape).to(p.dtype))
            offset += p.numel()
        grad_t = None
        if ctx.needs_input_grad[1]:
            rhs_y = problem.backward_rhs(ys[0])
            flow = lam_total - grad_ys[0]
            grad_t = time_gradient(rhs_y, problem.t_out, ys, grad_ys, flow, *ctx.t_meta)
        return (None, grad_t, lam_total, *fill_none(grad_params, params))


def _solve_backwards(problem: Problem, ys: torch.Tensor, grad_ys: torch.Tensor, params):
    """Integrate ``z = [y, a, a_θ]`` from ``t_K`` to ``t_0``, one output interval at a time;
    returns ``z`` at ``t_0`` (flat)."""
    opts = problem.options
    shape = ys.shape[1:]
    n = shape.numel()
    rtol = opts.adjoint_rtol if opts.adjoint_rtol is not None else problem.rtol
    atol = opts.adjoint_atol if opts.adjoint_atol is not None else problem.atol
    aug = _Augmented(problem.func, shape, params)
    z0 = torch.cat([ys[-1].reshape(-1), grad_ys[-1].reshape(-1)])
    z0 = torch.cat(
        [z0, *[torch.zeros(p.numel(), dtype=ys.dtype, device=ys.device) for p in params]]
    )
    rhs = RHS(aug, z0, problem.stats.count_backward_eval)
    # the backward solves' steps are counted apart from the forward's n_accepted/n_rejected
    backward_stats = SolverStats()
    z = z0
    with torch.no_grad():
        for k in range(len(problem.t_out) - 1, 0, -1):
            span = [problem.t_out[k], problem.t_out[k - 1]]
            record = integrate(
                rhs, problem.tab, span, z, rtol, atol, opts, backward_stats,
                n_norm=2 * n if opts.seminorm else None,
            )  # fmt: skip
            z = record.ys[-1].clone()
            z[:n] = ys[k - 1].reshape(-1)  # use the forward solution at output times
            z[n : 2 * n] += grad_ys[k - 1].reshape(-1)
    problem.stats.n_steps_backward += backward_stats.n_accepted + backward_stats.n_rejected
    return z
