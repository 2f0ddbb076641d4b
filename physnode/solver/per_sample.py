"""Per-sample adaptive steps for a batch of independent states (``options={"steps":
"per-sample"}``).

Each row of a ``(B, D)`` batch has its own time, step size, accept/reject decision, controller
memory, output times and status, so an easy member is not held to the steps of the hardest one,
and a member that finishes or fails leaves the working batch: its rows are dropped by
``index_select``, so later steps evaluate the vector field only on the members still running.
Every operation is row-wise, so a member's result does not depend on which other members share
its batch (given a ``func`` that treats rows independently, which :func:`check_row_wise`
probes).

The formulas are those of the shared loop in :mod:`physnode.solver.integrate` (initial step,
error norm, I/PI controller, step floor, landing on the end, dense output), applied per row.
Run under autograd, the loop is differentiated as it went (``grad="backprop"``): only the
accepted steps carry gradient, exactly as backprop through one member's own solve.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch

from physnode.errors import (
    InvalidInputError,
    MaxStepsReachedError,
    NonFiniteError,
    SolverError,
    StepSizeTooSmallError,
)
from physnode.solver.options import SolverOptions
from physnode.solver.stats import SolverStats
from physnode.solver.stepper import RHS
from physnode.solver.tableaus import ButcherTableau
from physnode.solver.vector_field import one_solve

__all__ = [
    "STATUS",
    "SampleFailureWarning",
    "StepRecord",
    "check_row_wise",
    "integrate_per_sample",
    "row_dense",
    "row_extra_stages",
    "row_stages",
]

#: a member's status code is its index here; ``ys`` of a failed member is NaN from the first
#: output time it did not reach
STATUS = ("ok", "max_steps", "step_too_small", "non_finite")
_OK, _MAX_STEPS, _TOO_SMALL, _NON_FINITE = range(4)
_EPS64 = 2.220446049250313e-16


class SampleFailureWarning(UserWarning):
    """Some members of a per-sample batch failed; the others completed (see
    ``Solution.status``)."""


@dataclass
class _Rows:
    """The working batch: the members still running and what each carries (one row each)."""

    index: torch.Tensor  # (b,) their rows in the whole batch
    t: torch.Tensor  # (b,) float64
    h: torch.Tensor  # (b,) float64, signed
    y: torch.Tensor  # (b, D)
    f0: torch.Tensor  # (b, D) f(t, y)
    k_next: torch.Tensor  # (b,) index of the next output time
    trials: torch.Tensor  # (b,) step attempts so far
    prev_ratio: torch.Tensor  # (b,) float64, the PI controller's memory
    after_reject: torch.Tensor  # (b,) bool
    last_nonfinite: torch.Tensor  # (b,) bool

    def keep(self, mask: torch.Tensor) -> _Rows:
        """The rows where ``mask`` holds (one ``index_select`` per field)."""
        idx = mask.nonzero().squeeze(-1)
        return _Rows(*(getattr(self, f.name).index_select(0, idx) for f in fields(self)))


@dataclass
class StepRecord:
    """The accepted steps of a per-sample solve, one entry per loop iteration that accepted
    any: ``steps[n] = (members, t, h, y)`` (the accepted members' indices ``(a,)``, their
    times, steps and states at the step's start) and ``outputs[n]``, a list of
    ``(k, members, theta, on_end)`` groups: output ``k`` of each listed member lies at
    ``θ`` in its step (``on_end``: the step ends on it, the output is its end state)."""

    steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = field(
        default_factory=list
    )
    outputs: list[list[tuple[torch.Tensor, ...]]] = field(default_factory=list)

    def add(self, rows: _Rows, accept: torch.Tensor) -> None:
        """Keep the accepted rows' start of step (a checkpoint each)."""
        at = accept.nonzero().squeeze(-1)
        self.steps.append(
            tuple(x.index_select(0, at) for x in (rows.index, rows.t, rows.h, rows.y))
        )
        self.outputs.append([])


@one_solve
def integrate_per_sample(
    rhs: RHS,
    tab: ButcherTableau,
    t_grid: torch.Tensor,
    y0: torch.Tensor,
    rtol: float,
    atol: float,
    options: SolverOptions,
    stats: SolverStats,
    record: StepRecord | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate every row of ``y0`` ``(B, D)`` with its own adaptive steps.

    Args:
        rhs: the wrapped vector field; it receives ``t`` of shape ``(b, 1)`` (each running
            member's own time, in the state's dtype) and the ``(b, D)`` states of the members
            still running.
        tab: an adaptive Runge–Kutta method.
        t_grid: output times, float64 ``(B, T)`` on ``y0``'s device; row ``i`` is member
            ``i``'s, strictly monotone, every row in the same direction.
        rtol, atol: tolerances of the mixed error norm, per member.
        options: validated options (``max_steps`` counts each member's own attempts).
        stats: ``n_accepted``/``n_rejected`` summed over members, ``n_sample_evals`` the rows
            evaluated; ``nfe_forward`` counts calls of ``func`` (through ``rhs``).
        record: filled with every accepted step (ACA's checkpoints), when given.

    Returns:
        ``(ys, status)``: ``ys`` ``(T, B, D)``, NaN where a failed member did not reach an
        output; ``status`` ``(B,)`` int64 codes of :data:`STATUS`. With
        ``options.sample_failure == "raise"`` the first failure's
        :class:`~physnode.errors.SolverError` is raised as it happens (which member, what,
        where), without integrating the others further;
        else one :class:`SampleFailureWarning` names how many failed.
    """
    if not tab.adaptive:
        raise AssertionError("per-sample steps are for adaptive methods")  # refused by solve
    ys = torch.full((t_grid.shape[1], *y0.shape), math.nan, dtype=y0.dtype, device=y0.device)
    ys[0] = y0
    status = torch.zeros(y0.shape[0], dtype=torch.int64, device=y0.device)
    run = _Run(rhs, tab, t_grid, rtol, atol, options, stats, ys, status, record)
    rows = run.start(y0)
    while rows.index.numel():
        rows = run.attempt(rows)
    run.report()
    return run.ys, status


def check_row_wise(rhs: RHS, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor) -> None:
    """Refuse a ``func`` whose rows are not independent: per-sample steps evaluate it on
    subsets of the batch. The first and the last row are each evaluated alone (two
    evaluations; a field that reads a reference row, a batch statistic or a neighbour changes
    at least one of them) and compared with ``f0`` (the whole batch's) within rounding (1000
    epsilons of the row's largest derivative: a different batch size may change BLAS's
    summation order, coupling changes far more).

    Args:
        t0: ``(B, 1)`` start times in the state's dtype; ``y0``, ``f0``: ``(B, D)``.

    Raises:
        InvalidInputError: ``func`` fails on one row or gives that row a different value.
    """
    if y0.shape[0] < 2:
        return
    for row in (0, y0.shape[0] - 1):
        try:
            with torch.no_grad():
                alone = rhs(t0[row : row + 1], y0[row : row + 1].detach())[0]
        except (RuntimeError, ValueError, IndexError, InvalidInputError) as exc:
            raise InvalidInputError(
                "steps='per-sample' evaluates func on the members still running (a subset of "
                f"the batch's rows), but func failed on one row: {exc}. Make func treat rows "
                "independently, or use steps='shared'"
            ) from exc
        if not _same_within_rounding(alone, f0[row].detach()):
            raise InvalidInputError(
                f"func couples the rows of the batch (row {row}'s derivative changes when it "
                "is evaluated alone): per-sample steps need each member's derivative to depend "
                "on that member only; use steps='shared'"
            )


def _same_within_rounding(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` equals ``b`` to 1000 epsilons of ``b``'s largest entry (NaN = NaN)."""
    size = float(b.nan_to_num(0.0, 0.0, 0.0).abs().max().clamp_min(1e-300))
    tol = 1000 * torch.finfo(b.dtype).eps * size
    return bool((((a - b).abs() <= tol) | (a.isnan() & b.isnan()) | (a == b)).all())


class _Run:
    """One per-sample integration: the fixed settings and the outputs being filled."""

    def __init__(
        self, rhs: RHS, tab: ButcherTableau, t_grid: torch.Tensor, rtol: float, atol: float,
        options: SolverOptions, stats: SolverStats, ys: torch.Tensor, status: torch.Tensor,
        record: StepRecord | None,
    ) -> None:  # fmt: skip
        """Arguments as :func:`integrate_per_sample`; ``ys`` ``(T, B, D)`` and ``status``
        ``(B,)`` are filled in place."""
        self.rhs, self.tab, self.t_grid, self.record = rhs, tab, t_grid, record
        self.rtol, self.atol, self.options, self.stats = rtol, atol, options, stats
        self.ys, self.status = ys, status
        self.t_end = t_grid[:, -1]
        self.span = (t_grid[:, -1] - t_grid[:, 0]).abs()
        self.direction = 1.0 if float(t_grid[0, -1] - t_grid[0, 0]) > 0 else -1.0
        self.failures: list[tuple[int, int, float]] = []  # (member, code, t)
        beta1, beta2 = (
            (options.pcoeff + options.icoeff, options.pcoeff)
            if options.controller == "pi"
            else (1.0, 0.0)
        )
        k = tab.error_order + 1
        self.exponents = (beta1 / k, beta2 / k)

    # -- evaluation ----------------------------------------------------------------------------
    def f(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``func`` at each row's time ``t`` ``(b,)`` float64."""
        self.stats.n_sample_evals += y.shape[0]
        return self.rhs(t.to(y.dtype).unsqueeze(-1), y)

    # -- start ---------------------------------------------------------------------------------
    def start(self, y0: torch.Tensor) -> _Rows:
        """Every member at its start, with its first step; members whose ``f(t0, y0)`` is not
        finite fail at once."""
        batch, dev = y0.shape[0], y0.device
        t = self.t_grid[:, 0].clone()
        f0 = self.f(t, y0)
        check_row_wise(self.rhs, t.to(y0.dtype).unsqueeze(-1), y0, f0)
        zeros = torch.zeros(batch, dtype=torch.int64, device=dev)
        false = torch.zeros(batch, dtype=torch.bool, device=dev)
        rows = _Rows(
            torch.arange(batch, device=dev), t, torch.zeros_like(t), y0, f0, zeros + 1, zeros,
            torch.ones_like(t), false, false,
        )  # fmt: skip
        rows = self._fail(rows, torch.where(_finite_rows(f0), _OK, _NON_FINITE))
        if not rows.index.numel():
            return rows
        if self.options.first_step is not None:
            h_abs = torch.full_like(rows.t, self.options.first_step)
        else:
            h_abs = self._initial_step(rows)
        span = self.span.index_select(0, rows.index)
        rows.h = self.direction * torch.minimum(h_abs.clamp(max=self.options.max_step), span)
        return rows

    def _initial_step(self, rows: _Rows) -> torch.Tensor:
        """Hairer, Nørsett & Wanner's starting step per row (one extra evaluation)."""
        y0, f0 = rows.y.detach(), rows.f0.detach()
        with torch.no_grad():
            scale = y0.abs().mul(self.rtol).add(self.atol)
            d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
            small = (d0 < 1e-5) | (d1 < 1e-5)
            h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
            y1 = y0 + (self.direction * h0).to(y0.dtype).unsqueeze(-1) * f0
            d2 = _rms((self.f(rows.t + self.direction * h0, y1) - f0) / scale) / h0
            d2 = torch.where(torch.isfinite(d2), d2, torch.full_like(d2, math.inf))
            dmax = torch.maximum(d1, d2)
            h1 = torch.where(
                dmax <= 1e-15,
                torch.clamp(h0 * 1e-3, min=1e-6),
                (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / (self.tab.error_order + 1)),
            )
        return torch.minimum(100 * h0, h1)

    # -- one trial step of every running row ---------------------------------------------------
    def attempt(self, rows: _Rows) -> _Rows:
        """One trial step of every running member: check, stages, judge, emit, advance."""
        rows, lands = self._check(rows)
        if not rows.index.numel():
            return rows
        y1, ks = row_stages(self.f, self.tab, rows.t, rows.h, rows.y, rows.f0)
        with torch.no_grad():  # the steps are chosen, not differentiated (as backprop)
            ratio = self._error_ratio(rows, ks, y1)
        finite = torch.isfinite(ratio)
        accept = finite & (ratio <= 1.0)
        n_accepted = int(accept.sum())  # the one host synchronisation of a step
        if torch.is_grad_enabled() and not bool(finite.all()):
            y1, ks = self._restage(rows, finite, y1, ks)
        self.stats.n_accepted += n_accepted
        self.stats.n_rejected += rows.index.numel() - n_accepted
        t_new = torch.where(lands, self.t_end.index_select(0, rows.index), rows.t + rows.h)
        if n_accepted:
            if self.record is not None:
                self.record.add(rows, accept)
            self._emit(rows, accept, t_new, y1, ks)
        factor = self._factor(rows, ratio, accept, finite)
        return self._advance(rows, accept, finite, t_new, y1, ks, factor, ratio)

    def _restage(
        self, rows: _Rows, finite: torch.Tensor, y1: torch.Tensor, ks: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Under autograd (``grad="backprop"``): the step rebuilt on the rows whose trial was
        finite only, the others' values detached. A non-finite trial's stages would send
        ``0 · inf = NaN`` through ``func``'s backward into every member's parameter gradient,
        although ``torch.where`` gives them no weight."""
        at = finite.nonzero().squeeze(-1)
        if not at.numel():
            return y1.detach(), [k.detach() for k in ks]
        y1_f, ks_f = row_stages(
            self.f, self.tab, *(x.index_select(0, at) for x in (rows.t, rows.h, rows.y, rows.f0))
        )
        y1 = y1.detach().index_copy(0, at, y1_f)
        return y1, [k.detach().index_copy(0, at, k_f) for k, k_f in zip(ks, ks_f, strict=True)]

    def _check(self, rows: _Rows) -> tuple[_Rows, torch.Tensor]:
        """Clip each step; count this attempt; fail the rows whose step fell below the floor
        (non-finite if their last trial was) or that are over ``max_steps``. Returns the rows
        left and where their step lands on their end."""
        h, lands = self._clip(rows)
        if self.options.min_step is not None:
            floor = torch.full_like(h, self.options.min_step)
        else:
            span = self.span.index_select(0, rows.index)
            floor = 16 * _EPS64 * torch.maximum(rows.t.abs(), span * 1e-3).clamp_min(1e-300)
        too_small = (h.abs() < floor) & ~lands
        rows.h = h
        rows.trials = rows.trials + 1
        code = torch.where(rows.trials > self.options.max_steps, _MAX_STEPS, _OK)
        code = torch.where(too_small, _TOO_SMALL, code)
        code = torch.where(too_small & rows.last_nonfinite, _NON_FINITE, code)
        keep = code == _OK
        rows = self._fail(rows, code)
        return rows, (lands if bool(keep.all()) else lands[keep])

    def _clip(self, rows: _Rows) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's step shortened onto its end (within 1e-8 relative: stretched onto it, as
        the shared loop does) and under ``max_step``; ``lands`` where it ends on the end."""
        remaining = self.t_end.index_select(0, rows.index) - rows.t
        lands = remaining.abs() <= rows.h.abs() * (1 + 1e-8)
        h = torch.where(lands, remaining, rows.h)
        over = h.abs() > self.options.max_step
        h = torch.where(over, torch.full_like(h, self.direction * self.options.max_step), h)
        return h, lands & ~over

    def _error_ratio(self, rows: _Rows, ks: list[torch.Tensor], y1: torch.Tensor) -> torch.Tensor:
        """Per row, the RMS error ratio (DOP853: Hairer's combined estimate), ``(b,)``
        float64, NaN where the estimate is not finite."""
        scale = torch.maximum(rows.y.abs(), y1.abs()).mul_(self.rtol).add_(self.atol)
        h2 = rows.h.square()
        sums = [
            (_combine(None, 1.0, row, ks) / scale).square().sum(-1).double() * h2
            for row in self.tab.error_rows
        ]
        n = rows.y.shape[-1]
        if len(sums) == 1:
            return (sums[0] / n).sqrt()
        s5, s3 = sums
        denom = (s5 + 0.01 * s3) * n
        ratio = torch.where(denom > 0, s5 / denom.clamp_min(1e-300).sqrt(), torch.zeros_like(s5))
        return torch.where(torch.isfinite(s5) & torch.isfinite(s3), ratio, math.nan)

    def _factor(
        self, rows: _Rows, ratio: torch.Tensor, accept: torch.Tensor, finite: torch.Tensor
    ) -> torch.Tensor:
        """The controller's step-size factor per row ``(b,)`` (all arguments ``(b,)``), by
        the formula of :class:`~physnode.solver.controller.StepSizeController`; 0.25 where not
        finite."""
        opts = self.options
        hi = torch.where(accept & ~rows.after_reject, torch.full_like(ratio, opts.ifactor), 1.0)
        fac = opts.safety * ratio.clamp_min(1e-300) ** (-self.exponents[0])
        if self.exponents[1]:
            fac = torch.where(accept, fac * rows.prev_ratio ** self.exponents[1], fac)
        fac = torch.minimum(hi, fac.clamp_min(opts.dfactor))
        fac = torch.where(ratio == 0, hi, fac)
        return torch.where(finite, fac, 0.25)

    # -- outputs -------------------------------------------------------------------------------
    def _emit(
        self, rows: _Rows, accept: torch.Tensor, t_new: torch.Tensor, y1: torch.Tensor,
        ks: list[torch.Tensor],
    ) -> None:  # fmt: skip
        """Write every output time each accepted row's step (``t_new`` ``(b,)``, ends ``y1``
        ``(b, D)``) reaches: ``y1`` where the step
        ends on it, else the dense output; the extra stages (DOP853) are evaluated at most
        once per step, on the rows that reach an output only."""
        last = self.t_grid.shape[1] - 1
        grid = self.t_grid.index_select(0, rows.index)
        tk = grid.gather(1, rows.k_next.clamp(max=last).unsqueeze(-1)).squeeze(-1)
        reach = accept & (rows.k_next <= last) & (self.direction * (tk - t_new) <= 0)
        at = reach.nonzero().squeeze(-1)
        if not at.numel():
            return
        every = at.numel() == rows.index.numel()  # then no row needs selecting

        def pick(x: torch.Tensor) -> torch.Tensor:
            return x if every else x.index_select(0, at)

        index, t, h, y, k_next = map(pick, (rows.index, rows.t, rows.h, rows.y, rows.k_next))
        y1, t_new, grid = pick(y1), pick(t_new), pick(grid)
        ks_dense = None
        while True:
            k = k_next.clamp(max=last)
            tk = grid.gather(1, k.unsqueeze(-1)).squeeze(-1)
            emit = (k_next <= last) & (self.direction * (tk - t_new) <= 0)
            put = emit.nonzero().squeeze(-1)
            if not put.numel():
                break
            theta = (tk - t) / h
            on_end = tk == t_new
            if bool(on_end[put].all()):
                y_k = y1  # outputs on the steps' ends only: no dense output needed
            else:
                if ks_dense is None:
                    ks_dense = row_extra_stages(self.f, self.tab, t, h, y, list(map(pick, ks)))
                y_k = torch.where(
                    on_end.unsqueeze(-1), y1, row_dense(self.tab, y, h, ks_dense, theta)
                )
            self.ys[k[put], index[put]] = y_k[put]
            if self.record is not None:
                self.record.outputs[-1].append((k[put], index[put], theta[put], on_end[put]))
            k_next = k_next + emit
        rows.k_next = k_next if every else rows.k_next.index_copy(0, at, k_next)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _advance(
        self, rows: _Rows, accept: torch.Tensor, finite: torch.Tensor, t_new: torch.Tensor,
        y1: torch.Tensor, ks: list[torch.Tensor], factor: torch.Tensor, ratio: torch.Tensor,
    ) -> _Rows:  # fmt: skip
        """Move accepted rows to their step's end, scale every step, drop finished rows."""
        acc_col = accept.unsqueeze(-1)
        rows.y = torch.where(acc_col, y1, rows.y)
        rows.t = torch.where(accept, t_new, rows.t)
        if self.tab.fsal:
            rows.f0 = torch.where(acc_col, ks[-1], rows.f0)
        rows.h = rows.h * factor
        rows.prev_ratio = torch.where(accept, ratio.clamp_min(1e-10), rows.prev_ratio)
        rows.after_reject = ~accept
        rows.last_nonfinite = ~finite
        done = rows.k_next >= self.t_grid.shape[1]
        if bool(done.any()):
            rows = rows.keep(~done)
        if not self.tab.fsal:  # f(t, y) anew where the step was accepted
            moved = (~rows.after_reject).nonzero().squeeze(-1)
            if moved.numel():
                f_new = self.f(rows.t.index_select(0, moved), rows.y.index_select(0, moved))
                rows.f0 = rows.f0.index_copy(0, moved, f_new)
        return rows

    def _fail(self, rows: _Rows, code: torch.Tensor) -> _Rows:
        """Mark the rows whose ``code`` is not ok as failed with it and drop them."""
        mask = code != _OK
        if not bool(mask.any()):
            return rows
        at = mask.nonzero().squeeze(-1)
        members = rows.index[at]
        self.status[members] = code[at]
        failed = list(zip(members.tolist(), code[at].tolist(), rows.t[at].tolist(), strict=True))
        self.failures.extend(failed)
        if self.options.sample_failure == "raise":  # at once: the others' work would be lost
            raise _failure_error(min(failed), self.options, len(self.failures), self.ys.shape[1])
        return rows.keep(~mask)

    def report(self) -> None:
        """Warn once about every failed member (``sample_failure="raise"`` raised at the first
        failure already)."""
        if not self.failures:
            return
        first = min(self.failures)
        error = _failure_error(first, self.options, len(self.failures), self.ys.shape[1])
        warnings.warn(
            f"{error} The other members completed; Solution.status says which failed (their "
            "ys are NaN from the first output time they did not reach).",
            SampleFailureWarning,
            stacklevel=4,
        )


RowField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def row_stages(
    f: RowField, tab: ButcherTableau, t: torch.Tensor, h: torch.Tensor, y: torch.Tensor,
    f0: torch.Tensor,
) -> tuple[torch.Tensor, list[torch.Tensor]]:  # fmt: skip
    """The stages of one step of every row, each with its own ``t``, ``h`` ``(b,)`` float64
    from ``y`` ``(b, D)`` with ``f0 = f(t, y)``; ``f(t, y)`` evaluates rows at their times.
    Returns ``(y_next, ks)``."""
    hcol = h.unsqueeze(-1)
    ks = [f0]
    y_next = None
    for i in range(1, tab.n_stages):
        yi = _combine(y, hcol, tab.a[i], ks)
        if tab.fsal and i == tab.n_stages - 1:
            y_next = yi
        ks.append(f(t + tab.c[i] * h, yi))
    if y_next is None:
        y_next = _combine(y, hcol, tab.b, ks)
    return y_next, ks


def row_extra_stages(
    f: RowField, tab: ButcherTableau, t: torch.Tensor, h: torch.Tensor, y: torch.Tensor,
    ks: list[torch.Tensor],
) -> list[torch.Tensor]:  # fmt: skip
    """``ks`` with the dense output's extra stages (DOP853) of every row appended."""
    hcol = h.unsqueeze(-1)
    ks = list(ks)
    for c, a in zip(tab.extra_c, tab.extra_a, strict=True):
        ks.append(f(t + c * h, _combine(y, hcol, a, ks)))
    return ks


def row_dense(
    tab: ButcherTableau, y: torch.Tensor, h: torch.Tensor, ks: list[torch.Tensor],
    theta: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """Each row's dense output at its own ``θ`` ``(b,)`` inside its step, ``(b, D)``."""
    # h · b_j(θ) in float64, then rounded once to the state's dtype (as the shared loop does)
    weights = (h.unsqueeze(-1) * tab.dense_weights(theta.unsqueeze(-1))).to(y.dtype)  # (b, S')
    out = y
    for j, kj in enumerate(ks):
        out = torch.addcmul(out, weights[:, j : j + 1], kj)
    return out


def _failure_error(
    first: tuple[int, int, float], options: SolverOptions, n_failed: int, batch: int
) -> SolverError:
    """The typed error for the first failed member (member, status code, time)."""
    member, code, t = first
    what = {
        _MAX_STEPS: f"reached max_steps={options.max_steps} (raise options['max_steps'])",
        _TOO_SMALL: "its step size fell below the floor (stiff or nearly singular there; for "
        "N-body a close encounter: add softening)",
        _NON_FINITE: "its state or derivative became NaN/inf",
    }[code]
    cls = {
        _MAX_STEPS: MaxStepsReachedError,
        _TOO_SMALL: StepSizeTooSmallError,
        _NON_FINITE: NonFiniteError,
    }[code]
    return cls(
        f"{n_failed} of {batch} members failed; the first, member {member}, {what} at t={t:.10g}.",
        t=t,
    )


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Whether each row of ``x`` is finite, ``(b,)`` bool."""
    return torch.isfinite(x).all(-1)


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over the last dimension, float64, ``(b,)``."""
    return x.square().mean(-1).double().sqrt()


def _combine(
    y: torch.Tensor | None, hcol: torch.Tensor | float, coeffs, ks: list[torch.Tensor]
) -> torch.Tensor:
    """``y + h · Σ_j coeffs[j] · ks[j]`` with each row's own ``h`` (``hcol`` ``(b, 1)``
    float64), or ``Σ_j coeffs[j] · ks[j]`` when ``y`` is ``None`` (``hcol`` then 1.0). For a
    float32 state ``coeffs[j] · h`` is formed in float64 and rounded once, as the shared loop
    does, rather than rounding ``h`` first."""
    out = y
    for c, k in zip(coeffs, ks, strict=False):
        if c == 0.0:
            continue
        if not isinstance(hcol, torch.Tensor):
            out = out.add(k, alpha=float(c) * hcol) if out is not None else k * (float(c) * hcol)
        elif k.dtype == torch.float64:
            out = torch.addcmul(out, hcol, k, value=float(c)) if out is not None else hcol * c * k
        else:
            w = (hcol * float(c)).to(k.dtype)
            out = torch.addcmul(out, w, k) if out is not None else w * k
    assert out is not None  # internal invariant: every tableau row has a nonzero weight
    return out
