"""ACA: the adaptive checkpoint adjoint (Zhuang et al., ICML 2020).

Forward: integrate under ``no_grad`` and keep ``(t_n, h_n, y_n)`` of accepted steps only.
Backward: walk the accepted steps in reverse; rebuild each one-step map under autograd from the
stored state (a detached leaf) and take one vector–Jacobian product per step. The result is the
gradient of the accepted discrete trajectory — what backprop through those steps gives — at the
memory of one state per step.
"""

from __future__ import annotations

import torch

from physnode.solve.gradients.common import Problem, fill_none, time_gradient
from physnode.solve.stepper import RHS, dense_output, extra_stages, stages


class ACAFunction(torch.autograd.Function):
    """``ys = ACAFunction.apply(problem, t, y0, *params)``."""

    @staticmethod
    def forward(ctx, problem: Problem, t: torch.Tensor, y0: torch.Tensor, *params: torch.Tensor):
        with torch.no_grad():
            traj = problem.run(y0, record=True)
            ys = torch.stack(traj.ys)
        problem.stats.n_checkpoints = len(traj.checkpoints)
        ctx.problem = problem
        ctx.traj = traj
        ctx.t_meta = (t.dtype, t.device)
        ctx.save_for_backward(ys)
        ctx.params = params
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        problem: Problem = ctx.problem
        traj = ctx.traj
        (ys,) = ctx.saved_tensors
        params = ctx.params
        tab = problem.tab
        rhs = RHS(problem.func, ys[0], problem.stats, "nfe_backward")
        lam = torch.zeros_like(ys[0])
        grad_params = [torch.zeros_like(p) for p in params]
        for n in range(len(traj.checkpoints) - 1, -1, -1):
            t_n, h, y_n = traj.checkpoints[n]
            inside = []
            for k, theta in traj.outputs[n]:
                if theta == 1.0:
                    lam = lam + grad_ys[k]  # the step ends on t_k: y_k is y_{n+1} itself
                else:
                    inside.append((k, theta))
            # Replay this step under autograd; the checkpoint holds (t_n, h_n, y_n).
            y_leaf = y_n.detach().requires_grad_(True)
            with torch.enable_grad():
                f0 = rhs(t_n, y_leaf)
                need_last = bool(inside) or not tab.fsal
                y1, ks = stages(rhs, tab, t_n, h, y_leaf, f0, need_last=need_last)
                outs, gouts = [y1], [lam]
                if inside:
                    ks_dense = extra_stages(rhs, tab, t_n, h, y_leaf, ks) if tab.extra_c else ks
                    for k, theta in inside:
                        outs.append(dense_output(tab, y_leaf, h, ks_dense, theta))
                        gouts.append(grad_ys[k])
                grads = torch.autograd.grad(outs, [y_leaf, *params], gouts, allow_unused=True)
            lam = grads[0] if grads[0] is not None else torch.zeros_like(lam)
            for i, g in enumerate(grads[1:]):
                if g is not None:
                    grad_params[i] += g
        grad_t = None
        if ctx.needs_input_grad[1]:
            grad_t = time_gradient(rhs, problem.t_out, ys, grad_ys, lam, *ctx.t_meta)
        grad_y0 = lam + grad_ys[0]
        return (None, grad_t, grad_y0, *fill_none(grad_params, params))
