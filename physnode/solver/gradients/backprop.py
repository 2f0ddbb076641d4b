"""``backprop``: autograd through the accepted steps, step sizes held constant (torchdiffeq's
default); ACA must equal it to rounding."""

from __future__ import annotations

from physnode.solver.gradients.base import GradientMethod, register_gradient
from physnode.solver.gradients.graph import through_solve


@register_gradient("backprop")
class Backprop(GradientMethod):
    """Backpropagation through the accepted steps: exact for the discrete solve, memory of the
    whole graph. Fills ``nfe_backward`` (time gradient only)."""

    def apply(self, problem, t, y0, params):
        return through_solve(problem, t, y0, params, naive=False)

    def follows_closures(self, t):
        return not t.requires_grad
