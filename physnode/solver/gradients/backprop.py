"""``backprop``: autograd through the accepted steps, step sizes held constant (torchdiffeq's
default); ACA must equal it to rounding."""

from __future__ import annotations

from physnode.solver.gradients.base import GradientMethod, register_gradient
from physnode.solver.gradients.graph import through_solve
from physnode.solver.per_sample import integrate_per_sample
from physnode.solver.stepper import RHS


@register_gradient("backprop")
class Backprop(GradientMethod):
    """Backpropagation through the accepted steps: exact for the discrete solve, memory of the
    whole graph. Fills ``nfe_backward`` (time gradient only)."""

    per_sample = True

    def apply(self, problem, t, y0, params):
        return through_solve(problem, t, y0, params, naive=False)

    def apply_per_sample(self, problem, t, y0, params):
        """Autograd through the per-sample loop as it runs (closures' tensors included)."""
        rhs = RHS(problem.func, y0, problem.stats.count_forward_eval)
        ys, problem.status = integrate_per_sample(
            rhs, problem.tab, problem.t_grid, y0, problem.rtol, problem.atol, problem.options,
            problem.stats,
        )  # fmt: skip
        return ys

    def follows_closures(self, t):
        return not t.requires_grad
