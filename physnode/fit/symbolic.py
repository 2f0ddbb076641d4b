"""The symbolic refit: the discovered law fitted as physics.

A hybrid fit's network is read out as a sparse law (:mod:`physnode.models.discovery`); the
refit then fits the physics plus exactly those terms, their coefficients learned with the
physical parameters (:class:`~physnode.models.symbolic.SymbolicTerms`), so the coefficients
get uncertainties from the least-squares finish like masses do. Terms whose coefficient is
negligible (its term adds under :data:`NEGLIGIBLE` of the largest one's acceleration) or not
significant (``|c| < SIGNIFICANCE · σ``, undetermined included) are dropped, the least
significant first and one at a time, refitting after each: the network's readout may keep a
term that only helped it approximate another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from physnode.data import Trajectory
from physnode.fit.objective import MIN_STEP_BUDGET
from physnode.models.discovery import Discovery, particle_library
from physnode.models.symbolic import COEFFICIENTS, TARGET_SEPARATOR, state_term
from physnode.solver import api

__all__ = ["SIGNIFICANCE", "SymbolicRefit", "refit_symbolic"]

#: a refitted coefficient is kept when it is at least this many σ from zero
SIGNIFICANCE = 3.0
#: ... and its term adds at least this fraction of the largest term's RMS acceleration along
#: the fitted training window (on clean data σ is the solver's error, ~1e-12, so significance
#: alone would keep a term of 3e-12)
NEGLIGIBLE = 1e-3


@dataclass
class SymbolicRefit:
    """The physics + discovered terms, refitted.

    Attributes:
        terms: the terms kept; coefficients, sigma: their values and 1σ ``(K,)``.
        dropped: terms of the readout whose refitted coefficient was not significant.
        params, uncertainties: every learned physical parameter (the coefficients
            included) and its 1σ.
        train_rmse, extrapolation_rmse: as the hybrid fit reports them.
        formula: one readable line with ``±σ``.
        wall_time: seconds.
    """

    terms: list[str]
    coefficients: np.ndarray
    sigma: np.ndarray
    params: dict[str, np.ndarray]
    uncertainties: dict[str, np.ndarray]
    train_rmse: float
    extrapolation_rmse: float | None
    formula: str
    wall_time: float
    dropped: list[str] = field(default_factory=list)


def refit_symbolic(hybrid, data: Trajectory, discovery: Discovery) -> SymbolicRefit | None:
    """Refit ``data`` with the physics of the fitted ``hybrid`` (a :class:`Fitter`) plus the
    terms of ``discovery``, from the hybrid's parameters and the readout's coefficients;
    ``None`` when the readout kept no term."""
    if not discovery.terms:
        return None
    terms = list(discovery.terms)
    if discovery.targets:  # a system without bodies: each term adds to one component
        terms = [state_term(*pair) for pair in zip(discovery.targets, terms, strict=True)]
    start, dropped, wall = discovery.coefficients, [], 0.0
    params = hybrid.params_  # each refit starts where the one before it ended
    while True:
        fitter = _refit(hybrid, data, terms, start, params)  # SolverError: the caller says so
        params = fitter.params_
        wall += fitter.wall_time_
        c = fitter.params_[COEFFICIENTS]
        s = fitter.uncertainties_[COEFFICIENTS]
        drop = _weakest(c, s, _contributions(fitter, terms, c))
        if drop is None or len(terms) == 1:
            break
        dropped += [terms[k] for k in np.flatnonzero(drop)]
        terms = [t for t, w in zip(terms, drop, strict=True) if not w]
        start = c[~drop]
    return SymbolicRefit(
        terms=terms, coefficients=c.copy(), sigma=np.asarray(s, float).copy(),
        params=fitter.params_, uncertainties=fitter.uncertainties_,
        train_rmse=fitter.train_rmse_, extrapolation_rmse=fitter.extrapolation_rmse_,
        formula=_formula(terms, c, s), wall_time=wall, dropped=dropped,
    )  # fmt: skip


def _refit(hybrid, data: Trajectory, terms: list[str], start: np.ndarray, params: dict):
    """One physics + terms fit with the hybrid's settings, from the physical parameters
    ``params`` (the hybrid's, then the previous refit's) and coefficients ``start``."""
    settings = {
        k: v for k, v in hybrid.settings_.items()
        if k not in ("model", "correction", "terms", "init_coefficients", "init_masses",
                     "init_params", "refit_symbolic", "hidden", "learn", "correction_penalty")
    }  # fmt: skip
    settings["learn"] = tuple(hybrid.learn)
    # no Adam or L-BFGS: from the readout, the Levenberg–Marquardt finish (exact Jacobian) does
    # the work; Adam's steps of ~lr in each coefficient threw a 0.1 drag to a close encounter
    settings["epochs"], settings["lbfgs_steps"] = 0, 0
    # the reported hybrid fit's windows, so its train and validation RMSE compare with the
    # refit's (a retrained fit held nothing out: it fitted up to train_until_)
    held_out = hybrid.fit_until_ < hybrid.train_until_
    settings["validation"] = hybrid.validation_ if held_out else 0.0
    settings["ensemble"] = 1  # the refit of the chosen member's law: one physics fit
    masses = params.get("masses")
    # every other learned parameter (a system's rates, G) starts there too
    rates = {k: float(v) for k, v in params.items()
             if k not in ("masses", COEFFICIENTS) and np.size(v) == 1}  # fmt: skip
    fitter = type(hybrid)(
        **settings, model="physics", terms=terms, init_coefficients=[float(x) for x in start],
        init_masses=None if masses is None else [float(m) for m in masses],
        init_params=rates or None,
    )  # fmt: skip
    _check_integrable(fitter, data)
    return fitter.fit(data)


def _check_integrable(fitter, data: Trajectory) -> None:
    """Raise :class:`~physnode.errors.MaxStepsReachedError` when the start of the refit (the
    readout's law) needs more than :data:`~physnode.fit.objective.MIN_STEP_BUDGET` step
    attempts over the training window at the fit's tolerance: a law read from an ill-fitted
    network can blow up, and the refit's first solve has no budget of its own to stop it."""
    prob = fitter._set_up(data, None)
    t = torch.as_tensor(prob.times[: prob.n_train], dtype=torch.float64)
    with torch.no_grad():
        api.solve(prob.model, prob.start().detach(), t, rtol=fitter.rtol, atol=fitter.atol,
                  method=fitter.method, grad="backprop",
                  options={"max_steps": MIN_STEP_BUDGET})  # fmt: skip


def _weakest(c: np.ndarray, s: np.ndarray, size: np.ndarray) -> np.ndarray | None:
    """Which terms to drop next (a mask), or ``None`` when every term stays: all negligible
    ones at once, else the one least significant (smallest ``|c| / σ``, undetermined first)
    if it is under :data:`SIGNIFICANCE` σ. One at a time, because two near-collinear terms
    can each look insignificant while one of them is the law. NaN σ (an interrupted finish)
    keeps a term; never all terms."""
    negligible = size < NEGLIGIBLE * size.max()
    if negligible.any():
        return negligible if not negligible.all() else None
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(np.isnan(s), np.inf, np.abs(c) / s)
    k = int(np.argmin(z))
    if z[k] >= SIGNIFICANCE:
        return None
    drop = np.zeros(len(c), dtype=bool)
    drop[k] = True
    return drop


def _contributions(fitter, terms: list[str], c: np.ndarray) -> np.ndarray:
    """``|c_k| · RMS(term_k)`` along the fitted training window, per term."""
    pred = fitter.prediction_
    n = int(np.searchsorted(pred.times, fitter.train_until_, side="right"))
    if pred.positions is None:  # state terms: their monomials along the fitted states
        y = torch.as_tensor(np.asarray(pred.state[:n], np.float64))
        with torch.no_grad():
            values = fitter.model_.correction.monomials(y)
        return np.abs(c) * values.square().mean(dim=0).sqrt().numpy()
    q, v, m = (torch.as_tensor(np.asarray(x, np.float64)) for x in
               (pred.positions[:n], pred.velocities[:n], pred.masses))  # fmt: skip
    library = particle_library(q.shape[-1])
    with torch.no_grad():
        rms = np.array([float(library[t](q, v, m).square().mean().sqrt()) for t in terms])
    return np.abs(c) * rms


def _formula(terms: list[str], c: np.ndarray, s: np.ndarray) -> str:
    """``a_i += (c ± σ) term + ...``; state terms ``dx/dt += (c ± σ) x y; dy/dt += ...``."""
    if not all(TARGET_SEPARATOR in t for t in terms):
        parts = [f"({x:.6g} ± {e:.2g}) {t}" for t, x, e in zip(terms, c, s, strict=True)]
        return "a_i += " + " + ".join(parts)
    by_target: dict[str, list[str]] = {}
    for term, x, e in zip(terms, c, s, strict=True):
        target, _, monomial = term.partition(TARGET_SEPARATOR)
        by_target.setdefault(target, []).append(f"({x:.6g} ± {e:.2g}) {monomial}")
    return "; ".join(f"d{t}/dt += " + " + ".join(p) for t, p in by_target.items())
