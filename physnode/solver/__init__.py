"""The engine: adaptive Runge–Kutta integration with ACA, adjoint, backprop, naive and forward
(sensitivity) gradients."""

from physnode.solver.api import (
    GRAD_METHODS,
    Sensitivities,
    Solution,
    SolverStats,
    odeint,
    sensitivities,
    solve,
)
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
    "Sensitivities",
    "Solution",
    "SolverStats",
    "integrate_symplectic",
    "odeint",
    "sensitivities",
    "solve",
]
