"""``naive``: autograd through everything, rejected trials and the step-size controller
included (the deep graph the ACA paper avoids)."""

from __future__ import annotations

from physnode.solver.gradients.base import GradientMethod, register_gradient
from physnode.solver.gradients.graph import through_solve


@register_gradient("naive")
class Naive(GradientMethod):
    """Backpropagation through every operation of the solve, the controller included. Fills
    ``nfe_backward`` (time gradient only)."""

    def apply(self, problem, t, y0, params):
        return through_solve(problem, t, y0, params, naive=True)

    def follows_closures(self, t):
        return not t.requires_grad
