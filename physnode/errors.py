"""Typed exceptions of physnode.

Every failure the library can report derives from :class:`PhysnodeError`; each class says in its
docstring what to change. Input errors also derive from :class:`ValueError` (or :class:`TypeError`)
so generic ``except ValueError`` handlers keep working.
"""

from __future__ import annotations


class PhysnodeError(Exception):
    """Base class of every error physnode raises on purpose."""


class InvalidInputError(PhysnodeError, ValueError):
    """An argument has the wrong value (shape, range, ordering, unknown name). Fix the argument."""


class InvalidTimeGridError(InvalidInputError):
    """The time grid is not 1-D, has fewer than 2 points, is not finite or not strictly monotone."""


class ShapeMismatchError(InvalidInputError):
    """The function returned a derivative whose shape differs from the state's."""


class DtypeMismatchError(PhysnodeError, TypeError):
    """A tensor has an unsupported dtype (use float32 or float64) or disagrees with the state's."""


class DeviceMismatchError(InvalidInputError):
    """Tensors live on different devices; move them all to the state's device."""


class UnknownOptionError(InvalidInputError):
    """An ``options`` key is not recognised; the message lists the valid keys."""


class SolverError(PhysnodeError, RuntimeError):
    """The integration could not be completed. ``t`` holds the time where it stopped."""

    def __init__(self, message: str, t: float | None = None) -> None:
        super().__init__(message)
        self.t = t


class MaxStepsReachedError(SolverError):
    """The solver hit ``max_steps``. Increase ``options["max_steps"]``, loosen rtol/atol, or
    shorten the time span."""


class StepSizeTooSmallError(SolverError):
    """The step size fell below the floor: the problem is stiff or singular there (a close
    encounter, a blow-up). Loosen the tolerances, add softening, or lower ``min_step``."""


class NonFiniteError(SolverError):
    """The state or its derivative became NaN or infinite."""


class DataError(PhysnodeError, ValueError):
    """A data file is missing, unreadable or does not follow the documented layout."""


class FileExistsOutputError(PhysnodeError, FileExistsError):
    """The output file exists already; pass ``overwrite=True`` (CLI: ``--overwrite``)."""


class HiddenParameterError(InvalidInputError):
    """``func`` reads a tensor that requires grad but is neither a parameter of the module nor in
    ``params=`` (a closure or global), and the gradient method cannot see it. Pass it with
    ``params=[...]``, make it an ``nn.Parameter`` of the module, or use ``grad="backprop"``."""


class ModifiedInputError(PhysnodeError, RuntimeError):
    """``y0`` or a parameter was changed in place between a solve and its backward pass, so the
    gradient would belong to other values. Call ``backward()`` first, or solve from a clone."""


class DoubleBackwardError(PhysnodeError, RuntimeError):
    """A second derivative was asked of a gradient method whose backward pass is not itself
    differentiable (``create_graph=True`` through ``aca``/``adjoint``, or through ``t``). Use
    ``grad="backprop"`` or ``"naive"`` for higher derivatives."""


class CompileFallbackWarning(UserWarning):
    """``options={"compile": True}`` could not trace or compile the step (no C++ compiler, or a
    ``func`` that ``make_fx`` cannot trace); the solve steps eagerly instead, with the same
    results, only slower. Drop the option to silence it, or make ``func`` plain tensor code."""
