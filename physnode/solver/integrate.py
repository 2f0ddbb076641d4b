"""The integration loop shared by every gradient method.

:func:`integrate` walks from ``t_out[0]`` to ``t_out[-1]`` with the adaptive controller (or fixed
steps), produces the state at every output time, and optionally records the accepted steps as
checkpoints ``(t_n, h_n, y_n)`` — all that the ACA backward pass needs to replay the solve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from physnode.errors import MaxStepsReachedError, NonFiniteError, StepSizeTooSmallError
from physnode.solver.controller import StepSizeController
from physnode.solver.options import SolverOptions
from physnode.solver.stepper import (
    RHS,
    dense_output,
    error_ratio,
    extra_stages,
    initial_step,
    stages,
)
from physnode.solver.tableaus import ButcherTableau

_EPS64 = 2.220446049250313e-16


@dataclass
class Trajectory:
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


def _scalar(x: float | torch.Tensor) -> float:
    return float(x.detach()) if isinstance(x, torch.Tensor) else x


def _floor(options: SolverOptions, t: float, span: float) -> float:
    if options.min_step is not None:
        return options.min_step
    return 16 * _EPS64 * max(abs(t), abs(span) * 1e-3, 1e-300)


def integrate(
    rhs: RHS,
    tab: ButcherTableau,
    t_out: list[float],
    y0: torch.Tensor,
    rtol: float,
    atol: float,
    options: SolverOptions,
    stats,
    *,
    record: bool = False,
    naive: bool = False,
    n_norm: int | None = None,
) -> Trajectory:
    """Integrate ``dy/dt = rhs(t, y)`` and return the states at ``t_out``.

    Args:
        rhs: the wrapped vector field.
        tab: the Runge–Kutta method.
        t_out: output times (float64), strictly monotone, ``t_out[0]`` the start.
        y0: initial state, any shape.
        rtol, atol: tolerances of the mixed error norm (adaptive methods).
        options: validated solver options.
        stats: a ``SolverStats`` updated in place (accepted/rejected steps).
        record: keep the accepted steps as checkpoints (ACA).
        naive: keep step sizes as tensors so autograd differentiates through the controller.
        n_norm: seminorm: only the first ``n_norm`` entries of a flat state enter the error norm.

    The caller chooses the autograd mode (``no_grad`` for ACA/adjoint forward passes).
    """
    t0, t_end = t_out[0], t_out[-1]
    direction = 1.0 if t_end > t0 else -1.0
    span = t_end - t0
    traj = Trajectory(ys=[y0])
    k_next = 1
    n_out = len(t_out)
    y = y0
    t: float | torch.Tensor = t0
    f0 = rhs(t0, y0)
    adaptive = tab.adaptive
    controller = StepSizeController(tab.error_order, options) if adaptive else None
    if adaptive:
        with torch.no_grad():
            if not bool(torch.isfinite(f0).all()):
                raise NonFiniteError(
                    f"the derivative func(t0, y0) is not finite at t={t0:.6g}; check y0 and the "
                    "model's parameters",
                    t=t0,
                )
        if options.first_step is not None:
            h_abs = options.first_step
        else:
            h_abs = initial_step(rhs, t0, y0, f0, direction, tab.error_order, rtol, atol, n_norm)
        h_abs = min(h_abs, options.max_step, abs(span))
    else:
        h_abs = options.step_size if options.step_size is not None else math.inf
    h: float | torch.Tensor = direction * h_abs
    after_reject = False
    last_nonfinite = False
    n_trials = 0

    while k_next < n_out:
        t_float = _scalar(t)
        # target of this step: the end for adaptive methods (outputs come from dense output),
        # the next output time for fixed-step methods (outputs land on step ends)
        target = t_end if adaptive else t_out[k_next]
        remaining = target - t_float
        if not adaptive:
            h = direction * h_abs
        h_float = _scalar(h)
        # a step within 1e-8 relative of the target is stretched onto it rather than leaving a
        # sliver of a step behind (the stretch changes the local error by ~1e-8 of itself)
        lands = abs(remaining) <= abs(h_float) * (1 + 1e-8)
        if lands:
            h = remaining if not isinstance(h, torch.Tensor) else (target - t)
            h_float = remaining
        if adaptive and abs(h_float) > options.max_step:
            h = direction * options.max_step
            h_float = _scalar(h)
            lands = False
        floor = _floor(options, t_float, span)
        if abs(h_float) < floor and not lands:
            if last_nonfinite:
                raise NonFiniteError(
                    f"the state or its derivative became NaN/inf near t={t_float:.10g} and "
                    "shrinking the step did not help; the model is singular there (for N-body, "
                    "a collision: add softening)",
                    t=t_float,
                )
            hint = (
                " float32 cannot resolve rtol below ~1e-6: use float64 or loosen rtol;"
                if y.dtype == torch.float32 and rtol < 1e-6
                else ""
            )
            raise StepSizeTooSmallError(
                f"step size {abs(h_float):.3g} fell below the floor {floor:.3g} at "
                f"t={t_float:.10g}: the problem is stiff or nearly singular there (for N-body, "
                f"a close encounter: add softening).{hint} Loosen rtol/atol or lower "
                "options['min_step']",
                t=t_float,
            )
        n_trials += 1
        if n_trials > options.max_steps:
            raise MaxStepsReachedError(
                f"reached max_steps={options.max_steps} at t={t_float:.10g} of "
                f"[{t0:.6g}, {t_end:.6g}]; increase options['max_steps'], loosen rtol/atol, or "
                "shorten the time span",
                t=t_float,
            )
        if f0 is None:
            f0 = rhs(t, y)
        y1, ks = stages(rhs, tab, t, h, y, f0)

        if adaptive:
            ratio_t = error_ratio(tab, h, ks, y, y1, rtol, atol, n_norm)
            ratio = float(ratio_t.detach())  # the one host synchronisation per step
            if not math.isfinite(ratio):
                stats.n_rejected += 1
                last_nonfinite = True
                after_reject = True
                h = h * 0.25
                continue
            last_nonfinite = False
            accepted = ratio <= 1.0
            factor = controller.factor(ratio, ratio_t if naive else None, accepted, after_reject)
        else:
            accepted, factor = True, 1.0

        if not accepted:
            stats.n_rejected += 1
            after_reject = True
            h = h * factor
            continue

        stats.n_accepted += 1
        t_next = target if lands else t + h
        h_used = h
        if record:
            traj.checkpoints.append((t_float, _scalar(h_used), y))
            traj.outputs.append([])
        ks_dense = None
        t_next_float = _scalar(t_next)
        while k_next < n_out and direction * (t_out[k_next] - t_next_float) <= 0:
            tk = t_out[k_next]
            if tk == t_next_float:
                y_k, theta = y1, 1.0
            else:
                if ks_dense is None:
                    ks_dense = extra_stages(rhs, tab, t, h_used, y, ks) if tab.extra_c else ks
                theta = (tk - t) / h_used
                y_k = dense_output(tab, y, h_used, ks_dense, theta)
                theta = _scalar(theta)
            traj.ys.append(y_k)
            if record:
                traj.outputs[-1].append((k_next, theta))
            k_next += 1
        t, y = t_next, y1
        f0 = ks[-1] if tab.fsal else None
        after_reject = False
        if adaptive:
            h = h_used * factor

    if not adaptive:
        with torch.no_grad():
            finite = torch.stack([torch.isfinite(v).all() for v in traj.ys])
            if not bool(finite.all()):
                k = int((~finite).nonzero()[0])
                raise NonFiniteError(
                    f"the state became NaN/inf by t={t_out[k]:.10g}; reduce options['step_size'] "
                    "or use an adaptive method",
                    t=t_out[k],
                )
    return traj
