"""The engine: adaptive Runge–Kutta integration with ACA, adjoint, backprop and naive gradients."""

from physnode.solve.api import Solution, SolverStats, odeint, solve
from physnode.solve.tableaus import ADAPTIVE_METHODS, FIXED_STEP_METHODS, METHODS, ButcherTableau

__all__ = [
    "ADAPTIVE_METHODS",
    "FIXED_STEP_METHODS",
    "METHODS",
    "ButcherTableau",
    "Solution",
    "SolverStats",
    "odeint",
    "solve",
]
