"""physnode: physics-informed modelling of dynamical systems.

Public API::

    from physnode import odeint, solve
    ys = odeint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5", grad="aca")
"""

from physnode._version import __version__
from physnode.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidInputError,
    InvalidTimeGridError,
    MaxStepsReachedError,
    NonFiniteError,
    PhysnodeError,
    ShapeMismatchError,
    SolverError,
    StepSizeTooSmallError,
    UnknownOptionError,
)
from physnode.solver import Sensitivities, Solution, SolverStats, odeint, sensitivities, solve

__all__ = [
    "DeviceMismatchError",
    "DtypeMismatchError",
    "InvalidInputError",
    "InvalidTimeGridError",
    "MaxStepsReachedError",
    "NonFiniteError",
    "PhysnodeError",
    "Sensitivities",
    "ShapeMismatchError",
    "Solution",
    "SolverError",
    "SolverStats",
    "StepSizeTooSmallError",
    "UnknownOptionError",
    "__version__",
    "odeint",
    "sensitivities",
    "solve",
]
