"""The engine: adaptive Runge–Kutta integration with ACA, adjoint, backprop and naive gradients."""

from physnode.solver.api import GRAD_METHODS, Solution, SolverStats, odeint, solve
from physnode.solver.symplectic import SYMPLECTIC_METHODS, integrate_symplectic
from physnode.solver.tableaus import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    RK_METHODS,
    ButcherTableau,
)

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_STEP_METHODS",
    "GRAD_METHODS",
    "RK_METHODS",
    "SYMPLECTIC_METHODS",
    "ButcherTableau",
    "Solution",
    "SolverStats",
    "integrate_symplectic",
    "odeint",
    "solve",
]
