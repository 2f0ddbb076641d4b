"""Gradient methods, one module each: ACA, continuous adjoint, backprop, naive and forward.

Each is a small :class:`~physnode.solver.gradients.base.GradientMethod` registered under its
name by ``@register_gradient``; :func:`~physnode.solver.solve` dispatches through
:func:`get_gradient`. To add a method: write one module here with one decorated class, and
import it below (before ``GRAD_METHODS``); the import order is the order of the choices.
"""

from physnode.solver.gradients.base import (
    GradientMethod,
    get_gradient,
    gradient_names,
    register_gradient,
)
from physnode.solver.gradients.graph import GraphFunction

# One import per method; their order is the order of GRAD_METHODS (so isort keeps out).
# isort: off
from physnode.solver.gradients.aca import ACA, ACAFunction
from physnode.solver.gradients.adjoint import Adjoint, AdjointFunction
from physnode.solver.gradients.backprop import Backprop
from physnode.solver.gradients.naive import Naive
from physnode.solver.gradients.forward import Forward, ForwardFunction
# isort: on

#: the registered gradient methods' names, in registration order
GRAD_METHODS: tuple[str, ...] = gradient_names()

__all__ = [
    "ACA",
    "GRAD_METHODS",
    "ACAFunction",
    "Adjoint",
    "AdjointFunction",
    "Backprop",
    "Forward",
    "ForwardFunction",
    "GradientMethod",
    "GraphFunction",
    "Naive",
    "get_gradient",
    "gradient_names",
    "register_gradient",
]
