"""ACA for per-sample steps: every member's accepted steps replayed in reverse.

The forward solve (:func:`~physnode.solver.per_sample.integrate_per_sample`, under
``no_grad``) keeps, for each loop iteration, the members it accepted and their ``(t_n, h_n,
y_n)``, and where each output lies in its step. The backward pass walks the iterations in
reverse: the members accepted at an iteration are replayed together from their checkpoints
(one batched graph of their step and its dense outputs, one vector–Jacobian product), their
adjoints replaced by the result; the other members' adjoints are untouched (their state did not
move then). Each member's chain of steps is so walked backwards exactly as the one-trajectory
ACA walks its own: the gradient of the accepted discrete trajectory, equal to backprop through
the same steps, at the memory of one state per accepted member step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from physnode.solver.gradients.common import check_backward, fill_none, remember, zeros_for
from physnode.solver.options import SolverOptions
from physnode.solver.per_sample import (
    StepRecord,
    integrate_per_sample,
    row_dense,
    row_extra_stages,
    row_stages,
)
from physnode.solver.stats import SolverStats
from physnode.solver.stepper import RHS
from physnode.solver.tableaus import ButcherTableau

__all__ = ["PerSampleProblem", "aca_per_sample"]


@dataclass
class PerSampleProblem:
    """A per-sample solve's fixed inputs (see :func:`integrate_per_sample`); ``status`` is
    filled by the forward solve."""

    func: object
    tab: ButcherTableau
    t_grid: torch.Tensor
    rtol: float
    atol: float
    options: SolverOptions
    stats: SolverStats
    status: torch.Tensor | None = None


def aca_per_sample(
    problem: PerSampleProblem, t: torch.Tensor, y0: torch.Tensor, params: list[torch.Tensor]
) -> torch.Tensor:
    """``ys`` ``(T, B, D)`` of a per-sample solve whose backward pass is the per-member ACA
    replay; ``problem.status`` holds each member's status afterwards."""
    return _PerSampleACA.apply(problem, t, y0, *params)


class _PerSampleACA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, problem: PerSampleProblem, t, y0, *params):
        record = StepRecord()
        rhs = RHS(problem.func, y0, problem.stats.count_forward_eval)
        with torch.no_grad():
            ys, problem.status = integrate_per_sample(
                rhs, problem.tab, problem.t_grid, y0, problem.rtol, problem.atol,
                problem.options, problem.stats, record,
            )  # fmt: skip
        problem.stats.n_checkpoints = sum(len(step[0]) for step in record.steps)
        remember(ctx, problem, t, y0, params)
        ctx.record = record
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        check_backward(ctx, "aca")
        lam, grad_params = _replay(ctx.problem, ctx.record, grad_ys, ctx.params)
        return (None, None, lam + grad_ys[0], *fill_none(grad_params, ctx.params))


def _replay(problem: PerSampleProblem, record: StepRecord, grad_ys: torch.Tensor, params):
    """The adjoint of ``y0`` ``(B, D)`` and the parameter gradients, iteration by iteration
    in reverse."""
    rhs = RHS(problem.func, grad_ys[0], problem.stats.count_backward_eval)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return rhs(t.to(y.dtype).unsqueeze(-1), y)

    lam = torch.zeros_like(grad_ys[0])
    grad_params = zeros_for(params)
    slot = torch.full((lam.shape[0],), -1, dtype=torch.int64, device=lam.device)
    for (members, t_n, h, y_n), outputs in zip(
        reversed(record.steps), reversed(record.outputs), strict=True
    ):
        inside = []
        for k, who, theta, on_end in outputs:  # outputs on a step's end enter its adjoint
            ends = on_end.nonzero().squeeze(-1)
            lam.index_put_((who[ends],), grad_ys[k[ends], who[ends]], accumulate=True)
            if not bool(on_end.all()):
                keep = (~on_end).nonzero().squeeze(-1)
                inside.append((k[keep], who[keep], theta[keep]))
        lam_members, grads = _replay_iteration(
            f, problem.tab, members, t_n, h, y_n, lam, grad_ys, inside, params, slot
        )
        lam.index_copy_(0, members, lam_members)
        for acc, g in zip(grad_params, grads, strict=True):
            if g is not None:
                acc += g
    return lam, grad_params


def _replay_iteration(f, tab, members, t_n, h, y_n, lam, grad_ys, inside, params, slot):
    """One iteration's accepted members replayed together: their step (and dense outputs
    inside it) rebuilt under autograd from the checkpoints, one VJP. Returns the members'
    adjoints at ``y_n`` and the parameter gradients of this iteration."""
    slot[members] = torch.arange(len(members), device=members.device)
    y_leaf = y_n.detach().requires_grad_(True)
    with torch.enable_grad():
        y1, ks = row_stages(f, tab, t_n, h, y_leaf, f(t_n, y_leaf))
        outs, gouts = [y1], [lam.index_select(0, members)]
        if inside:
            ks_dense = row_extra_stages(f, tab, t_n, h, y_leaf, ks) if tab.extra_c else ks
            for k, who, theta in inside:
                at = slot[who]
                dense = row_dense(
                    tab, y_leaf[at], h[at], [kj[at] for kj in ks_dense], theta.to(h.dtype)
                )
                outs.append(dense)
                gouts.append(grad_ys[k, who])
        grads = torch.autograd.grad(outs, [y_leaf, *params], gouts, allow_unused=True)
    lam_members = grads[0] if grads[0] is not None else torch.zeros_like(y_n)
    return lam_members, grads[1:]
