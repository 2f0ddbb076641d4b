"""One generic explicit Runge–Kutta stepper driven by a :class:`ButcherTableau`.

Times are Python floats (float64) or, for the ``naive`` gradient, float64 0-dim tensors. The
state is a tensor of any shape; stage combinations are fused ``add(..., alpha=)`` calls so a step
launches no host synchronisation of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from physnode.errors import DeviceMismatchError, DtypeMismatchError, ShapeMismatchError
from physnode.solver.tableaus import ButcherTableau

Time = float | torch.Tensor


class RHS:
    """Wraps the user's ``func(t, y)``: passes ``t`` as a 0-dim tensor of the state's dtype,
    counts evaluations and checks what comes back (shape, dtype, device).

    ``on_eval`` is called once per evaluation, e.g. ``SolverStats.count_forward_eval``
    (``None``: evaluations are not counted).
    """

    def __init__(
        self, func: Callable, y_like: torch.Tensor, on_eval: Callable[[], None] | None = None
    ) -> None:
        self.func = func
        self.shape = y_like.shape
        self.dtype = y_like.dtype
        self.device = y_like.device
        self.on_eval = on_eval

    def __call__(self, t: Time, y: torch.Tensor) -> torch.Tensor:
        if isinstance(t, torch.Tensor):
            tt = t.to(self.dtype)
        else:
            tt = torch.full((), t, dtype=self.dtype, device=self.device)
        f = self.func(tt, y)
        if self.on_eval is not None:
            self.on_eval()
        if not isinstance(f, torch.Tensor):
            raise DtypeMismatchError(
                f"func(t, y) must return a tensor, got {type(f).__name__} at {_at(t)}"
            )
        if f.shape != y.shape:
            raise ShapeMismatchError(
                f"func(t, y) returned shape {tuple(f.shape)} for a state of shape "
                f"{tuple(y.shape)} at {_at(t)}; dy/dt must have the state's shape"
            )
        if f.dtype != y.dtype:
            raise DtypeMismatchError(
                f"func(t, y) returned {f.dtype} for a {y.dtype} state; "
                "make the function (and its parameters) use the state's dtype"
            )
        if f.device != y.device:
            raise DeviceMismatchError(
                f"func(t, y) returned a tensor on {f.device} for a state on {y.device}; "
                "move the model to the state's device"
            )
        return f


def _at(t: Time) -> str:
    """``t`` for a message: one time, or the span of a per-sample batch's times."""
    if isinstance(t, torch.Tensor) and t.numel() > 1:
        return f"t in [{float(t.min()):.6g}, {float(t.max()):.6g}] (per member)"
    return f"t={float(t):.6g}"


def lincomb(y: torch.Tensor, h: Time, coeffs: Sequence, ks: Sequence[torch.Tensor]) -> torch.Tensor:
    """``y + h · Σ_i coeffs[i] · ks[i]``, skipping zero coefficients.

    ``coeffs`` are floats, or a float64 tensor (naive mode, dense output with tensor θ).
    One fused add per nonzero term: measured on the 2-core CPU, stacking the stages into one
    matrix-vector product was no faster for one three-body state and 13 % slower for 1024.
    """
    out = y
    if isinstance(h, torch.Tensor) or isinstance(coeffs, torch.Tensor):
        for c, k in zip(coeffs, ks, strict=False):
            if isinstance(c, torch.Tensor) or c != 0.0:
                out = out + (c * h).to(k.dtype) * k
        return out
    for c, k in zip(coeffs, ks, strict=False):
        if c != 0.0:
            out = out.add(k, alpha=c * h)
    return out


def stages(
    rhs: RHS,
    tab: ButcherTableau,
    t: Time,
    h: Time,
    y: torch.Tensor,
    f0: torch.Tensor,
    need_last: bool = True,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run the stages of one step from ``(t, y)`` with ``f0 = f(t, y)``.

    Returns ``(y_next, ks)``. For FSAL tableaus the last stage is ``f(t + h, y_next)``; with
    ``need_last=False`` it is skipped (the ACA replay needs it only for dense output).
    """
    ks = [f0]
    s = tab.n_stages
    y_next = None
    for i in range(1, s):
        yi = lincomb(y, h, tab.a[i], ks)
        if tab.fsal and i == s - 1:
            y_next = yi
            if not need_last:
                break
        ks.append(rhs(t + tab.c[i] * h, yi))
    if y_next is None:
        y_next = lincomb(y, h, tab.b, ks)
    return y_next, ks


def extra_stages(
    rhs: RHS, tab: ButcherTableau, t: Time, h: Time, y: torch.Tensor, ks: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Append the dense output's extra stages (DOP853) to ``ks``; returns the extended list."""
    ks = list(ks)
    for c, a in zip(tab.extra_c, tab.extra_a, strict=True):
        ks.append(rhs(t + c * h, lincomb(y, h, a, ks)))
    return ks


def dense_output(
    tab: ButcherTableau, y: torch.Tensor, h: Time, ks: list[torch.Tensor], theta: Time
) -> torch.Tensor:
    """``y(t_n + θh)`` from the step's stages (``ks`` includes extra stages where needed)."""
    weights = tab.dense_weights(theta)
    if not isinstance(weights, torch.Tensor):
        weights = weights.tolist()
    return lincomb(y, h, weights, ks)


def error_ratio(
    tab: ButcherTableau,
    h: Time,
    ks: list[torch.Tensor],
    y0: torch.Tensor,
    y1: torch.Tensor,
    rtol: float,
    atol: float | torch.Tensor,
    n_norm: int | None = None,
    groups: int = 1,
    differentiable: bool = False,
) -> float | torch.Tensor:
    """Mixed relative/absolute RMS error ratio of the embedded estimate.

    ``scale = atol + rtol · max(|y0|, |y1|)``; the step is accepted when the ratio is ≤ 1.
    ``atol`` is a float or a tensor of the state's shape (one tolerance per entry).
    ``n_norm`` restricts the norm to the first ``n_norm`` entries of a flat state (seminorm).
    ``groups > 1`` splits a flat state into that many equal groups (a state and its
    sensitivities) and returns the largest of their ratios, as CVODES does with sensitivity
    error control. DOP853 combines its 5th- and 3rd-order estimates as in Hairer's code.

    Returns a float (NaN when the estimate is not finite), computed in a few fused operations
    and one transfer of ``r × groups`` sums; with ``differentiable`` (the ``naive`` gradient,
    which differentiates the controller) a 0-dim tensor from the same formula.
    """
    assert tab.b_err is not None  # internal invariant: only adaptive tableaus get here
    est = _estimates(tab, ks, y0)
    scale = torch.maximum(y0.abs(), y1.abs()).mul_(rtol).add_(atol).reshape(-1)
    if n_norm is not None:
        est, scale = est[:, :n_norm], scale[:n_norm]
    sums = (est / scale).square().reshape(len(est), groups, -1).sum(-1)  # (r, groups)
    n = est.shape[1] // groups
    if differentiable:
        h2 = h.to(sums.dtype) ** 2 if isinstance(h, torch.Tensor) else float(h) ** 2
        return _combine_sums(sums * h2, n).max()
    h2 = float(h) ** 2
    rows = [[v * h2 for v in row] for row in sums.tolist()]  # one host synchronisation
    ratios = [_combine_floats([row[g] for row in rows], n) for g in range(groups)]
    return max(ratios) if all(math.isfinite(r) for r in ratios) else math.nan


def _combine_floats(sums: list[float], n: int) -> float:
    """:func:`_combine_sums` for one group on the host."""
    if len(sums) == 1:
        return math.sqrt(sums[0] / n)  # NaN and inf stay so, for the caller to refuse
    s5, s3 = sums
    if not (math.isfinite(s5) and math.isfinite(s3)):
        return math.nan
    denom = (s5 + 0.01 * s3) * n
    return s5 / math.sqrt(denom) if denom > 0 else 0.0


#: states up to this many entries get the embedded estimates as one matrix product over the
#: stacked stages (DOP853, one three-body state: 25 vs 65 µs per step on the 2-core CPU);
#: larger ones one add per stage, which moves less memory (1024 states: 195 vs 256 µs)
_STACK_MAX = 4096


def _estimates(tab: ButcherTableau, ks: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """The embedded error estimates without their factor ``h``, shape ``(r, y.numel())``."""
    if y.numel() <= _STACK_MAX:
        weights = tab.error_weights(y.dtype, y.device)
        n_stages = weights.shape[1]
        return weights @ torch.stack(ks[:n_stages]).reshape(n_stages, -1)
    zero = torch.zeros_like(y)
    return torch.stack([lincomb(zero, 1.0, row, ks).reshape(-1) for row in tab.error_rows])


def _combine_sums(sums: torch.Tensor, n: int) -> torch.Tensor:
    """Per-group ratios from the squared-error sums ``(r, groups)`` of ``n`` entries each:
    the RMS of the estimate, or for two estimates (DOP853) Hairer's combination
    ``s5 / sqrt(n (s5 + 0.01 s3))``."""
    if len(sums) == 1:
        return (sums[0] / n).sqrt()
    s5, s3 = sums[0], sums[1]
    denom = (s5 + 0.01 * s3) * n
    return torch.where(denom > 0, s5 / denom.clamp_min(1e-300).sqrt(), torch.zeros_like(s5))


def initial_step(
    rhs: RHS,
    t0: float,
    y0: torch.Tensor,
    f0: torch.Tensor,
    direction: float,
    order: int,
    rtol: float,
    atol: float | torch.Tensor,
    n_norm: int | None = None,
) -> float:
    """Hairer, Nørsett & Wanner's starting step (Solving ODEs I, II.4): one extra evaluation."""
    with torch.no_grad():
        scale = y0.abs().mul(rtol).add(atol)
        ya, fa = y0, f0
        if n_norm is not None:
            ya, fa, scale = y0[..., :n_norm], f0[..., :n_norm], scale[..., :n_norm]
        d = torch.stack([(ya / scale).square().mean(), (fa / scale).square().mean()]).sqrt()
        d0, d1 = d.tolist()
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        y1 = y0 + (direction * h0) * f0
        f1 = rhs(t0 + direction * h0, y1)
        df = f1 - f0
        if n_norm is not None:
            df = df[..., :n_norm]
        d2 = float((df / scale).square().mean().sqrt()) / h0
    if not math.isfinite(d2):
        d2 = math.inf
    if max(d1, d2) <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (order + 1))
    return min(100 * h0, h1)
