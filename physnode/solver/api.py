"""Public entry points: :func:`odeint` (torchdiffeq's call shape) and :func:`solve`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from physnode.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidInputError,
    InvalidTimeGridError,
    NonFiniteError,
)
from physnode.solver.gradients import ACAFunction, AdjointFunction, GraphFunction
from physnode.solver.gradients.common import Problem
from physnode.solver.options import SolverOptions
from physnode.solver.tableaus import RK_METHODS

GRAD_METHODS = ("aca", "adjoint", "backprop", "naive")


@dataclass
class SolverStats:
    """Counters of one solve; the backward fields fill in when ``.backward()`` runs.

    Attributes:
        nfe_forward: function evaluations of the forward solve.
        nfe_backward: function evaluations of the backward pass (ACA replay, adjoint solve,
            time gradients).
        n_accepted, n_rejected: accepted and rejected steps of the forward solve.
        n_checkpoints: states held for the backward pass (ACA: one per accepted step).
        n_steps_backward: step attempts of the adjoint's backward solve.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    n_checkpoints: int = 0
    n_steps_backward: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Solution:
    """Result of :func:`solve`: ``ys`` of shape ``(len(t), *y0.shape)`` and its ``stats``."""

    ys: torch.Tensor
    stats: SolverStats = field(default_factory=SolverStats)


def odeint(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str = "dopri5",
    grad: str = "aca",
    params: Sequence[torch.Tensor] | None = None,
    options: dict | None = None,
) -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every ``t``.

    Args:
        func: the vector field ``func(t, y) -> dy/dt`` (same shape as ``y``); ``t`` arrives as a
            0-dim tensor of the state's dtype. An ``nn.Module`` (its parameters that require
            grad get gradients) or any callable, whose differentiable tensors go in ``params``.
        y0: initial state, shape ``(..., D)``; leading dimensions are a batch. float32/float64.
        t: output times, 1-D, at least 2, strictly increasing or strictly decreasing. Kept in
            float64 internally whatever the state's dtype.
        rtol, atol: relative and absolute tolerance of the adaptive error control.
        method: ``euler``, ``midpoint``, ``rk4`` (fixed step, ``options={"step_size": h}``) or
            ``bosh3``, ``dopri5``, ``tsit5``, ``dop853`` (adaptive, dense output).
        grad: how gradients are computed when any input requires them: ``aca`` (adaptive
            checkpoint adjoint, default), ``adjoint`` (continuous adjoint), ``backprop``
            (autograd through the accepted steps) or ``naive`` (autograd through everything).
        params: extra tensors that need gradients (for plain callables).
        options: solver options, see :class:`~physnode.solver.options.SolverOptions`.

    Returns:
        Tensor of shape ``(len(t), *y0.shape)``; ``ys[0]`` equals ``y0``.

    Raises:
        InvalidInputError, InvalidTimeGridError, DtypeMismatchError, DeviceMismatchError,
        UnknownOptionError: bad arguments. MaxStepsReachedError, StepSizeTooSmallError,
        NonFiniteError: the solve could not complete (the message says at which t).
    """
    return solve(func, y0, t, rtol, atol, method, grad, params, options).ys


def solve(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str = "dopri5",
    grad: str = "aca",
    params: Sequence[torch.Tensor] | None = None,
    options: dict | None = None,
) -> Solution:
    """Like :func:`odeint` but returns a :class:`Solution` with the solver statistics."""
    y0 = _check_state(y0)
    t_tensor, t_out = _check_times(t)
    if not callable(func):
        raise InvalidInputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    rtol, atol = _check_tolerances(rtol, atol)
    if method not in RK_METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose one of {sorted(RK_METHODS)}")
    if grad not in GRAD_METHODS:
        raise InvalidInputError(f"unknown grad {grad!r}; choose one of {list(GRAD_METHODS)}")
    opts = SolverOptions.from_dict(options)
    tab = RK_METHODS[method]
    if not tab.adaptive and opts.first_step is not None:
        raise InvalidInputError(f"first_step applies to adaptive methods, not {method!r}")
    eps = torch.finfo(y0.dtype).eps
    if tab.adaptive and 0 < rtol < 0.1 * eps:
        raise InvalidInputError(
            f"rtol={rtol:g} is below what {y0.dtype} can resolve (machine epsilon {eps:.2g}): "
            "the steps would shrink without end; use float64 or rtol >= "
            f"{0.1 * eps:.2g}"
        )
    params_list = _collect_params(func, params, y0)
    stats = SolverStats()

    needs_grad = torch.is_grad_enabled() and (
        y0.requires_grad or t_tensor.requires_grad or any(p.requires_grad for p in params_list)
    )
    _check_finite(y0)
    problem = Problem(func, tab, t_out, rtol, atol, opts, stats)
    if not needs_grad:
        with torch.no_grad():
            return Solution(torch.stack(problem.run(y0).ys), stats)

    diff = [p for p in params_list if p.requires_grad]
    if grad == "aca":
        ys = ACAFunction.apply(problem, t_tensor, y0, *diff)
    elif grad == "adjoint":
        ys = AdjointFunction.apply(problem, t_tensor, y0, *diff)
    else:
        ys = GraphFunction.apply(problem, grad == "naive", t_tensor, y0, *diff)
    return Solution(ys, stats)


def _check_state(y0) -> torch.Tensor:
    if not isinstance(y0, torch.Tensor):
        try:
            y0 = torch.as_tensor(y0)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInputError(f"y0 must be a tensor, got {type(y0).__name__}") from exc
    if y0.dtype not in (torch.float32, torch.float64):
        raise DtypeMismatchError(f"y0 has dtype {y0.dtype}; use torch.float32 or torch.float64")
    if y0.ndim == 0 or y0.numel() == 0:
        raise InvalidInputError(
            f"y0 must have shape (..., D) with D >= 1, got shape {tuple(y0.shape)}"
        )
    return y0


def _check_finite(y0: torch.Tensor) -> None:
    if not bool(torch.isfinite(y0).all()):
        raise NonFiniteError("y0 contains NaN or inf; give a finite initial state")


def _check_times(t) -> tuple[torch.Tensor, list[float]]:
    if isinstance(t, torch.Tensor):
        t_tensor = t
    else:
        try:
            t_tensor = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidTimeGridError(f"t must be a 1-D sequence of times: {exc}") from exc
    if not t_tensor.is_floating_point():
        t_tensor = t_tensor.to(torch.float64)
    if t_tensor.ndim != 1 or t_tensor.numel() < 2:
        raise InvalidTimeGridError(
            f"t must be 1-D with at least 2 times, got shape {tuple(t_tensor.shape)}"
        )
    t_out = t_tensor.detach().to("cpu", torch.float64).tolist()
    if not all(math.isfinite(v) for v in t_out):
        raise InvalidTimeGridError("t contains NaN or inf")
    diffs = [b - a for a, b in itertools.pairwise(t_out)]
    if not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
        bad = next(i for i, d in enumerate(diffs) if (d <= 0) != (diffs[0] <= 0) or d == 0)
        raise InvalidTimeGridError(
            "t must be strictly increasing or strictly decreasing; "
            f"t[{bad}]={t_out[bad]!r} and t[{bad + 1}]={t_out[bad + 1]!r} break the order"
        )
    return t_tensor, t_out


def _check_tolerances(rtol, atol) -> tuple[float, float]:
    try:
        rtol, atol = float(rtol), float(atol)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"rtol and atol must be numbers, got {rtol!r}, {atol!r}") from exc
    if not (rtol >= 0 and atol >= 0 and math.isfinite(rtol) and math.isfinite(atol)):
        raise InvalidInputError(f"rtol and atol must be finite and >= 0, got {rtol}, {atol}")
    if rtol == 0 and atol == 0:
        raise InvalidInputError("rtol and atol cannot both be zero")
    return rtol, atol


def _collect_params(func, params, y0: torch.Tensor) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    owner = func if isinstance(func, nn.Module) else getattr(func, "__self__", None)
    if isinstance(owner, nn.Module):
        found.extend(owner.parameters())
    if params is not None:
        if isinstance(params, torch.Tensor):
            params = [params]
        for p in params:
            if not isinstance(p, torch.Tensor):
                raise InvalidInputError(f"params must be tensors, got {type(p).__name__}")
            found.append(p)
    unique, seen = [], set()
    for p in found:
        if id(p) not in seen:
            seen.add(id(p))
            unique.append(p)
    for p in unique:
        if p.requires_grad and p.device != y0.device:
            raise DeviceMismatchError(
                f"a parameter lives on {p.device} but y0 on {y0.device}; move the model "
                f"with .to({str(y0.device)!r})"
            )
    return unique
