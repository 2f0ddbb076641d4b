"""The symbolic refit: the discovered law fitted as physics.

A hybrid fit's network is read out as a sparse law (:mod:`physnode.models.discovery`); the
refit then fits the physics plus exactly those terms, their coefficients learned with the
physical parameters (:class:`~physnode.models.symbolic.SymbolicTerms`), so the coefficients
get uncertainties from the least-squares finish like masses do. Terms whose coefficient is
negligible (its term adds under :data:`NEGLIGIBLE` of the largest one's acceleration) or not
significant (``|c| < SIGNIFICANCE · σ``, undetermined included) are dropped, the least
significant first and one at a time, refitting after each: the network's readout may keep a
term that only helped it approximate another.

The readout may also miss a term (an under-fitted network spreads it over others). So the
pruned law is then completed from the library: every library term not in the law is scored,
at the law's fit, by the score test (Lagrange multiplier test) of adding it, from one
sensitivity solve with all of them at coefficient 0; the most significant candidate, if it
passes a 3σ test corrected for the number of candidates (Bonferroni) and its one-step
coefficient is not negligible, is added and the law refitted and pruned again, as long as the
law's Bayesian information criterion falls (at most :data:`MAX_ADDED` rounds).

Pruning one term at a time among near-collinear terms (``q``, ``|q| q`` and ``|q|^2 q`` over
an orbit whose ``|q|`` varies little) can keep two that together mimic the one in the data,
and then no single term scores (the one in the data adds nothing the two do not already do).
So a completed law is last offered swaps (:func:`_swap`): each of its terms whose Jacobian
column is nearly a combination of the others' (:data:`COLLINEAR_TERM`) is dropped in turn,
the rest refitted, pruned and completed; and each term a library term nearly stands in for
(the two columns, once projected off the rest of the law's, near-collinear by the same
bound) is exchanged for it, refitted, pruned and completed, so a law of one term ``|q|^2 q``
is also fitted as ``q`` and ``|q| q``. The best such law replaces the law if its information
criterion is lower.

Laws the search fitted and kept (every term significant) whose information criterion is
within :data:`RIVAL` of the best law's are its rivals: the criterion does not tell them apart
(on a short noisy window ``q`` and ``|q| q`` can fit equally well), though they may predict
differently. Each is then refitted without the last part of the training window and scored
there (:func:`_choose`): a law that predicts it worse than the best there, by a paired test
(:data:`RESOLVED`), is out. Over the few samples held out, near-collinear laws seldom differ
by more than the noise resolves; what is left the data do not tell apart, and the law is the
simplest of it: the fewest terms, then the lowest order
(:data:`~physnode.models.discovery.PARTICLE_ORDER`, a monomial's degree: the leading term
of a Taylor series), then the lowest criterion. The others are reported as its rivals.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.stats
import torch

from physnode.data import Trajectory
from physnode.errors import SolverError
from physnode.fit.least_squares import Linearisation, linearise, observed_kinds
from physnode.fit.objective import MIN_STEP_BUDGET
from physnode.fit.readout import absorb, degenerate_terms
from physnode.fit.selection import VALIDATION
from physnode.models.discovery import (
    PARTICLE_ORDER,
    Discovery,
    particle_library,
    polynomial_library,
)
from physnode.models.registry import CORRECTIONS
from physnode.models.symbolic import COEFFICIENTS, TARGET_SEPARATOR, state_term
from physnode.solver import api

__all__ = ["SIGNIFICANCE", "SymbolicRefit", "refit_symbolic"]

#: a refitted coefficient is kept when it is at least this many σ from zero
SIGNIFICANCE = 3.0
#: ... and its term adds at least this fraction of the largest term's RMS acceleration along
#: the fitted training window (on clean data σ is the solver's error, ~1e-12, so significance
#: alone would keep a term of 3e-12)
NEGLIGIBLE = 1e-3
#: rounds of adding a library term the readout lacks (each: one sensitivity solve, then a
#: refit and its pruning); a readout that missed more terms than this is no start for a law
MAX_ADDED = 4
#: Levenberg–Marquardt runs one refit may take (:meth:`_Search.fit`): from the readout's
#: coefficients, or with a term just added at 0, the optimum can be more than one run away
FINISH_RUNS = 4
#: ... but a run that took the training RMSE down by less than 10 % (to over this fraction of
#: it) is creeping along an ill-conditioned law (the readout's, before pruning): no more runs
CREEPING = 0.9
#: a candidate whose Jacobian column keeps under this fraction of its squared norm once
#: projected off the law's columns is (nearly) a combination of them (``sum_j m_j r_ij`` and
#: ``-M q`` while the centre of mass stays at the origin): no new term
COLLINEAR = 1e-6
#: a law term whose Jacobian column keeps under this fraction of its squared norm once
#: projected off every other column (the other terms', the physical parameters', the start's)
#: is near-collinear and offered for a swap: a variance inflation factor over 10, the usual
#: rule of thumb for multicollinearity in regression (Kutner et al., Applied Linear
#: Statistical Models, 2005, section 10.5)
COLLINEAR_TERM = 0.1
#: rounds of swaps (:func:`_swap`; each: one refit, pruning and completion per collinear term
#: and per exchange)
MAX_SWAPS = 2
#: library terms each law term may be exchanged for in one round of swaps (the most nearly
#: collinear first): ``q``, ``|q| q`` and ``|q|^2 q`` are the near-collinear family of the
#: library, so two are what one of them can stand in for
EXCHANGES = 2
#: a law the search fitted whose information criterion is less than this above the chosen
#: law's is a rival (:attr:`SymbolicRefit.rivals`): a difference in the Bayesian information
#: criterion under 2 is "not worth more than a bare mention" (Kass & Raftery 1995, J. Am.
#: Stat. Assoc. 90, 773, section 3.2)
RIVAL = 2.0
#: a law predicts the held-out window worse than another when a paired t-test of their
#: squared misfits per held-out sample rejects equal means at this level (two-sided): the
#: usual 5 %
RESOLVED = 0.05
#: singular values of the law's Jacobian below this fraction of the largest span nothing
#: (an undetermined parameter): left out of the basis the candidates are projected off
RANK_CUT = 1e-12


@dataclass
class SymbolicRefit:
    """The physics + discovered terms, refitted.

    Attributes:
        terms: the terms kept; coefficients, sigma: their values and 1σ ``(K,)``.
        dropped: terms of the readout not in the law: their refitted coefficient was not
            significant or negligible, or (state systems) the term is what a learned
            parameter already does and was folded into it.
        added: library terms the readout lacked and the refit added (:func:`_complete`).
        rivals: formulas of other laws the search fitted that the information criterion
            does not tell apart from this one (:data:`RIVAL`), the lowest criterion first;
            rival_delta: their criterion less this law's (negative: a rival fits the
            training window a little better for its terms, but predicts the held-out window
            worse).
        held_out_rmse, rival_held_out_rmse: with rivals, the RMSE over a window each law was
            not fitted to (:meth:`_Search.held_out`): the law predicts it as well as the best
            of them, to the resolution of a paired test (:data:`RESOLVED`), and is the
            simplest of those (:func:`_choose`); ``None`` and ``[]`` without rivals.
        params, uncertainties: every learned physical parameter (the coefficients
            included) and its 1σ.
        train_rmse, extrapolation_rmse: as the hybrid fit reports them (extrapolation
            ``inf``: the law cannot be integrated past the training window).
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
    added: list[str] = field(default_factory=list)
    rivals: list[str] = field(default_factory=list)
    rival_delta: list[float] = field(default_factory=list)
    held_out_rmse: float | None = None
    rival_held_out_rmse: list[float] = field(default_factory=list)


def refit_symbolic(hybrid, data: Trajectory, discovery: Discovery) -> SymbolicRefit | None:
    """Refit ``data`` with the physics of the fitted ``hybrid`` (a :class:`Fitter`) plus the
    terms of ``discovery``, from the hybrid's parameters and the readout's coefficients, then
    complete the law from the library (:func:`_complete`); ``None`` when the readout kept no
    term."""
    if not discovery.terms:
        return None
    read, start, params = list(discovery.terms), discovery.coefficients, hybrid.params_
    terms = read
    if discovery.targets:  # a system without bodies: each term adds to one component
        read = [state_term(*pair) for pair in zip(discovery.targets, read, strict=True)]
        terms, start, params = _fold_degenerate(hybrid, discovery)
        if not terms:
            return None
    search = _Search(hybrid, data)
    law = _swap(search, _complete(search, search.prune(terms, start, params)))
    law, rivals, held = _choose(search, law)
    fitter, extrapolation = search.final(law)
    c, s = fitter.params_[COEFFICIENTS], fitter.uncertainties_[COEFFICIENTS]
    return SymbolicRefit(
        terms=law.terms, coefficients=c.copy(), sigma=np.asarray(s, float).copy(),
        params=fitter.params_, uncertainties=fitter.uncertainties_,
        train_rmse=fitter.train_rmse_, extrapolation_rmse=extrapolation,
        formula=_formula(law.terms, c, s), wall_time=search.wall,
        dropped=[t for t in read if t not in law.terms],
        added=[t for t in law.terms if t not in read],
        rivals=[_law_formula(x) for x in rivals],
        rival_delta=[_criterion(x) - _criterion(law) for x in rivals],
        held_out_rmse=held.get(frozenset(law.terms)),
        rival_held_out_rmse=[held[frozenset(x.terms)] for x in rivals],
    )  # fmt: skip


def _choose(search: _Search, law: _Law) -> tuple[_Law, list[_Law], dict[frozenset, float]]:
    """The law, its rivals and their held-out RMSEs: of ``law`` and its rivals
    (:meth:`_Search.rivals`), which the information criterion does not tell apart, those
    that predict a window none of them was fitted to (:meth:`_Search.held_out`: what they
    differ in is what they predict) worse than the best there (:func:`_worse`) are out, and
    of the rest the simplest (:func:`_simplicity`) is the law, the others its rivals (the
    lowest criterion first). Without rivals: ``law``, no held-out fits."""
    rivals = search.rivals(law)
    if not rivals:
        return law, [], {}
    laws = [law, *rivals]
    scored = {frozenset(x.terms): search.held_out(x) for x in laws}
    best = min(scored.values(), key=lambda rmse_errors: rmse_errors[0])[1]
    left = [x for x in laws if not _worse(scored[frozenset(x.terms)][1], best)]
    chosen = min(left, key=lambda x: _simplicity(search.hybrid, x))
    held = {key: rmse for key, (rmse, _) in scored.items()}
    return chosen, [x for x in laws if x is not chosen], held


def _simplicity(hybrid, law: _Law) -> tuple[int, int, float]:
    """What orders laws the data do not tell apart, the simplest first: the number of terms,
    their summed order (:func:`_order`), the criterion."""
    return len(law.terms), sum(_order(hybrid, t) for t in law.terms), _criterion(law)


def _order(hybrid, term: str) -> int:
    """A term's order: :data:`~physnode.models.discovery.PARTICLE_ORDER` for a particle term,
    its monomial's degree for a state term (``prey: prey predator``: 2)."""
    if hybrid._prob.particles is not None:
        return PARTICLE_ORDER[term]
    names = list(hybrid._prob.system.state_names)
    degree = {name: len(combo) for name, combo in polynomial_library(names)}
    return degree[term.partition(TARGET_SEPARATOR)[2]]


def _worse(errors: np.ndarray | None, best: np.ndarray | None) -> bool:
    """Whether the squared misfits per held-out sample ``errors`` ``(H,)`` are larger than
    ``best``'s by a paired t-test at level :data:`RESOLVED` (``None``: a law that could not
    be integrated there, worse than any that could)."""
    if errors is None or best is None:
        return errors is None and best is not None
    if errors.shape != best.shape or len(errors) < 2 or np.array_equal(errors, best):
        return False
    p = scipy.stats.ttest_rel(errors, best).pvalue
    return bool(np.mean(errors) > np.mean(best) and p < RESOLVED)


def _law_formula(law: _Law) -> str:
    """``law``'s :func:`_formula` at its fit."""
    c, s = law.fitter.params_[COEFFICIENTS], law.fitter.uncertainties_[COEFFICIENTS]
    return _formula(law.terms, c, s)


def _fold_degenerate(hybrid, discovery: Discovery) -> tuple[list[str], np.ndarray, dict]:
    """The readout's state terms less those a learned parameter already is
    (:func:`~physnode.fit.readout.degenerate_terms`: ``prey: prey`` is ``alpha``, the
    network's share of the rate's error), their effect folded into the parameters
    (:func:`~physnode.fit.readout.absorb`): the refit's terms, coefficients and start."""
    states = _training_states(hybrid)
    skip = degenerate_terms(hybrid._prob, states)
    pairs = list(zip(discovery.targets, discovery.terms, discovery.coefficients, strict=True))
    folded = [(t, m, float(c)) for t, m, c in pairs if (t, m) in skip]
    kept = [(t, m, c) for t, m, c in pairs if (t, m) not in skip]
    terms = [state_term(t, m) for t, m, _ in kept]
    start = np.array([c for _, _, c in kept], np.float64)
    return terms, start, absorb(hybrid._prob, states, folded)


def _training_states(hybrid) -> np.ndarray:
    """The hybrid's fitted states ``(T, D)`` over its training window (state systems)."""
    pred = hybrid.prediction_
    n = int(np.searchsorted(pred.times, hybrid.train_until_, side="right"))
    return np.asarray(pred.state[:n], np.float64)


@dataclass
class _Law:
    """A refitted law: its terms and their fit (a fitted physics :class:`Fitter`)."""

    terms: list[str]
    fitter: object


class _Search:
    """The refits of one hybrid's law; ``wall`` sums their wall time. They fit the data up to the
    hybrid's ``train_until_`` only (a law on the way may blow up past it); :meth:`final`
    scores the law found on the rest. ``laws`` holds each term set fitted: its fit of lowest
    :func:`_criterion`."""

    def __init__(self, hybrid, data: Trajectory) -> None:
        self.hybrid, self.full, self.wall = hybrid, data, 0.0
        self.laws: dict[frozenset[str], _Law] = {}
        self.kept: set[frozenset[str]] = set()  # the term sets :meth:`prune` ended at
        n = int(np.searchsorted(data.times, hybrid.train_until_, side="right"))
        self.data = data if n >= data.n_times else data.select(slice(0, n))

    def final(self, law: _Law):
        """The law's fit and its extrapolation RMSE: refitted on all the data (from its own
        optimum: a few evaluations) and scored past the training window; ``inf`` when it
        cannot be integrated there, ``None`` when the data end with the window."""
        if self.data is self.full:
            return law.fitter, law.fitter.extrapolation_rmse_
        c = law.fitter.params_[COEFFICIENTS]
        try:
            fitter = _refit(self.hybrid, self.full, law.terms, c, law.fitter.params_)
        except SolverError:  # the law blows up past the window: report it fitted there
            return law.fitter, math.inf
        self.wall += fitter.wall_time_
        return fitter, fitter.extrapolation_rmse_

    def fit(self, terms: list[str], start: np.ndarray, params: dict,
            validation: float | None = None):  # fmt: skip
        """Physics + ``terms`` from coefficients ``start`` and physical ``params``; while
        the least-squares finish stops short of the optimum (it takes a few evaluations per
        run, made for a point an optimiser left near one), again from where it stopped, at
        most :data:`FINISH_RUNS` runs in all, while each run gains (:data:`CREEPING`).
        ``validation``: hold out that fraction of the window (:meth:`held_out`; such a fit
        is no law of the search and is not recorded)."""
        fit = functools.partial(_refit, self.hybrid, self.data, terms, validation=validation)
        fitter = fit(start, params)  # SolverError: the caller's
        self.wall += fitter.wall_time_
        for _ in range(FINISH_RUNS - 1):
            if fitter.converged_:
                break
            again = fit(fitter.params_[COEFFICIENTS], fitter.params_)
            self.wall += again.wall_time_
            if not again.train_rmse_ < fitter.train_rmse_:
                break
            fitter, gain = again, again.train_rmse_ / fitter.train_rmse_
            if gain > CREEPING:
                break
        if validation is None:
            self._record(_Law(terms, fitter))
        return fitter

    def _record(self, law: _Law) -> None:
        key = frozenset(law.terms)
        if key not in self.laws or _criterion(law) < _criterion(self.laws[key]):
            self.laws[key] = law

    def rivals(self, law: _Law) -> list[_Law]:
        """The other laws :meth:`prune` kept within :data:`RIVAL` of ``law``'s criterion, the
        lowest first (a law on the way, with a term the pruning then dropped, is none)."""
        mine = _criterion(law)
        near = [other for key, other in self.laws.items()
                if key != frozenset(law.terms) and key in self.kept
                and _criterion(other) - mine < RIVAL]  # fmt: skip
        return sorted(near, key=_criterion)

    def held_out(self, law: _Law) -> tuple[float, np.ndarray | None]:
        """The RMSE of ``law`` over a window it was not fitted to, and its squared misfits
        per held-out sample ``(H,)``: the hybrid's validation window when its refits held
        that out, else the law refitted without the last
        :data:`~physnode.fit.selection.VALIDATION` of the training window and scored there;
        ``(inf, None)`` when that refit cannot be integrated."""
        fitter = law.fitter
        if fitter.validation_rmse_ is None:
            try:
                fitter = self.fit(law.terms, fitter.params_[COEFFICIENTS], fitter.params_,
                                  validation=VALIDATION)  # fmt: skip
            except SolverError:
                return math.inf, None
        rmse = fitter.validation_rmse_
        if rmse is None or not math.isfinite(rmse):
            return math.inf, None
        prob = fitter._prob
        return float(rmse), np.sum(fitter._errors[prob.n_fit : prob.n_train] ** 2, axis=1)

    def prune(self, terms: list[str], start: np.ndarray, params: dict) -> _Law:
        """:meth:`fit`, then drop the terms :func:`_weakest` names, refitting after each."""
        while True:
            fitter = self.fit(terms, start, params)
            params = fitter.params_  # each refit starts where the one before it ended
            c = fitter.params_[COEFFICIENTS]
            s = fitter.uncertainties_[COEFFICIENTS]
            drop = _weakest(c, s, np.abs(c) * _term_rms(fitter, fitter.model_, terms))
            if drop is None or len(terms) == 1:
                self.kept.add(frozenset(terms))
                return _Law(terms, fitter)
            terms = [t for t, w in zip(terms, drop, strict=True) if not w]
            start = c[~drop]


def _complete(search: _Search, law: _Law) -> _Law:
    """Add library terms the law lacks, one per round (at most :data:`MAX_ADDED`): the
    candidate the score test (:func:`_scores`) finds most significant, if it passes
    :func:`_threshold` and its one-step coefficient is not negligible, is added with
    coefficient 0 and the law refitted and pruned (which may drop it, or others). A round
    stands only if its law is better by :func:`_criterion`; otherwise the search ends. No
    term is added twice; a readout term the pruning dropped may come back once (pruning one
    at a time among near-collinear terms, ``q``, ``|q| q``, ``|q|^2 q``, can drop the law)."""
    added: set[str] = set()
    for _ in range(MAX_ADDED):
        pool = [t for t in _library(search.hybrid) if t not in added and t not in law.terms]
        term = _addition(search, law, pool)
        if term is None:
            return law
        added.add(term)
        c = law.fitter.params_[COEFFICIENTS]
        try:
            trial = search.prune([*law.terms, term], np.append(c, 0.0), law.fitter.params_)
        except SolverError:
            return law
        if not _criterion(trial) < _criterion(law):
            return law
        law = trial
    return law


def _swap(search: _Search, law: _Law) -> _Law:
    """The law with near-collinear terms swapped out, while that lowers :func:`_criterion`
    (at most :data:`MAX_SWAPS` rounds): each term :func:`_collinear` names is dropped in turn,
    and each pair :func:`_exchangeable` names exchanged, and the law refitted, pruned and
    completed (:func:`_complete`, which may add a term back); the best law that differs from
    ``law`` in its terms replaces it if it is better. Every law tried is recorded, so one the
    criterion cannot tell from the best is its rival (:func:`_choose`)."""
    for _ in range(MAX_SWAPS):
        best = law
        for terms, start in _swaps(search, law):
            try:
                trial = _complete(search, search.prune(terms, start, law.fitter.params_))
            except SolverError:
                continue
            if sorted(trial.terms) != sorted(law.terms) and _criterion(trial) < _criterion(best):
                best = trial
        if best is law:
            return law
        law = best
    return law


def _swaps(search: _Search, law: _Law) -> Iterator[tuple[list[str], np.ndarray]]:
    """The terms and starting coefficients of each law :func:`_swap` tries from ``law``: a
    collinear term dropped, then a term exchanged for a library term; both read from one
    sensitivity solve (:func:`_probe`)."""
    c = law.fitter.params_[COEFFICIENTS]
    pool = [t for t in _library(search.hybrid) if t not in law.terms]
    lin = _probe(search, law, pool)[0]
    if not np.all(np.isfinite(lin.jacobian)):
        return
    cols = lin.columns[COEFFICIENTS]
    own = np.delete(lin.jacobian, np.arange(cols.start + len(law.terms), cols.stop), axis=1)
    for term in _collinear(law, own, cols.start):
        keep = np.array([t != term for t in law.terms])
        yield [t for t, k in zip(law.terms, keep, strict=True) if k], c[keep]
    for k, new, coefficient in _exchangeable(law, lin, pool):
        terms, start = list(law.terms), c.copy()
        terms[k], start[k] = new, coefficient
        yield terms, start


def _exchangeable(law: _Law, lin: Linearisation, pool: list[str]) -> list[tuple[int, str, float]]:
    """Which law term each term of ``pool`` nearly stands in for: ``(k, term, coefficient)``
    for law term ``k`` whose Jacobian column at the law's fit and ``term``'s (at coefficient
    0; ``lin``: :func:`_probe`'s), both projected off every other column of the law, have a
    squared correlation over ``1 -`` :data:`COLLINEAR_TERM` (a pair's variance inflation
    factor over 10), with the coefficient that makes ``term``'s column match law term
    ``k``'s there; at most :data:`EXCHANGES` per law term, the most collinear first."""
    if not pool:
        return []
    jac, cols = lin.jacobian, lin.columns[COEFFICIENTS]
    mine = np.arange(cols.start, cols.start + len(law.terms))
    candidates = np.arange(cols.start + len(law.terms), cols.stop)
    new = jac[:, candidates]
    c = law.fitter.params_[COEFFICIENTS]
    found = []
    for k, j in enumerate(mine):
        basis = _span(jac[:, np.setdiff1d(np.arange(jac.shape[1]), [j, *candidates])])
        a, b = (x - basis @ (basis.T @ x) for x in (jac[:, j], new))
        dot, norm2 = b.T @ a, np.sum(b**2, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(norm2 > 0, dot**2 / (norm2 * float(a @ a)), 0.0)
        order = [i for i in np.argsort(-r2) if r2[i] > 1 - COLLINEAR_TERM][:EXCHANGES]
        found += [(k, pool[i], float(c[k] * dot[i] / norm2[i])) for i in order]
    return found


def _probe(search: _Search, law: _Law, pool: list[str]) -> tuple[Linearisation, object]:
    """The law and every term of ``pool`` (at coefficient 0, so the same trajectory)
    linearised at the law's fit over the search's window, in one sensitivity solve (the
    law's coefficient columns, then the pool's in order), and the model that holds them."""
    fitter = law.fitter
    c = fitter.params_[COEFFICIENTS]
    probe = _fitter(search.hybrid, [*law.terms, *pool], np.append(c, np.zeros(len(pool))),
                    fitter.params_)  # fmt: skip
    probe._set_up(search.data, fitter._prob.start().detach())
    return linearise(probe._objective), probe.model_


def _collinear(law: _Law, jac: np.ndarray, first: int) -> list[str]:
    """The terms of ``law`` (of two or more) whose Jacobian column at the law's fit (``jac``,
    finite: the law's columns, its terms' from ``first`` on) keeps under
    :data:`COLLINEAR_TERM` of its squared norm once projected off every other column, the
    most collinear first."""
    if len(law.terms) < 2:
        return []
    kept = []
    for j in range(first, first + len(law.terms)):
        basis = _span(np.delete(jac, j, axis=1))
        b = jac[:, j]
        left = b - basis @ (basis.T @ b)
        kept.append(float(left @ left) / max(float(b @ b), 1e-300))
    order = np.argsort(kept)
    return [law.terms[k] for k in order if kept[k] < COLLINEAR_TERM]


def _criterion(law: _Law) -> float:
    """The Bayesian information criterion of ``law``'s fit of its training window, up to a
    constant: ``sum_k n_k log(RSS_k / n_k) + K log n`` over the ``n_k`` fitted residuals of
    each kind of observation (positions, velocities; a system's state), their sum ``n``, and
    ``K`` terms. The first sum is -2 log-likelihood with each kind's noise level at its
    maximum-likelihood value, which is what the least-squares finish's re-weighting per kind
    converges to, so two fits of a law compare by what was fitted; a law that fits no better
    with more terms loses (and on clean data, where the RSS is the solver's error, only a law
    that fits far better wins)."""
    fitter = law.fitter
    prob = fitter._prob
    r = fitter._misfits[: prob.n_fit]
    total, n = 0.0, 0
    for columns in observed_kinds(prob).values():
        rss, n_k = float(np.sum(r[:, columns] ** 2)), r[:, columns].size
        total += n_k * math.log(max(rss / n_k, 1e-300))
        n += n_k
    return total + len(law.terms) * math.log(n)


def _library(hybrid) -> list[str]:
    """The refit's candidate terms: the polynomial library per corrected component for
    systems without bodies (less the terms a learned parameter already is), else the particle
    library of the hybrid's correction kind."""
    prob = hybrid._prob
    if prob.particles is None:
        names = list(prob.system.state_names)
        targets = names[len(names) // 2 :] if prob.system.second_order else names
        skip = degenerate_terms(prob, _training_states(hybrid))
        return [state_term(t, m) for t in targets for m, _ in polynomial_library(names)
                if (t, m) not in skip]  # fmt: skip
    return list(particle_library(prob.particles[1], CORRECTIONS[hybrid.correction_].families))


def _addition(search: _Search, law: _Law, pool: list[str]) -> str | None:
    """The term of ``pool`` to add next, or ``None``: the law and every candidate (at
    coefficient 0, so the same trajectory) are linearised at the law's fit in one
    sensitivity solve, and each candidate scored against the law's columns."""
    if not pool:
        return None
    fitter = law.fitter
    c = fitter.params_[COEFFICIENTS]
    lin, model = _probe(search, law, pool)
    cols = lin.columns[COEFFICIENTS]
    scores, steps = _scores(lin, np.arange(cols.start + len(law.terms), cols.stop))
    rms = _term_rms(fitter, model, pool)
    largest = float(np.max(np.abs(c) * _term_rms(fitter, fitter.model_, law.terms)))
    ok = (scores >= _threshold(len(pool))) & (np.abs(steps) * rms >= NEGLIGIBLE * largest)
    if not ok.any():
        return None
    return pool[int(np.argmax(np.where(ok, scores, -np.inf)))]


def _scores(lin: Linearisation, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The score test of adding each column ``new`` of ``lin.jacobian`` to the others: the
    fall of the weighted residual sum of squares one Gauss–Newton step would give, over the
    residual variance ``s²`` (a χ²(1) statistic when the law is complete: ``z²`` of the new
    coefficient), and that step's coefficient. A column (near) in the span of the others
    (:data:`COLLINEAR`) scores 0; so does every column when the residuals are not finite."""
    r, jac = lin.residuals, lin.jacobian
    zeros = np.zeros(len(new))
    if not (np.all(np.isfinite(jac)) and np.all(np.abs(r) < 1e99)):
        return zeros, zeros
    basis = _span(jac[:, np.setdiff1d(np.arange(jac.shape[1]), new)])
    b = jac[:, new]
    b_perp = b - basis @ (basis.T @ b)
    r_perp = r - basis @ (basis.T @ r)
    s2 = float(r_perp @ r_perp) / max(len(r) - basis.shape[1], 1)
    norm2 = np.sum(b_perp**2, axis=0)
    distinct = (norm2 > COLLINEAR * np.sum(b**2, axis=0)) & (s2 > 0)
    g = b_perp.T @ r_perp
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(distinct, g**2 / norm2 / s2, 0.0)
        steps = np.where(distinct, -g / norm2, 0.0)
    return scores, steps


def _span(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis ``(R, r)`` of the span of the columns of ``a`` ``(R, P)``, less the
    directions of singular values under :data:`RANK_CUT` of the largest."""
    u, sv, _ = np.linalg.svd(a, full_matrices=False)
    return u[:, sv > RANK_CUT * sv.max()] if sv.size else u[:, :0]


def _threshold(k: int) -> float:
    """The score the best of ``k`` candidates must reach: the χ²(1) level whose chance of
    being passed by any of ``k`` terms that are not in the data equals that of one
    :data:`SIGNIFICANCE` σ test (Bonferroni), so a larger library adds no more false terms."""
    alpha = scipy.stats.chi2.sf(SIGNIFICANCE**2, 1)
    return float(scipy.stats.chi2.isf(alpha / max(k, 1), 1))


def _refit(hybrid, data: Trajectory, terms: list[str], start: np.ndarray, params: dict,
           validation: float | None = None):  # fmt: skip
    """One physics + terms fit with the hybrid's settings, from the physical parameters
    ``params`` (the hybrid's, then the previous refit's) and coefficients ``start``;
    ``validation``: the fraction of the window held out instead of the hybrid's."""
    fitter = _fitter(hybrid, terms, start, params, validation)
    _check_integrable(fitter, data)
    return fitter.fit(data)


def _fitter(hybrid, terms: list[str], start: np.ndarray, params: dict,
            validation: float | None = None):  # fmt: skip
    """The (unfitted) physics + ``terms`` fitter of :func:`_refit`."""
    settings = {
        k: v for k, v in hybrid.settings_.items()
        if k not in ("model", "correction", "terms", "init_coefficients", "init_masses",
                     "init_params", "refit_symbolic", "hidden", "learn", "correction_penalty")
    }  # fmt: skip
    settings["learn"] = tuple(hybrid.learn)
    settings["train_until"] = hybrid.train_until_  # also on data cut there (_Search)
    # no Adam or L-BFGS: from the readout, the Levenberg–Marquardt finish (exact Jacobian) does
    # the work; Adam's steps of ~lr in each coefficient threw a 0.1 drag to a close encounter
    settings["epochs"], settings["lbfgs_steps"] = 0, 0
    # the reported hybrid fit's windows, so its train and validation RMSE compare with the
    # refit's (a retrained fit held nothing out: it fitted up to train_until_)
    held_out = hybrid.fit_until_ < hybrid.train_until_
    settings["validation"] = hybrid.validation_ if held_out else 0.0
    if validation is not None:
        settings["validation"] = validation
    settings["ensemble"] = 1  # the refit of the chosen member's law: one physics fit
    masses = params.get("masses")
    # every other learned parameter (a system's rates, G) starts there too
    rates = {k: float(v) for k, v in params.items()
             if k not in ("masses", COEFFICIENTS) and np.size(v) == 1}  # fmt: skip
    return type(hybrid)(
        **settings, model="physics", terms=terms, init_coefficients=[float(x) for x in start],
        init_masses=None if masses is None else [float(m) for m in masses],
        init_params=rates or None,
    )  # fmt: skip


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


def _term_rms(fitter, model, terms: list[str]) -> np.ndarray:
    """RMS of each of ``terms`` (coefficient 1) along ``fitter``'s fitted training window;
    state terms' monomials are read from ``model``'s correction, which must hold them."""
    pred = fitter.prediction_
    n = int(np.searchsorted(pred.times, fitter.train_until_, side="right"))
    if pred.positions is None:  # state terms: their monomials along the fitted states
        y = torch.as_tensor(np.asarray(pred.state[:n], np.float64))
        with torch.no_grad():
            values = model.correction.monomials(y).square().mean(dim=0).sqrt().numpy()
        index = [model.correction.terms.index(t) for t in terms]
        return values[index]
    q, v, m = (torch.as_tensor(np.asarray(x, np.float64)) for x in
               (pred.positions[:n], pred.velocities[:n], pred.masses))  # fmt: skip
    library = particle_library(q.shape[-1])
    with torch.no_grad():
        return np.array([float(library[t](q, v, m).square().mean().sqrt()) for t in terms])


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
