"""Uncertainties of the learned physical parameters: the Gauss–Newton covariance."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from physnode.fit.objective import Objective
from physnode.fit.problem import FitProblem

Residual = Callable[[], np.ndarray]


def gauss_newton(objective: Objective) -> dict[str, np.ndarray]:
    """1σ uncertainties of the learned physical parameters from the Gauss–Newton covariance
    ``s² (JᵀJ)⁻¹`` at the optimum (``J``: central differences of the normalised residuals with
    respect to the natural parameters and any learned initial state; ``s²``: residual
    variance). Network weights are held fixed. NaN where undefined; ``inf`` for a parameter
    the data cannot determine (see :func:`undetermined_columns`), never a finite number.

    First takes one Gauss–Newton step at a tight tolerance, kept only if it lowers the
    residual (so the problem's parameters may move slightly). Returns ``{name: σ}`` with each
    σ shaped like its parameter; ``{}`` when no physical parameter is learned.
    """
    prob = objective.problem
    if prob.system is None or not prob.learned:
        return {}
    residual = _tight_residual(objective)
    r0 = residual()
    jac = np.stack(_physical_columns(prob, residual) + _start_columns(prob, residual), axis=1)
    lost = undetermined_columns(jac, _parameter_vector(prob))
    keep = ~lost
    if keep.any():
        r0 = _polish(prob, jac, r0, residual, keep)
    dof = max(len(r0) - int(keep.sum()), 1)
    s2 = float(r0 @ r0) / dof
    sigma = np.full(jac.shape[1], np.inf)
    if keep.any():
        cov = s2 * np.linalg.pinv(jac[:, keep].T @ jac[:, keep])
        sigma[keep] = np.sqrt(np.clip(np.diag(cov), 0, None))
    return _split(prob, sigma)


#: a parameter whose full (100 %) change moves the RMS of the normalised residual by less than
#: this is not seen by the data (the solver's own noise at the tight tolerance is ~1e-10)
INSENSITIVE = 1e-7
#: singular values of the column-normalised Jacobian below this fraction of the largest mark
#: combinations of parameters the data cannot tell apart (cond(JᵀJ) > 1e16: beyond float64)
DEGENERATE = 1e-8


def undetermined_columns(jac: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which columns of ``jac`` (residuals × parameters, at parameter values ``values``) the
    data cannot determine: a column that is (nearly) zero, or one that takes part in a
    (nearly) exact linear dependence with others. Returns a boolean mask, one per column."""
    n = max(jac.shape[0], 1)
    norms = np.linalg.norm(jac, axis=0)
    lost = norms * np.maximum(np.abs(values), 1e-3) <= INSENSITIVE * np.sqrt(n)
    seen = np.flatnonzero(~lost)
    if seen.size > 1:
        _, sv, vt = np.linalg.svd(jac[:, seen] / norms[seen], full_matrices=False)
        null = vt[sv < DEGENERATE * sv[0]]
        lost[seen] |= (np.abs(null) > 1e-3).any(axis=0)
    return lost


def _parameter_vector(prob: FitProblem) -> np.ndarray:
    """Current values in the Jacobian's column order (physical parameters, then the start)."""
    values = prob.system.physical_parameters()
    parts = [values[name].detach().cpu().double().reshape(-1).numpy() for name in prob.learned]
    free = prob.start.free
    if free is not None and free.numel():
        parts.append(free.detach().cpu().double().reshape(-1).numpy())
    return np.concatenate(parts) if parts else np.empty(0)


def _tight_residual(objective: Objective) -> Residual:
    """The flat training residual at a tolerance tight enough for central differences."""
    m = objective.problem.n_train

    def residual() -> np.ndarray:
        with torch.no_grad():
            ys = objective.solve(m, grad="aca", rtol=min(objective.rtol, 1e-10), atol=1e-12)
            return objective.residual(ys, m).reshape(-1).cpu().numpy()

    return residual


def _central_difference(
    residual: Residual, value: float, perturb: Callable[[float], None], reset: Callable[[], None]
) -> np.ndarray:
    """``(r(x + h) - r(x - h)) / 2h`` for one coordinate of current value ``value``."""
    h = 1e-6 * max(abs(value), 1e-3)
    col = []
    for sign in (1, -1):
        perturb(sign * h)
        col.append(residual())
    reset()
    return (col[0] - col[1]) / (2 * h)


def _physical_columns(prob: FitProblem, residual: Residual) -> list[np.ndarray]:
    """Jacobian columns for every element of every learned physical parameter."""
    values = prob.system.physical_parameters()
    cols = []
    for name in prob.learned:
        for i in range(values[name].numel()):
            base = values[name].detach().clone()

            def perturb(dh: float, name=name, base=base, i=i) -> None:
                v = base.clone()
                v.reshape(-1)[i] += dh
                prob.set_physical(name, v)

            def reset(name=name, base=base) -> None:
                prob.set_physical(name, base)

            value = float(base.reshape(-1)[i])
            cols.append(_central_difference(residual, value, perturb, reset))
    return cols


def _start_columns(prob: FitProblem, residual: Residual) -> list[np.ndarray]:
    """Jacobian columns for every learned component of the initial state."""
    free = prob.start.free
    cols = []
    for i in range(0 if free is None else free.numel()):
        base = free.detach().clone()

        def perturb(dh: float, base=base, i=i) -> None:
            with torch.no_grad():
                free[i] = base[i] + dh

        def reset(base=base) -> None:
            with torch.no_grad():
                free.copy_(base)

        cols.append(_central_difference(residual, float(base[i]), perturb, reset))
    return cols


def _apply(prob: FitProblem, delta: np.ndarray) -> None:
    """Add ``delta`` (physical parameters first, then the learned start) to the problem."""
    k = 0
    for name in prob.learned:
        base = prob.system.physical_parameters()[name].detach().clone()
        size = base.numel()
        step = torch.as_tensor(delta[k : k + size], dtype=base.dtype).reshape(base.shape)
        prob.set_physical(name, base + step)
        k += size
    free = prob.start.free
    if free is not None and free.numel():
        with torch.no_grad():
            free.add_(torch.as_tensor(delta[k:], dtype=free.dtype, device=free.device))


def _polish(
    prob: FitProblem, jac: np.ndarray, r0: np.ndarray, residual: Residual, keep: np.ndarray
) -> np.ndarray:
    """One Gauss–Newton step in the determined parameters (``keep``; the others stay where
    they are); returns the residual where the problem is left."""
    # The optimiser's minimum is that of the fit tolerance's solver error; this step at the
    # tight tolerance polishes it towards the exact model's, and is kept only if it lowers the
    # residual.
    delta = np.zeros(jac.shape[1])
    delta[keep] = np.linalg.lstsq(jac[:, keep], -r0, rcond=None)[0]
    _apply(prob, delta)
    r1 = residual()
    if np.all(np.isfinite(r1)) and r1 @ r1 < r0 @ r0:
        return r1
    _apply(prob, -delta)
    return r0


def _split(prob: FitProblem, sigma: np.ndarray) -> dict[str, np.ndarray]:
    """The flat σ vector back into one array per learned parameter, shaped like it."""
    values = prob.system.physical_parameters()
    out: dict[str, np.ndarray] = {}
    k = 0
    for name in prob.learned:
        size = values[name].numel()
        out[name] = sigma[k : k + size].reshape(values[name].shape).copy()
        k += size
    return out
