"""Uncertainties of fitted parameters: which the data determine, and their 1σ from the
Gauss–Newton covariance ``s² (JᵀJ)⁻¹``."""

from __future__ import annotations

import numpy as np

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


def covariance_sigma(jac: np.ndarray, residual: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1σ per column: ``sqrt(diag(s² (JᵀJ)⁻¹))`` over the determined columns (``s²`` the
    residual variance with ``len(residual) - P`` degrees of freedom), ``inf`` for the
    undetermined ones (see :func:`undetermined_columns`), never a finite number for those.

    Args:
        jac: ``(N, P)`` Jacobian of the (weighted) residuals in the natural parameters.
        residual: ``(N,)`` the weighted residuals at the estimate.
        values: ``(P,)`` the parameters' values.
    """
    lost = undetermined_columns(jac, values)
    keep = ~lost
    sigma = np.full(jac.shape[1], np.inf)
    if keep.any():
        dof = max(len(residual) - int(keep.sum()), 1)
        s2 = float(residual @ residual) / dof
        cov = s2 * np.linalg.pinv(jac[:, keep].T @ jac[:, keep])
        sigma[keep] = np.sqrt(np.clip(np.diag(cov), 0, None))
    return sigma
