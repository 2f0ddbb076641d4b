"""The discovered law of a hybrid fit and its symbolic refit, end to end, on data with a force
the physics does not know (linear drag -γ v, γ = 0.1), simulated independently of physnode's
model (``tests/fit/test_hybrid.py``: NumPy gravity plus drag, SciPy DOP853 at 1e-12). The fit
starts from unit masses; the refit from the hybrid's masses and the readout's coefficients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from physnode.data import write_trajectory
from physnode.data.fitfile import read_fit, write_fit
from physnode.fit import Fitter
from tests.fit.test_hybrid import GAMMA, TRUE_MASSES, _drag_data


@pytest.mark.slow  # ~25 s: a 60-epoch hybrid fit and two refits
def test_drag_is_discovered_refitted_and_stored(tmp_path) -> None:
    """The field network's readout is ``-γ v`` alone within 5 % (the issue's bound; measured
    -0.1001, the readout of a network fitted to t ≤ 2 only); the refit of
    physics + v recovers γ and the masses to 1e-6 relative (clean data: the least-squares
    finish at rtol 1e-10 measured 1e-11) and extrapolates 100× better than the network
    (measured 2e-7 vs 6e-3). The fit file holds both, as docs/FORMAT.md lays out."""
    data = _drag_data()
    # the hybrid benchmark's settings (benchmarks/hybrid.py); with 40 epochs and 10 L-BFGS
    # steps the readout kept 8 terms (v at -0.078) and only the refit found -γ v alone
    fitter = Fitter(model="hybrid", correction="field", train_until=2.0, epochs=60, lr=0.01,
                    lbfgs_steps=40, refit_symbolic=True).fit(data)  # fmt: skip
    found = fitter.discovered_
    assert found.terms == ["v"], found.formula
    assert abs(found.coefficients[0] + GAMMA) < 0.05 * GAMMA, found.formula
    # the drag, 0.1 |v| with |v| ~ 1, against gravity's ~1: a few per cent of the physics,
    # never the 1e-4 of a network's residue (bounds an order of magnitude either side)
    assert 0.005 < found.relative_size < 0.5, found.relative_size
    refit = fitter.refit_
    assert refit.terms == ["v"] and refit.added == []  # the law is complete: nothing added
    assert abs(refit.coefficients[0] + GAMMA) < 1e-6 * GAMMA, refit.formula
    np.testing.assert_allclose(refit.params["masses"], TRUE_MASSES, rtol=1e-6)
    assert refit.extrapolation_rmse < 0.01 * fitter.extrapolation_rmse_
    path = write_fit(tmp_path / "fit.h5", fitter, data_path=_write(tmp_path, data), observed=data)
    stored = read_fit(path).discovered
    assert stored["terms"] == ["v"] and stored["formula"] == found.formula
    assert stored["relative_size"] == found.relative_size
    np.testing.assert_array_equal(stored["coefficients"], found.coefficients)
    assert stored["refit"]["terms"] == ["v"] and stored["refit"]["added"] == []
    # clean data: every other law fits far worse, so none is a rival
    assert stored["refit"]["rivals"] == refit.rivals == []
    assert stored["refit"]["held_out_rmse"] is refit.held_out_rmse is None  # no rivals to choose
    np.testing.assert_array_equal(stored["refit"]["sigma"], refit.sigma)
    np.testing.assert_array_equal(stored["refit"]["params"]["masses"], refit.params["masses"])


def test_a_physics_fit_has_no_discovered_law() -> None:
    fitter = Fitter(model="physics", train_until=2.0, epochs=2, lbfgs_steps=0).fit(_drag_data())
    assert fitter.discovered_ is None and fitter.refit_ is None


def _write(tmp_path, data):
    path = tmp_path / "data.h5"
    write_trajectory(path, data)
    return path


def test_a_refit_that_cannot_be_integrated_is_a_warning_not_a_failure(monkeypatch) -> None:
    """A readout's law holds only along the data; integrated as physics it may meet a
    singularity (the unseen point mass of benchmarks/hybrid.py did). The hybrid fit is kept,
    ``refit_`` is None and a warning says why."""
    import physnode.fit.fitter as fitter_module
    from physnode.errors import StepSizeTooSmallError

    def fails(*args, **kwargs):
        raise StepSizeTooSmallError("step size fell below the floor")

    monkeypatch.setattr(fitter_module, "refit_symbolic", fails)
    fitter = Fitter(model="hybrid", correction="field", train_until=2.0, epochs=3,
                    lbfgs_steps=0, refit_symbolic=True).fit(_drag_data())  # fmt: skip
    assert fitter.refit_ is None and fitter.discovered_ is not None
    assert any("symbolic refit" in w for w in fitter.warnings_)


def test_terms_are_dropped_negligible_first_then_least_significant_one_at_a_time() -> None:
    """The pruning rule of the refit, by hand: negligible terms (under 1e-3 of the largest
    term's acceleration) go together; otherwise only the least significant (|c|/σ, inf σ =
    undetermined first) if under 3σ; NaN σ (an interrupted finish) keeps a term."""
    from physnode.fit.symbolic import _weakest

    c, s = np.array([1.0, 0.5, 0.2]), np.array([0.1, 0.2, 0.1])
    np.testing.assert_array_equal(_weakest(c, s, np.array([1.0, 1e-4, 0.5])), [0, 1, 0])
    np.testing.assert_array_equal(_weakest(c, s, np.ones(3)), [0, 0, 1])  # 10σ, 2.5σ, 2σ
    s_inf = np.array([0.1, 0.01, np.inf])
    np.testing.assert_array_equal(_weakest(c, s_inf, np.ones(3)), [0, 0, 1])
    assert _weakest(c, np.array([0.1, 0.1, 0.01]), np.ones(3)) is None  # all ≥ 3σ
    assert _weakest(c, np.array([np.nan] * 3), np.ones(3)) is None


def _lotka_volterra_without_interaction():
    """The universal differential equations paper's Lotka–Volterra data (Rackauckas et al.
    2020: x' = 1.3 x - 0.9 x y, y' = 0.8 x y - 1.8 y from (0.44249296, 4.6280594)), by SciPy
    DOP853 at 1e-11 on its own right-hand side; the file's known physics has no interaction
    (physnode's beta = delta = 0)."""
    from scipy.integrate import solve_ivp

    from physnode.data import Trajectory

    def rhs(t, u):
        return [1.3 * u[0] - 0.9 * u[0] * u[1], 0.8 * u[0] * u[1] - 1.8 * u[1]]

    times = np.linspace(0.0, 4.0, 41)
    sol = solve_ivp(rhs, (0.0, 4.0), [0.44249296, 4.6280594], method="DOP853", t_eval=times,
                    rtol=1e-11, atol=1e-11)  # fmt: skip
    known = {"system": "lotka-volterra", "beta": 0.0, "delta": 0.0}
    return Trajectory(times, state=sol.y.T, state_names=("prey", "predator"), parameters=known)


def test_state_terms_fitted_as_physics_recover_the_missing_interaction() -> None:
    """A physics fit of Lotka–Volterra without interaction plus the two interaction monomials
    as named state terms, from wrong rates (the system's defaults 1.5 and 3) and wrong
    coefficients (-0.5, 0.5), recovers the rates and coefficients to 1e-6 relative (clean
    data, least-squares finish at rtol 1e-10: measured ~1e-9) and reports their σ."""
    data = _lotka_volterra_without_interaction()
    terms = ["prey: prey predator", "predator: prey predator"]
    fitter = Fitter(model="physics", learn=("alpha", "gamma"), terms=terms,
                    init_coefficients=[-0.5, 0.5], train_until=3.0).fit(data)  # fmt: skip
    np.testing.assert_allclose(fitter.params_["coefficients"], [-0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose([fitter.params_["alpha"], fitter.params_["gamma"]], [1.3, 1.8],
                               rtol=1e-6)  # fmt: skip
    assert np.all(np.isfinite(fitter.uncertainties_["coefficients"]))
    assert fitter.settings_["terms"] == ";".join(terms)  # stored, so a resume rebuilds them


@pytest.mark.slow  # ~20 s: a short hybrid fit, then the refits
def test_the_missing_lotka_volterra_interaction_is_learned_read_and_refitted() -> None:
    """The universal differential equations paper's experiment end to end: the hybrid (an
    ``mlp`` correction on the known linear part, rates from the defaults 1.5 and 3) is fitted
    to t <= 3 with the hybrid benchmark's short budget, its correction read out and the law
    refitted as physics. The network is under-fitted and its law is not the answer (measured:
    eight terms, the prey's interaction with the wrong sign), but it holds both interaction
    monomials; the refit, from it and from the hybrid's rates, drops the rest and recovers
    -0.9 and +0.8 and the rates to 1e-6 relative (clean data, finish at rtol 1e-10: measured
    1e-11), so it extrapolates past the training window where the network cannot."""
    data = _lotka_volterra_without_interaction()
    fitter = Fitter(model="hybrid", learn=("alpha", "gamma"), train_until=3.0, epochs=60,
                    lr=0.01, lbfgs_steps=40, refit_symbolic=True).fit(data)  # fmt: skip
    found = set(zip(fitter.discovered_.targets, fitter.discovered_.terms, strict=True))
    assert {("prey", "prey predator"), ("predator", "prey predator")} <= found, found
    refit = fitter.refit_
    assert refit is not None, fitter.warnings_
    assert refit.terms == ["prey: prey predator", "predator: prey predator"], refit.formula
    np.testing.assert_allclose(refit.coefficients, [-0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose([refit.params["alpha"], refit.params["gamma"]], [1.3, 1.8],
                               rtol=1e-6)  # fmt: skip
    # the network extrapolates with an RMSE of order 1 (measured 1-17 on this data); the
    # refit's is the solver's error plus the coefficients' (1e-6 of the state, O(1))
    assert refit.extrapolation_rmse < 1e-4 < fitter.extrapolation_rmse_


def test_init_params_start_a_learned_rate_and_refuse_what_is_not_learned() -> None:
    """``init_params`` sets where a learned rate starts (the refit's start from the hybrid),
    is stored in the settings (so a resume rebuilds it) and refuses a parameter the fit
    does not learn, instead of ignoring it."""
    from physnode.errors import InvalidInputError

    data = _lotka_volterra_without_interaction()
    fitter = Fitter(model="physics", learn=("alpha", "gamma"), epochs=0, lbfgs_steps=0,
                    init_params={"alpha": 1.25, "gamma": 1.7})  # fmt: skip
    prob = fitter._set_up(data, None)
    assert float(prob.system.param("alpha").detach()) == pytest.approx(
        1.25, rel=1e-15
    )  # softplus⁻¹∘softplus
    assert float(prob.system.param("gamma").detach()) == pytest.approx(1.7, rel=1e-15)
    assert fitter.settings_["init_params"] == "alpha=1.25;gamma=1.7"
    again = Fitter(model="physics", learn=("alpha", "gamma"), init_params="alpha=1.25;gamma=1.7")
    assert again._init_params() == {"alpha": 1.25, "gamma": 1.7}
    with pytest.raises(InvalidInputError, match="'beta', which is not a learned"):
        Fitter(model="physics", learn=("alpha",), init_params={"beta": 0.5}).fit(data)


def test_the_score_of_a_candidate_term_is_the_least_squares_gain_of_adding_it() -> None:
    """The refit's score test on a linear problem, where one Gauss–Newton step is exact,
    against NumPy least squares by hand (Frisch–Waugh–Lovell): a candidate's score × s² is
    the fall of the residual sum of squares when its column joins the law's, its step the
    coefficient the joint fit gives it; a column in the span of the law's scores 0."""
    from physnode.fit.least_squares import Linearisation
    from physnode.fit.symbolic import _scores, _threshold

    rng = np.random.default_rng(3)
    old = rng.normal(size=(200, 4))
    cand = np.column_stack([rng.normal(size=(200, 2)), old @ [1.0, -2.0, 0.5, 0.0]])
    data = old @ [1.0, 2.0, 3.0, 4.0] + 0.7 * cand[:, 0] + 0.01 * rng.normal(size=200)
    fitted = old @ np.linalg.lstsq(old, data, rcond=None)[0]
    r = fitted - data  # the law's residuals at its least-squares optimum
    jac = np.column_stack([old, cand])
    lin = Linearisation(r, jac, {})
    scores, steps = _scores(lin, np.arange(4, 7))
    s2 = float(r @ r) / (200 - 4)
    for k in range(2):
        both = np.column_stack([old, cand[:, k]])
        coef, rss_new = np.linalg.lstsq(both, data, rcond=None)[:2]
        # float64 sums of 200 terms: agreement to ~1e-12 relative; 1e-9 leaves room
        assert scores[k] * s2 == pytest.approx(float(r @ r) - float(rss_new[0]), rel=1e-9)
        assert steps[k] == pytest.approx(coef[-1], rel=1e-9)
    # s² is the law's own (the missing term's variance in it), so a score is at most the
    # degrees of freedom (196): the term in the data is near that, the pure-noise column far
    # under the level for three candidates (11.0; fixed seed: measured 1.5)
    assert scores[0] > 100 > _threshold(3) > scores[1]
    assert scores[2] == 0.0 and steps[2] == 0.0  # collinear with the law's columns
    # one candidate: exactly a 3σ test (z² = 9); more: the Bonferroni level rises with them
    assert _threshold(1) == pytest.approx(9.0, rel=1e-9)
    assert 9.0 < _threshold(2) < _threshold(12) < _threshold(100)


def test_a_law_predicts_worse_only_when_a_paired_test_resolves_it() -> None:
    """The held-out rule against Student's t by hand: 8 samples whose squared misfits differ
    from the best law's by ``m`` plus ``±0.1`` alternating (standard error of the mean
    difference 0.1069 / √8 = 0.0378) are worse at 5 % two-sided when ``m / 0.0378`` passes the
    tabulated t(0.975, 7 degrees of freedom) = 2.365, i.e. ``m`` > 0.0894; a law that could not
    be integrated there (``None``) is worse than any that could."""
    from physnode.fit.symbolic import _worse

    best = np.full(8, 1.0)
    wobble = 0.1 * np.array([1.0, -1.0] * 4)
    assert _worse(best + 0.095 + wobble, best)  # t = 2.51
    assert not _worse(best + 0.085 + wobble, best)  # t = 2.25: within the noise
    assert not _worse(best - 0.095 + wobble, best)  # resolved, but better
    assert not _worse(best, best)
    assert _worse(None, best) and not _worse(best, None) and not _worse(None, None)


def test_laws_the_data_do_not_tell_apart_are_ordered_simplest_first() -> None:
    """Fewer terms first, then the lower summed order (every library term has one: the power
    of ``|q|``, ``|v|`` or ``|r_ij|`` it scales as; a monomial's degree), then the criterion:
    ``q`` before ``|q|^2 q`` even at a worse criterion, one term before two."""
    from types import SimpleNamespace

    from physnode.fit.symbolic import _Law, _order, _simplicity
    from physnode.models.discovery import PARTICLE_ORDER, particle_library

    assert set(particle_library(3)) <= set(PARTICLE_ORDER)
    prob = SimpleNamespace(particles=(3, 2), n_fit=33, index=np.arange(12))

    def law(terms, rmse):  # positions and velocities misfit by rmse everywhere
        return _Law(terms, SimpleNamespace(_prob=prob, _misfits=np.full((41, 12), rmse)))

    hybrid = SimpleNamespace(_prob=prob)
    laws = [law(["q", "v"], 0.008), law(["|q|^2 q"], 0.0090), law(["q"], 0.0091),
            law(["|q| q"], 0.0089)]  # fmt: skip
    ranked = sorted(laws, key=lambda x: _simplicity(hybrid, x))
    assert [x.terms for x in ranked] == [["q"], ["|q| q"], ["|q|^2 q"], ["q", "v"]]
    states = SimpleNamespace(particles=None, system=SimpleNamespace(state_names=("x", "y")))
    orders = [
        _order(SimpleNamespace(_prob=states), t) for t in ("x: 1", "x: y", "y: x y", "y: x^2")
    ]
    assert orders == [0, 1, 2, 2]


@pytest.mark.slow  # ~25 s: a 1-epoch hybrid, then about ten Levenberg–Marquardt refits
def test_a_term_the_readout_missed_is_added_back_from_the_library() -> None:
    """The fragile case of RESULTS.md, by hand: the readout of an under-fitted network left
    out the prey's ``prey predator`` (the law the CLI's default 50 L-BFGS steps gave, with the
    rates where that hybrid left them). Pruning alone ended at a wrong law (training RMSE
    7e-3, extrapolation 12.8). The refit's score test adds the missing term from the library,
    then pruning drops the spurious ones: the true law, coefficients and rates to 1e-6 (clean
    data, finish at rtol 1e-10: measured 1e-11), extrapolating at the solver's error."""
    from physnode.fit.symbolic import refit_symbolic
    from physnode.models.discovery import Discovery

    data = _lotka_volterra_without_interaction()
    hybrid = Fitter(model="hybrid", learn=("alpha", "gamma"), train_until=3.0, epochs=1,
                    lbfgs_steps=0).fit(data)  # fmt: skip
    hybrid.params_ = {"alpha": np.float64(1.2148), "gamma": np.float64(1.7242)}
    wrong = Discovery(
        terms=["predator", "predator^2", "prey", "predator", "prey predator", "predator^2"],
        coefficients=np.array([-0.1704, -0.02429, 0.0936, 0.1122, -0.315, 0.03628]),
        explained=0.996, library_explained=1.0, formula="(the CLI's readout)",
        targets=["prey", "prey", "predator", "predator", "predator", "predator"],
    )  # fmt: skip
    refit = refit_symbolic(hybrid, data, wrong)
    assert refit.added == ["prey: prey predator"], refit.formula
    found = dict(zip(refit.terms, refit.coefficients, strict=True))
    assert set(found) == {"prey: prey predator", "predator: prey predator"}, refit.formula
    np.testing.assert_allclose([found["prey: prey predator"], found["predator: prey predator"]],
                               [-0.9, 0.8], rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose([refit.params["alpha"], refit.params["gamma"]], [1.3, 1.8],
                               rtol=1e-6)  # fmt: skip
    # past the window: the solver's error plus the coefficients' (1e-6 of an O(1) state)
    assert refit.extrapolation_rmse < 1e-4


def test_a_term_a_learned_rate_already_is_is_found_and_folded_into_it() -> None:
    """Lotka–Volterra without interaction, ``alpha`` and ``gamma`` learned: of the degree-2
    library, by hand from x' = alpha x, y' = -gamma y, exactly ``prey: prey`` (d/d alpha)
    and ``predator: predator`` (d/d gamma) are the rates' own terms. Folding ``-0.16 prey``
    and ``+0.2 predator`` moves alpha by -0.16 and gamma by -0.2 (the physics is linear in
    them: exact up to the central differences' rounding, ~1e-9); a fold that would take a
    positive rate through 0 leaves it."""
    from physnode.fit.readout import absorb, degenerate_terms

    data = _lotka_volterra_without_interaction()
    fitter = Fitter(model="physics", learn=("alpha", "gamma"), train_until=3.0,
                    init_params={"alpha": 1.5, "gamma": 3.0})  # fmt: skip
    prob = fitter._set_up(data, None)
    states = data.state[:31]
    assert degenerate_terms(prob, states) == {("prey", "prey"), ("predator", "predator")}
    folded = absorb(prob, states, [("prey", "prey", -0.16), ("predator", "predator", 0.2)])
    assert float(folded["alpha"]) == pytest.approx(1.5 - 0.16, abs=1e-7)
    assert float(folded["gamma"]) == pytest.approx(3.0 - 0.2, abs=1e-7)
    kept = absorb(prob, states, [("prey", "prey", -2.0)])
    assert float(kept["alpha"]) == pytest.approx(1.5, rel=1e-12)


def _noisy_tidal_data():
    """RESULTS.md's noisy tidal case: gravity plus a = -0.05 q (tests/reference.py's SciPy
    DOP853 on its own right-hand side), three bodies in 2-D from the hybrid benchmark's start
    (bound_start seed 0), 81 samples on [0, 4], 1 % relative noise (seed 1)."""
    from physnode.data import add_noise
    from tests.reference import bound_start, simulate, to_trajectory

    q0, v0 = bound_start(TRUE_MASSES, 2, seed=0)
    run = simulate(TRUE_MASSES, q0, v0, np.linspace(0.0, 4.0, 81),
                   extra=lambda q, v: -TIDAL * q)  # fmt: skip
    return add_noise(to_trajectory(run), 0.01, seed=1)


#: the noisy tidal case's field strength, 1 / time units²
TIDAL = 0.05


def _check_choice(refit) -> None:
    """On what a refit of the noisy tidal case reports: ``q`` (the lowest order of the
    rivals' family, so the law whenever the held-out window rules none out) is the law,
    every held-out RMSE at least the noise on the positions (1 % of ~1) less what fitting
    the start absorbs (bound: half of it)."""
    assert refit.terms == ["q"], (refit.formula, refit.rivals, refit.rival_held_out_rmse)
    assert all(h > 0.005 for h in [refit.held_out_rmse, *refit.rival_held_out_rmse])


@pytest.mark.slow  # ~50 s: a 1-epoch hybrid, then about ten noisy Levenberg–Marquardt refits
def test_a_one_term_law_is_also_fitted_as_the_terms_that_stand_in_for_it() -> None:
    """A readout of ``|q|^2 q`` alone (what the field network gave the noisy tidal case on
    another noise draw: RESULTS.md's sweep, seed 3), on the noisy tidal data: one term, so
    no drop-one swap, and ``q`` adds nothing to it (the two are near-collinear on this
    orbit). The exchange move fits ``q`` and ``|q| q`` in its place (measured squared
    correlations of their projected Jacobian columns with its: 0.978 and 0.995; every other
    library term's under 0.4). With the velocities in the information criterion the data
    tell them apart (measured: ``|q| q`` 11.8 and ``|q|^2 q`` 40.9 above ``q``), so ``q`` is
    the law with no rival, its coefficient -0.05 within 5 % (the issue's bound; its 1σ
    measured 2 %)."""
    from physnode.fit.symbolic import refit_symbolic
    from physnode.models.discovery import Discovery

    data = _noisy_tidal_data()
    hybrid = Fitter(model="hybrid", correction="field", learn=("masses", "y0"),
                    train_until=2.0, epochs=1, lbfgs_steps=0).fit(data)  # fmt: skip
    hybrid.params_ = {"masses": np.array([0.8140, 1.1729, 1.0148])}
    one = Discovery(terms=["|q|^2 q"], coefficients=np.array([-0.021]), explained=0.9,
                    library_explained=0.95, formula="(the pruned law)", targets=[])  # fmt: skip
    refit = refit_symbolic(hybrid, data, one)
    assert refit.terms == ["q"] and refit.added == ["q"], refit.formula
    assert abs(refit.coefficients[0] + TIDAL) < 0.05 * TIDAL, refit.formula
    assert refit.rivals == [] and refit.held_out_rmse is None, refit.rivals


@pytest.mark.slow  # ~60 s: a 1-epoch hybrid, then a dozen noisy Levenberg–Marquardt refits
def test_two_terms_that_together_mimic_one_are_swapped_for_it(tmp_path) -> None:
    """RESULTS.md's noisy tidal case, by hand, observed in positions only: pruning the field
    network's readout ended at ``-0.064 |q| q + 0.021 |q|^2 q`` (masses where that hybrid
    left them), a near-collinear pair that together mimics ``q`` on this orbit, so adding
    ``q`` to it scores too little: completion cannot mend it. The swap drops each of the pair
    in turn, completes the rest and keeps the law of lowest information criterion: one term.
    Without the velocities, 41 noisy samples of positions hardly tell ``q``, ``|q| q`` and
    ``|q|^2 q`` apart (measured: ``|q| q`` +0.60 and ``|q|^2 q`` +1.24 above ``q``), so they
    are rivals; refitted without the last 20 % of the training window none predicts it
    resolvably worse (held-out RMSE 8.84e-3, 8.87e-3, 8.90e-3), and ``q`` is both the lowest
    criterion and the lowest order: the true law, its coefficient -0.05 within 5 % (the
    issue's bound; its 1σ measured 13 % without the velocities). The fit file keeps the
    choice."""
    from physnode.fit.symbolic import refit_symbolic
    from physnode.models.discovery import Discovery

    data = dataclasses.replace(_noisy_tidal_data(), velocities=None)
    hybrid = Fitter(model="hybrid", correction="field", learn=("masses", "y0"),
                    train_until=2.0, epochs=1, lbfgs_steps=0).fit(data)  # fmt: skip
    hybrid.params_ = {"masses": np.array([0.8140, 1.1729, 1.0148])}
    pair = Discovery(terms=["|q| q", "|q|^2 q"], coefficients=np.array([-0.064, 0.021]),
                     explained=0.94, library_explained=0.95, formula="(the pruned law)",
                     targets=[])  # fmt: skip
    refit = refit_symbolic(hybrid, data, pair)
    _check_choice(refit)
    assert abs(refit.coefficients[0] + TIDAL) < 0.05 * TIDAL, refit.formula
    assert len(refit.rivals) == 2 and all(") q" not in f for f in refit.rivals), refit.rivals
    # RIVAL: each law's criterion is within 2 of the lowest (its own included, at 0)
    lowest = min(0.0, *refit.rival_delta)
    assert all(d - lowest < 2.0 for d in refit.rival_delta) and -lowest < 2.0
    hybrid.discovered_, hybrid.refit_ = pair, refit
    path = write_fit(tmp_path / "fit.h5", hybrid, data_path=_write(tmp_path, data),
                     observed=data)  # fmt: skip
    stored = read_fit(path).discovered["refit"]
    assert stored["rivals"] == refit.rivals and stored["held_out_rmse"] == refit.held_out_rmse
    np.testing.assert_array_equal(stored["rival_held_out_rmse"], refit.rival_held_out_rmse)
