"""Public entry points: :func:`odeint` (torchdiffeq's call shape) and :func:`solve`."""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import torch
from torch import nn

from physnode.errors import (
    DeviceMismatchError,
    DtypeMismatchError,
    InvalidInputError,
    InvalidTimeGridError,
    NonFiniteError,
)
from physnode.solver.fused import refuse_compile
from physnode.solver.gradients import GRAD_METHODS, GradientMethod, get_gradient
from physnode.solver.gradients.aca_per_sample import PerSampleProblem
from physnode.solver.gradients.common import Problem
from physnode.solver.gradients.forward import integrate_sensitivities
from physnode.solver.hidden import hidden_leaves, refuse_hidden
from physnode.solver.options import SolverOptions
from physnode.solver.per_sample import integrate_per_sample
from physnode.solver.stats import SolverStats
from physnode.solver.stepper import RHS
from physnode.solver.tableaus import RK_METHODS, ButcherTableau
from physnode.solver.vector_field import VectorField

__all__ = [
    "GRAD_METHODS",
    "Sensitivities",
    "Solution",
    "SolverStats",
    "odeint",
    "sensitivities",
    "solve",
]


@dataclass
class Solution:
    """Result of :func:`solve`.

    Attributes:
        ys: the states at the output times, shape ``(T, *y0.shape)``.
        stats: the solver's counters.
        status: per-sample steps only (else ``None``): each member's outcome, ``(B,)`` int64
            codes of :data:`~physnode.solver.per_sample.STATUS` (``0`` ok; ``1`` max_steps,
            ``2`` step_too_small, ``3`` non_finite: its ``ys`` are NaN from the first output
            time it did not reach).
    """

    ys: torch.Tensor
    stats: SolverStats = field(default_factory=SolverStats)
    status: torch.Tensor | None = None


def solve(
    func: VectorField,
    y0: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str = "dopri5",
    grad: str = "aca",
    params: Sequence[torch.Tensor] | None = None,
    options: dict | None = None,
) -> Solution:
    """Like :func:`odeint` but returns a :class:`Solution` with the solver statistics (and,
    with ``options={"steps": "per-sample"}``, each member's status)."""
    gradient = get_gradient(grad)
    if isinstance(options, dict) and options.get("steps") == "per-sample":
        return _solve_per_sample(func, y0, t, rtol, atol, method, gradient, params, options)
    problem, y0, t_tensor = _problem(func, y0, t, rtol, atol, method, grad, options)
    diff = [p for p in _collect_params(func, params, y0) if p.requires_grad]
    needs = _needs_grad(y0, t_tensor, diff)
    hidden = _hidden(problem, gradient, t_tensor, y0, diff, needs)
    if not (hidden or needs):
        with torch.no_grad():
            return Solution(torch.stack(problem.run(y0).ys), problem.stats)
    refuse_compile(problem.options)
    return Solution(gradient.apply(problem, t_tensor, y0, diff), problem.stats)


def _problem(
    func, y0, t, rtol, atol, method: str, grad: str, options: dict | None
) -> tuple[Problem, torch.Tensor, torch.Tensor]:
    """Validate the arguments :func:`solve` and :func:`sensitivities` share; return the
    :class:`Problem` (with fresh stats), the checked ``y0`` and ``t`` as a tensor."""
    y0 = _check_state(y0)
    t_tensor, t_out = _check_times(t)
    rtol, atol, tab, opts = _check_settings(func, y0, rtol, atol, method, grad, options)
    return Problem(func, tab, t_out, rtol, atol, opts, SolverStats()), y0, t_tensor


def _check_settings(
    func, y0: torch.Tensor, rtol, atol, method: str, grad: str, options: dict | None
) -> tuple[float, float, ButcherTableau, SolverOptions]:
    """Check ``func``, the tolerances, the method, the options and that ``y0`` is finite
    (every solve's checks after its state and times); return ``(rtol, atol, tab, opts)``."""
    if not callable(func):
        raise InvalidInputError(f"func must be callable as func(t, y), got {type(func).__name__}")
    rtol, atol = _check_tolerances(rtol, atol)
    if method not in RK_METHODS:
        raise InvalidInputError(f"unknown method {method!r}; choose one of {sorted(RK_METHODS)}")
    tab = RK_METHODS[method]
    opts = _check_options(options, tab, grad, y0, rtol)
    _check_finite(y0)
    return rtol, atol, tab, opts


def _solve_per_sample(
    func, y0, t, rtol, atol, method: str, gradient: GradientMethod, params, options: dict
) -> Solution:
    """:func:`solve` with each row of a ``(B, D)`` batch on its own steps (see
    :mod:`physnode.solver.per_sample`); differentiable by the gradient methods that implement
    :meth:`~physnode.solver.gradients.base.GradientMethod.apply_per_sample`
    (:data:`PER_SAMPLE_GRADS`)."""
    grad = gradient.name
    y0 = _check_state(y0)
    if y0.ndim != 2:
        raise InvalidInputError(
            "options['steps']='per-sample' integrates a batch of independent states of shape "
            f"(B, D), got y0 of shape {tuple(y0.shape)}; reshape it to (B, D)"
        )
    t_tensor, t_grid = _check_sample_times(t, y0)
    rtol, atol, tab, opts = _check_settings(func, y0, rtol, atol, method, grad, options)
    diff = [p for p in _collect_params(func, params, y0) if p.requires_grad]
    stats = SolverStats()
    rhs = RHS(func, y0, stats.count_forward_eval)
    hidden = (
        hidden_leaves(rhs, t_grid[:, :1].to(y0.dtype), y0, diff) if torch.is_grad_enabled() else []
    )
    if not (_needs_grad(y0, t_tensor, diff) or hidden):
        with torch.no_grad():
            ys, status = integrate_per_sample(rhs, tab, t_grid, y0, rtol, atol, opts, stats)
        return Solution(ys, stats, status)
    if not gradient.per_sample or t_tensor.requires_grad:
        raise InvalidInputError(
            f"per-sample steps differentiate with grad in {list(PER_SAMPLE_GRADS)} (each "
            f"member's accepted steps), not with respect to t; got grad={grad!r}"
            f"{' and t requiring grad' if t_tensor.requires_grad else ''}. Choose one of "
            "those, solve under torch.no_grad(), or use options['steps']='shared'"
        )
    if hidden and not gradient.follows_closures(t_tensor):
        refuse_hidden(hidden, grad)
    problem = PerSampleProblem(func, tab, t_grid, rtol, atol, opts, stats)
    ys = gradient.apply_per_sample(problem, t_tensor, y0, diff)
    return Solution(ys, stats, problem.status)


#: the gradient methods per-sample steps support (those whose class sets ``per_sample``)
PER_SAMPLE_GRADS = tuple(name for name in GRAD_METHODS if get_gradient(name).per_sample)


def _check_sample_times(t, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample output times: ``(T,)`` shared by every member or ``(B, T)`` one row each,
    every row finite and strictly monotone, all in the same direction (checked on the whole
    grid at once). Returns ``t`` as a tensor and the ``(B, T)`` float64 grid on ``y0``'s
    device."""
    t_tensor = _as_times(t, "per-sample t must be (T,) or (B, T) times, every row as long")
    if t_tensor.ndim == 1:
        t_tensor, _ = _check_times(t_tensor)
        grid = t_tensor.detach().to(y0.device, torch.float64)
        return t_tensor, grid.unsqueeze(0).expand(y0.shape[0], -1)
    if t_tensor.ndim != 2 or t_tensor.shape[0] != y0.shape[0] or t_tensor.shape[1] < 2:
        raise InvalidTimeGridError(
            f"per-sample t must be (T,) or (B, T) with B = {y0.shape[0]} members and T >= 2, "
            f"got shape {tuple(t_tensor.shape)}"
        )
    grid = t_tensor.detach().to(y0.device, torch.float64)
    steps = grid.diff(dim=1)
    bad = ~torch.isfinite(grid).all(1) | ~((steps > 0).all(1) | (steps < 0).all(1))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise InvalidTimeGridError(
            f"member {i}'s times must be finite and strictly increasing or strictly "
            f"decreasing, got {grid[i].tolist()}"
        )
    if not bool(((steps[:, 0] > 0) == (steps[0, 0] > 0)).all()):
        raise InvalidTimeGridError(
            "per-sample t: every member's times must run in the same direction"
        )
    return t_tensor, grid


def _as_times(t, what: str) -> torch.Tensor:
    """``t`` as a real tensor (integers become float64); ``what`` says what was expected."""
    if not isinstance(t, torch.Tensor):
        try:
            t = torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidTimeGridError(f"{what}: {exc}") from exc
    if t.is_complex() or t.dtype == torch.bool:
        raise InvalidTimeGridError(f"{what}: got a tensor of dtype {t.dtype}")
    return t if t.is_floating_point() else t.to(torch.float64)


def _hidden(
    problem: Problem, gradient, t: torch.Tensor, y0: torch.Tensor, diff, needs: bool
) -> bool:
    """Whether ``func`` reads tensors that require grad outside ``diff`` (one evaluation, with
    grad mode on only); refused where ``gradient`` would drop their gradients. Skipped where
    the answer changes nothing: a method that follows closures, already differentiating."""
    if not torch.is_grad_enabled() or (needs and gradient.follows_closures(t)):
        return False
    rhs = RHS(problem.func, y0, problem.stats.count_forward_eval)
    hidden = hidden_leaves(rhs, problem.t_out[0], y0, diff)
    if hidden and not gradient.follows_closures(t):
        refuse_hidden(hidden, gradient.name)
    return bool(hidden)


@dataclass
class Sensitivities:
    """Result of :func:`sensitivities`.

    Attributes:
        ys: the states at the output times, shape ``(T, *y0.shape)``.
        jac: ``jac[k, c] = ∂ys[k] / ∂θ_c``, shape ``(T, P, *y0.shape)``: the columns are the
            entries of ``y0`` (row-major, when ``wrt_y0``), then those of each tensor of
            ``params`` (row-major, in order).
        stats: the counters of the solve (``nfe_forward``: augmented evaluations).
    """

    ys: torch.Tensor
    jac: torch.Tensor
    stats: SolverStats


def sensitivities(
    func: VectorField,
    y0: torch.Tensor,
    t: torch.Tensor | Sequence[float],
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str = "dopri5",
    params: Sequence[torch.Tensor] | None = None,
    options: dict | None = None,
    wrt_y0: bool = True,
) -> Sensitivities:
    """The states and their whole Jacobian ``∂y(t_k)/∂θ`` from one forward-mode solve (the
    variational equations, as ``grad="forward"``), for least squares and Fisher matrices.

    ``θ`` is ``y0`` (if ``wrt_y0``) and ``params``: the tensors given, else the parameters of
    ``func`` (an ``nn.Module``) that require grad. Arguments as :func:`odeint`; ``options``
    may hold ``sensitivity_control`` (default ``True``: the steps keep the Jacobian, not
    only the state, to the tolerance). Results carry no autograd graph.
    """
    problem, y0, _ = _problem(func, y0, t, rtol, atol, method, "forward", options)
    if params is None:  # the module's parameters that require grad
        chosen = [p for p in _collect_params(func, None, y0) if p.requires_grad]
    else:  # exactly the tensors given (the module's others are held fixed)
        chosen = _collect_params(None, params, y0)
    sens = integrate_sensitivities(problem, y0, chosen, wrt_y0)
    return Sensitivities(sens.ys, sens.jac, problem.stats)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _parameters_of(
    template: Callable[_P, object],
) -> Callable[[Callable[..., _R]], Callable[_P, _R]]:
    """Give the decorated ``fn(*args, **kwargs)`` the parameters of ``template``, declared
    once: for type checkers (``ParamSpec``) and for ``inspect.signature``/``help``."""

    def decorate(fn: Callable[..., _R]) -> Callable[_P, _R]:
        returns = inspect.signature(fn).return_annotation
        fn.__signature__ = inspect.signature(template).replace(  # type: ignore[attr-defined]
            return_annotation=returns
        )
        return fn

    return decorate


@_parameters_of(solve)
def odeint(*args, **kwargs) -> torch.Tensor:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every ``t``.

    ``odeint(func, y0, t, rtol=1e-7, atol=1e-9, method="dopri5", grad="aca", params=None,
    options=None)``: torchdiffeq's call shape. :func:`solve` declares these parameters and also
    returns the solver statistics.

    Args:
        func: the vector field ``func(t, y) -> dy/dt`` (same shape as ``y``); ``t`` arrives as a
            0-dim tensor of the state's dtype (see
            :class:`~physnode.solver.vector_field.VectorField`). An ``nn.Module`` (its
            parameters that require grad get gradients) or any callable, whose differentiable
            tensors go in ``params``.
        y0: initial state, shape ``(..., D)``; leading dimensions are a batch. float32/float64.
        t: output times, 1-D, at least 2, strictly increasing or strictly decreasing. Kept in
            float64 internally whatever the state's dtype.
        rtol, atol: relative and absolute tolerance of the adaptive error control.
        method: ``euler``, ``midpoint``, ``rk4`` (fixed step, ``options={"step_size": h}``) or
            ``bosh3``, ``dopri5``, ``tsit5``, ``dop853`` (adaptive, dense output).
        grad: how gradients are computed when any input requires them (one of
            :data:`GRAD_METHODS`): ``aca`` (adaptive checkpoint adjoint, default), ``adjoint``
            (continuous adjoint), ``backprop`` (autograd through the accepted steps) or
            ``naive`` (autograd through everything).
        params: extra tensors that need gradients (for plain callables): leaves or tensors
            computed from them (``k2 = 2 * k``; the gradient then reaches ``k``). With grad mode
            on, ``func`` is evaluated once at ``(t[0], y0)`` (counted in ``nfe_forward``) to
            find tensors it reads that require grad but are not declared: ``backprop`` and
            ``naive`` differentiate them (when ``t`` needs no gradient; they skip the check
            when a declared input needs a gradient anyway); ``aca``, ``adjoint`` and
            ``forward`` raise :class:`~physnode.errors.HiddenParameterError`.
        options: solver options, see :class:`~physnode.solver.options.SolverOptions`.

    Returns:
        Tensor of shape ``(len(t), *y0.shape)``; ``ys[0]`` equals ``y0``.

    Raises:
        InvalidInputError, InvalidTimeGridError, DtypeMismatchError, DeviceMismatchError,
        UnknownOptionError, HiddenParameterError: bad arguments. At ``backward()``:
        ModifiedInputError (``y0`` or a parameter changed in place since the solve),
        DoubleBackwardError (``create_graph=True`` through ``aca``/``adjoint``).
        MaxStepsReachedError, StepSizeTooSmallError, NonFiniteError: the solve could not complete
        (the message says at which t).
    """
    return solve(*args, **kwargs).ys


def _check_options(
    options: dict | None, tab: ButcherTableau, grad: str, y0: torch.Tensor, rtol: float
) -> SolverOptions:
    """Build the options and check what depends on the method and the state's dtype."""
    opts = SolverOptions.from_dict(options)
    SolverOptions.check_applies(options, tab.name, tab.adaptive, grad)
    eps = torch.finfo(y0.dtype).eps
    if tab.adaptive and 0 < rtol < 0.1 * eps:
        raise InvalidInputError(
            f"rtol={rtol:g} is below what {y0.dtype} can resolve (machine epsilon {eps:.2g}): "
            "the steps would shrink without end; use float64 or rtol >= "
            f"{0.1 * eps:.2g}"
        )
    return opts


def _needs_grad(y0: torch.Tensor, t: torch.Tensor, params: Sequence[torch.Tensor]) -> bool:
    """Whether autograd is on and some input of the solve requires grad."""
    return torch.is_grad_enabled() and (
        y0.requires_grad or t.requires_grad or any(p.requires_grad for p in params)
    )


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
    t_tensor = _as_times(t, "t must be a 1-D sequence of times")
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
