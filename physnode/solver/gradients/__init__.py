"""Gradient strategies, one module each: ACA, continuous adjoint, backprop and naive.

Each is a :class:`torch.autograd.Function` with the same inputs ``(t, y0, *params)`` and output
``ys`` of shape ``(len(t), *y0.shape)``, so the caller can swap them freely.
"""

from physnode.solver.gradients.aca import ACAFunction
from physnode.solver.gradients.adjoint import AdjointFunction
from physnode.solver.gradients.graph import GraphFunction

__all__ = ["ACAFunction", "AdjointFunction", "GraphFunction"]
