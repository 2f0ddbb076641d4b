"""The integration loop shared by every gradient method.

:func:`integrate` walks from ``t_out[0]`` to ``t_out[-1]`` with the adaptive controller (or fixed
steps), produces the state at every output time, and optionally records the accepted steps as
checkpoints ``(t_n, h_n, y_n)`` — all that the ACA backward pass needs to replay the solve.

The loop is a small mutable state (:class:`_LoopState`) advanced by named steps: clip the step
onto the next target (:func:`_clip_step`), check the step floor and the step budget, run the
stages, let the controller judge the trial (:func:`_judge`), then :func:`_accept` (record the
checkpoint, emit outputs by dense output) or :func:`_reject`. Everything fixed for the solve
lives in :class:`_Run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from physnode.errors import (
    InvalidInputError,
    MaxStepsReachedError,
    NonFiniteError,
    SolverError,
    StepSizeTooSmallError,
)
from physnode.solver.controller import StepSizeController
from physnode.solver.fused import CompiledStep, compiled_step
from physnode.solver.options import SolverOptions
from physnode.solver.stats import SolverStats
from physnode.solver.stepper import (
    RHS,
    Time,
    dense_output,
    error_ratio,
    extra_stages,
    initial_step,
    stages,
)
from physnode.solver.tableaus import ButcherTableau
from physnode.solver.vector_field import one_solve

_EPS64 = 2.220446049250313e-16


@dataclass
class ForwardRecord:
    """What one forward integration produced.

    Attributes:
        ys: states at the output times, each of the state's shape.
        checkpoints: accepted steps ``(t_n, h_n, y_n)`` (only when recorded).
        outputs: for each checkpoint, the output indices ``k`` and their ``θ`` inside the step
            (``θ = 1`` means the step ends exactly on ``t_k``).
    """

    ys: list[torch.Tensor]
    checkpoints: list[tuple[float, float, torch.Tensor]] = field(default_factory=list)
    outputs: list[list[tuple[int, float]]] = field(default_factory=list)


@dataclass(frozen=True)
class _Run:
    """What stays fixed during one integration (see :func:`integrate` for the arguments)."""

    rhs: RHS
    tab: ButcherTableau
    t_out: list[float]
    rtol: float
    atol: float | torch.Tensor
    options: SolverOptions
    stats: SolverStats
    record: bool
    naive: bool
    n_norm: int | None
    groups: int
    direction: float
    span: float
    #: fixed-step methods: the signed step every trial starts from
    fixed_h: float
    controller: StepSizeController | None
    #: ``options["compile"]``: the compiled trial step (``None``: eager stages)
    fused: CompiledStep | None = None


@dataclass
class _LoopState:
    """What changes from one step attempt to the next."""

    t: Time
    y: torch.Tensor
    h: Time
    #: ``f(t, y)`` when known (FSAL or the first step), else ``None``
    f0: torch.Tensor | None
    #: index of the next output time to produce
    k_next: int = 1
    n_trials: int = 0
    after_reject: bool = False
    last_nonfinite: bool = False


def _scalar(x: float | torch.Tensor) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else x


def _floor(options: SolverOptions, t: float, span: float) -> float:
    if options.min_step is not None:
        return options.min_step
    return 16 * _EPS64 * max(abs(t), abs(span) * 1e-3, 1e-300)


@one_solve
def integrate(
    rhs: RHS,
    tab: ButcherTableau,
    t_out: list[float],
    y0: torch.Tensor,
    rtol: float,
    atol: float | torch.Tensor,
    options: SolverOptions,
    stats: SolverStats,
    *,
    record: bool = False,
    naive: bool = False,
    n_norm: int | None = None,
    groups: int = 1,
) -> ForwardRecord:
    """Integrate ``dy/dt = rhs(t, y)`` and return the states at ``t_out``.

    Args:
        rhs: the wrapped vector field.
        tab: the Runge–Kutta method.
        t_out: output times (float64), strictly monotone, ``t_out[0]`` the start.
        y0: initial state, any shape.
        rtol, atol: tolerances of the mixed error norm (adaptive methods).
        options: validated solver options.
        stats: updated in place (``n_accepted``, ``n_rejected``).
        record: keep the accepted steps as checkpoints (ACA).
        naive: keep step sizes as tensors so autograd differentiates through the controller.
        n_norm: seminorm: only the first ``n_norm`` entries of a flat state enter the error norm.
        groups: the error norm is the largest over this many equal groups of a flat state (a
            state and its sensitivities); the first step is chosen from the first group.
        ``atol`` may be a tensor of ``y0``'s shape (one absolute tolerance per entry).

    The caller chooses the autograd mode (``no_grad`` for ACA/adjoint forward passes).
    """
    direction = 1.0 if t_out[-1] > t_out[0] else -1.0
    step_size = options.step_size if options.step_size is not None else math.inf
    controller = StepSizeController(tab.error_order, options) if tab.adaptive else None
    run = _Run(
        rhs, tab, t_out, rtol, atol, options, stats, record, naive, n_norm, groups,
        direction=direction, span=t_out[-1] - t_out[0], fixed_h=direction * step_size,
        controller=controller,
    )  # fmt: skip
    state = _initial_state(run, y0)
    if options.compile:
        run = replace(run, fused=_compiled(run, state))
    out = ForwardRecord(ys=[y0])
    while state.k_next < len(t_out):
        _attempt_step(run, state, out)
    if not tab.adaptive:
        _check_fixed_step_outputs(out.ys, t_out)
    return out


def _initial_state(run: _Run, y0: torch.Tensor) -> _LoopState:
    """Evaluate ``f(t0, y0)`` and choose the first step."""
    t0 = run.t_out[0]
    f0 = run.rhs(t0, y0)
    if not run.tab.adaptive:
        return _LoopState(t=t0, y=y0, h=run.fixed_h, f0=f0)
    with torch.no_grad():
        if not bool(torch.isfinite(f0).all()):
            raise NonFiniteError(
                f"the derivative func(t0, y0) is not finite at t={t0:.6g}; check y0 and the "
                "model's parameters",
                t=t0,
            )
    if run.options.first_step is not None:
        h_abs = run.options.first_step
    else:
        h_abs = initial_step(
            run.rhs, t0, y0, f0, run.direction, run.tab.error_order, run.rtol, run.atol,
            run.n_norm if run.groups == 1 else y0.numel() // run.groups,
        )  # fmt: skip
    h_abs = min(h_abs, run.options.max_step, abs(run.span))
    return _LoopState(t=t0, y=y0, h=run.direction * h_abs, f0=f0)


def _compiled(run: _Run, state: _LoopState) -> CompiledStep | None:
    """The compiled step of ``options["compile"]`` (``None``: it fell back to eager, warned);
    refused where the loop needs more than a plain adaptive solve of the state."""
    if (
        not run.tab.adaptive or run.record or run.naive or run.n_norm is not None
        or run.groups != 1 or isinstance(run.atol, torch.Tensor) or torch.is_grad_enabled()
    ):  # fmt: skip
        raise InvalidInputError(
            "options['compile'] applies to adaptive solves without gradients only (no "
            "checkpoints, sensitivities or adjoint); solve under torch.no_grad() with inputs "
            "that need no gradient, or drop the option"
        )
    assert state.f0 is not None  # internal invariant: the first step knows f(t0, y0)
    fused = compiled_step(run.rhs.func, run.tab, state.y, state.f0, run.rtol, float(run.atol))
    if fused is not None:
        run.stats.compile_seconds += fused.compile_seconds
    return fused


def _attempt_step(run: _Run, state: _LoopState, out: ForwardRecord) -> None:
    """One trial step from ``state``: clip it, check it, run the stages, accept or reject."""
    t_float = _scalar(state.t)
    target, h_float, lands = _clip_step(run, state, t_float)
    floor = _floor(run.options, t_float, run.span)
    if abs(h_float) < floor and not lands:
        raise _step_floor_error(run, state, t_float, h_float, floor)
    state.n_trials += 1
    if state.n_trials > run.options.max_steps:
        raise _max_steps_error(run, t_float)
    if state.f0 is None:
        state.f0 = run.rhs(state.t, state.y)
    if run.fused is not None:
        y1, ks, ratio = run.fused(t_float, h_float, state.y, state.f0)
        _count_evals(run.rhs, run.fused.n_evals)
        accepted, factor = _decide(run, state, ratio, None)
    else:
        y1, ks = stages(run.rhs, run.tab, state.t, state.h, state.y, state.f0)
        accepted, factor = _judge(run, state, y1, ks)
    if not accepted:
        _reject(run, state, factor)
        return
    t_next = target if lands else state.t + state.h
    _accept(run, state, out, t_float, t_next, y1, ks, factor)


def _clip_step(run: _Run, state: _LoopState, t_float: float) -> tuple[float, float, bool]:
    """Shorten ``state.h`` onto this step's target and under ``max_step``.

    The target is the end for adaptive methods (outputs come from dense output) and the next
    output time for fixed-step methods (outputs land on step ends). Returns ``(target,
    h_float, lands)``: ``lands`` when the step ends exactly on the target.
    """
    adaptive = run.tab.adaptive
    target = run.t_out[-1] if adaptive else run.t_out[state.k_next]
    remaining = target - t_float
    if not adaptive:
        state.h = run.fixed_h
    h_float = _scalar(state.h)
    # a step within 1e-8 relative of the target is stretched onto it rather than leaving a
    # sliver of a step behind (the stretch changes the local error by ~1e-8 of itself)
    lands = abs(remaining) <= abs(h_float) * (1 + 1e-8)
    if lands:
        state.h = remaining if not isinstance(state.h, torch.Tensor) else (target - state.t)
        h_float = remaining
    if adaptive and abs(h_float) > run.options.max_step:
        state.h = run.direction * run.options.max_step
        h_float = _scalar(state.h)
        lands = False
    return target, h_float, lands


def _step_floor_error(
    run: _Run, state: _LoopState, t_float: float, h_float: float, floor: float
) -> SolverError:
    """The error for a step below the floor: non-finite states, or a stiff/singular problem."""
    if state.last_nonfinite:
        return NonFiniteError(
            f"the state or its derivative became NaN/inf near t={t_float:.10g} and "
            "shrinking the step did not help; the model is singular there (for N-body, "
            "a collision: add softening)",
            t=t_float,
        )
    hint = (
        " float32 cannot resolve rtol below ~1e-6: use float64 or loosen rtol;"
        if state.y.dtype == torch.float32 and run.rtol < 1e-6
        else ""
    )
    return StepSizeTooSmallError(
        f"step size {abs(h_float):.3g} fell below the floor {floor:.3g} at "
        f"t={t_float:.10g}: the problem is stiff or nearly singular there (for N-body, "
        f"a close encounter: add softening).{hint} Loosen rtol/atol or lower "
        "options['min_step']",
        t=t_float,
    )


def _max_steps_error(run: _Run, t_float: float) -> MaxStepsReachedError:
    return MaxStepsReachedError(
        f"reached max_steps={run.options.max_steps} at t={t_float:.10g} of "
        f"[{run.t_out[0]:.6g}, {run.t_out[-1]:.6g}]; increase options['max_steps'], loosen "
        "rtol/atol, or shorten the time span",
        t=t_float,
    )


def _judge(
    run: _Run, state: _LoopState, y1: torch.Tensor, ks: list[torch.Tensor]
) -> tuple[bool, float | torch.Tensor]:
    """Accept or reject the trial and give the step-size factor (fixed step: always accept).

    A non-finite error ratio rejects the trial with factor 0.25 and marks ``last_nonfinite``.
    """
    if not run.tab.adaptive:
        return True, 1.0
    ratio_t = error_ratio(
        run.tab, state.h, ks, state.y, y1, run.rtol, run.atol, run.n_norm, run.groups, run.naive
    )  # the one host synchronisation per step
    ratio = float(ratio_t.detach()) if isinstance(ratio_t, torch.Tensor) else ratio_t
    return _decide(run, state, ratio, ratio_t if run.naive else None)


def _decide(
    run: _Run, state: _LoopState, ratio: float, ratio_grad: torch.Tensor | None
) -> tuple[bool, float | torch.Tensor]:
    """The controller's verdict on an error ratio (``ratio_grad``: the same as a tensor for
    the ``naive`` gradient, else ``None``)."""
    if not math.isfinite(ratio):
        state.last_nonfinite = True
        return False, 0.25
    state.last_nonfinite = False
    accepted = ratio <= 1.0
    assert run.controller is not None  # internal invariant: adaptive methods have one
    factor = run.controller.factor(ratio, ratio_grad, accepted, state.after_reject)
    return accepted, factor


def _count_evals(rhs: RHS, n: int) -> None:
    """Count ``n`` evaluations made inside a compiled step as ``rhs`` counts its own."""
    if rhs.on_eval is not None:
        for _ in range(n):
            rhs.on_eval()


def _reject(run: _Run, state: _LoopState, factor: float | torch.Tensor) -> None:
    run.stats.n_rejected += 1
    state.after_reject = True
    state.h = state.h * factor


def _accept(
    run: _Run,
    state: _LoopState,
    out: ForwardRecord,
    t_float: float,
    t_next: Time,
    y1: torch.Tensor,
    ks: list[torch.Tensor],
    factor: float | torch.Tensor,
) -> None:
    """Count the step, record its checkpoint, emit its outputs and move the state to its end."""
    run.stats.n_accepted += 1
    if run.record:
        out.checkpoints.append((t_float, _scalar(state.h), state.y))
        out.outputs.append([])
    _emit_outputs(run, state, out, t_next, y1, ks)
    h_used = state.h
    state.t, state.y = t_next, y1
    state.f0 = ks[-1] if run.tab.fsal else None
    state.after_reject = False
    if run.tab.adaptive:
        state.h = h_used * factor


def _emit_outputs(
    run: _Run,
    state: _LoopState,
    out: ForwardRecord,
    t_next: Time,
    y1: torch.Tensor,
    ks: list[torch.Tensor],
) -> None:
    """Append the state at every output time the step ``state.t -> t_next`` reaches: ``y1``
    when the step ends on it, else the dense output (extra stages evaluated once)."""
    tab, t_out = run.tab, run.t_out
    t, y, h_used = state.t, state.y, state.h
    ks_dense = None
    t_next_float = _scalar(t_next)
    while state.k_next < len(t_out) and run.direction * (t_out[state.k_next] - t_next_float) <= 0:
        tk = t_out[state.k_next]
        if tk == t_next_float:
            y_k, theta = y1, 1.0
        else:
            if ks_dense is None:
                ks_dense = _extra_stages(run, t, h_used, y, ks)
            theta = (tk - t) / h_used
            if run.fused is not None:
                y_k = run.fused.dense_output(t, h_used, theta, y, ks_dense)
            else:
                y_k = dense_output(tab, y, h_used, ks_dense, theta)
            theta = _scalar(theta)
        out.ys.append(y_k)
        if run.record:
            out.outputs[-1].append((state.k_next, theta))
        state.k_next += 1


def _extra_stages(run: _Run, t: Time, h: Time, y: torch.Tensor, ks):
    """The step's stages with the dense output's extra ones (compiled where the step is)."""
    if not run.tab.extra_c:
        return ks
    if run.fused is not None:
        _count_evals(run.rhs, run.fused.n_extra_evals)
        return run.fused.extra_stages(t, h, y, ks)
    return extra_stages(run.rhs, run.tab, t, h, y, ks)


def _check_fixed_step_outputs(ys: list[torch.Tensor], t_out: list[float]) -> None:
    """Fixed-step methods have no error control: refuse outputs that are NaN/inf."""
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(v).all() for v in ys])
        if not bool(finite.all()):
            k = int((~finite).nonzero()[0])
            raise NonFiniteError(
                f"the state became NaN/inf by t={t_out[k]:.10g}; reduce options['step_size'] "
                "or use an adaptive method",
                t=t_out[k],
            )
