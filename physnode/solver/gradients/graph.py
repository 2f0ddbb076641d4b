"""Autograd through the solve itself: the engine of ``backprop`` and ``naive``.

``backprop`` differentiates the accepted steps with the step sizes held constant (the controller
is detached) — what torchdiffeq's ``odeint`` does; ACA must equal it to rounding. ``naive``
differentiates everything, rejected trials and the step-size controller included (the deep graph
the ACA paper avoids). Both keep the whole graph in memory until backward.

When ``t`` needs no gradient the solve is recorded by autograd as it is (:func:`through_solve`):
tensors ``func`` reads from closures get their gradients, higher derivatives work and autograd
itself detects in-place changes. When ``t`` needs one, :class:`GraphFunction` wraps the same solve
to add the exact time gradient; it then differentiates ``y0`` and the declared parameters only,
to first order.
"""

from __future__ import annotations

import torch

from physnode.solver.gradients.common import (
    Problem,
    check_backward,
    fill_none,
    remember,
    time_gradient,
)


def through_solve(problem: Problem, t: torch.Tensor, y0: torch.Tensor, params, naive: bool):
    """``ys`` recorded by autograd (``t`` not requiring grad), else through
    :class:`GraphFunction`."""
    if t.requires_grad:
        return GraphFunction.apply(problem, naive, t, y0, *params)
    return torch.stack(problem.run(y0, naive=naive).ys)


class GraphFunction(torch.autograd.Function):
    """``ys = GraphFunction.apply(problem, naive, t, y0, *params)``."""

    @staticmethod
    def forward(ctx, problem: Problem, naive: bool, t: torch.Tensor, y0: torch.Tensor, *params):
        y_leaf = y0.detach().requires_grad_(True)
        with torch.enable_grad():
            record = problem.run(y_leaf, naive=naive)
            ys_graph = torch.stack(record.ys)
        remember(ctx, problem, t, y0, params)
        ctx.graph = (y_leaf, ys_graph)
        ctx.name = "naive" if naive else "backprop"
        return ys_graph.detach()

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        check_backward(ctx, ctx.name)
        problem: Problem = ctx.problem
        y_leaf, ys_graph = ctx.graph
        params = ctx.params
        # exclude ys[0] (= y0 itself) so that the y0 gradient below is the flow's share only
        with torch.enable_grad():
            grads = torch.autograd.grad(
                ys_graph[1:], [y_leaf, *params], grad_ys[1:], allow_unused=True
            )
        flow = grads[0] if grads[0] is not None else torch.zeros_like(y_leaf)
        grad_t = None
        if ctx.needs_input_grad[2]:
            rhs = problem.backward_rhs(y_leaf)
            grad_t = time_gradient(
                rhs, problem.t_out, ys_graph.detach(), grad_ys, flow, *ctx.t_meta
            )
        return (None, None, grad_t, flow + grad_ys[0], *fill_none(grads[1:], params))
