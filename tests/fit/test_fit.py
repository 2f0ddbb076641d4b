"""Fitting claims: the ACA paper's experiment, mass recovery from clean and noisy 3-D data with
honest uncertainties, resumption, and bad input.

The data come from ``tests/reference.py``, an N-body simulator written independently of
:class:`physnode.systems.NBody` (plain NumPy forces, SciPy DOP853 at 1e-12): a wrong force law
in the fitted class cannot reproduce them. Every fit starts away from the true masses.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnode import InvalidInputError
from physnode.data import Trajectory, add_noise
from physnode.fit import Fitter
from tests.reference import bound_start, simulate, to_trajectory


@pytest.mark.slow
def test_aca_paper_three_body_experiment():
    """Zhuang et al. 2020 (three-body.md): 3-D, dr/dt = K2 v, dv/dt = K1 Σ m_j ..., masses
    (1.1, 1.1, 0.9), positions only, 1000 points on [0, 1], initial velocities given, dopri5 at
    1e-7. With v' = K2 v this is Newtonian gravity with G = K1·K2. Claim: masses within 1e-4
    relative (the paper's own result: 2.4e-5). Measured here on the reference simulator's data:
    2.5e-9 after the tight-tolerance least-squares finish."""
    k1, k2 = 0.2005, 7.239
    true = np.array([1.1, 1.1, 0.9])
    r0 = np.array([[0, 0.2, 0], [0.5, 0, 0.5], [0, 0, 0.5]])
    v0 = np.array([[0, 0.1, 0], [0, 0, 0.1], [0.1, 0, 0]]) * k2
    run = simulate(true, r0, v0, np.linspace(0.0, 2.0, 2000), G=k1 * k2)
    data = to_trajectory(run, velocities=False)
    y0 = torch.tensor(np.concatenate([r0.ravel(), v0.ravel()]))
    fitter = Fitter(train_until=1.0, init_masses=[1.0, 0.95, 1.05], epochs=30, lbfgs_steps=20)
    fitter.fit(data, y0=y0)
    rel = np.abs(fitter.params_["masses"] - true) / true
    assert rel.max() < 1e-4, rel


#: the reference start of the 3-D data: bound, no pair closer than 0.5 over t in [0, 3]
START = 9


def _three_d_data(noise: float):
    true = np.array([0.7, 1.6, 1.1])  # unlike the defaults (ones)
    q0, v0 = bound_start(true, 3, seed=START)
    data = to_trajectory(simulate(true, q0, v0, np.linspace(0.0, 3.0, 150)))
    if noise:
        data = add_noise(data, noise, seed=1)
    return true, data


def test_masses_from_clean_3d_data():
    """Clean 3-D data, masses (0.7, 1.6, 1.1), fit from ones: within 1e-4 relative (issue
    bound; the data are exact to ~1e-12 and the least-squares finish works at 1e-10;
    measured 4e-11). Train RMSE below 1e-4 (measured 1.6e-8: the fit's own solver tolerance,
    1e-7, limits the prediction, not the data)."""
    true, data = _three_d_data(0.0)
    fitter = Fitter(epochs=20, lbfgs_steps=15).fit(data)
    rel = np.abs(fitter.params_["masses"] - true) / true
    assert rel.max() < 1e-4, rel
    assert fitter.train_rmse_ < 1e-4


def test_masses_from_clean_data_in_other_units():
    """The same clean 3-D data in units where lengths are ×1000 and G ×1e9 (the dynamics are
    unchanged; the simulator runs in those units): masses within 1e-4 relative, as in unit
    units. Before the N-body force summed its terms from the separations, the least-squares
    finish crawled here (its sensitivity solve hit max_steps on rounding noise of 1e-7)."""
    true = np.array([0.7, 1.6, 1.1])
    q0, v0 = bound_start(true, 3, seed=START)
    run = simulate(true, q0 * 1e3, v0 * 1e3, np.linspace(0.0, 3.0, 150), G=1e9,
                   rtol=1e-12, atol=1e-9)  # fmt: skip
    fitter = Fitter(epochs=20, lbfgs_steps=15).fit(to_trajectory(run))
    rel = np.abs(fitter.params_["masses"] - true) / true
    assert rel.max() < 1e-4, rel


def test_masses_from_noisy_3d_data_with_honest_uncertainties():
    """1 % Gaussian noise on positions and velocities, initial state learned too: masses within
    2 % (issue bound) and every mass within 3σ of its reported uncertainty (3σ: a 99.7 %
    interval for one mass; the σ must neither be absurdly small nor absurdly large, so it is
    also required to be below the 2 % accuracy bound itself)."""
    true, data = _three_d_data(0.01)
    fitter = Fitter(learn=("masses", "y0"), epochs=20, lbfgs_steps=60).fit(data)
    m, sigma = fitter.params_["masses"], fitter.uncertainties_["masses"]
    assert (np.abs(m - true) / true).max() < 0.02, m
    assert np.all(np.abs(m - true) <= 3 * sigma), (m, sigma)
    assert np.all(sigma < 0.02 * true), sigma


def test_noisy_data_with_a_fixed_start_are_flagged():
    """A noisy first sample held fixed as the start: its noise is not in the covariance, so
    the σ are too small (measured 4-8x over 60 seeds); the fit says so. Learning y0 (the cure)
    or clean data raise no such warning."""
    _, noisy = _three_d_data(0.01)
    fixed = Fitter(learn=("masses",), epochs=10, lbfgs_steps=20).fit(noisy)
    assert any("learn y0" in w for w in fixed.warnings_), fixed.warnings_
    learned = Fitter(learn=("masses", "y0"), epochs=10, lbfgs_steps=20).fit(noisy)
    assert learned.warnings_ == []
    _, clean = _three_d_data(0.0)
    assert Fitter(learn=("masses",), epochs=10, lbfgs_steps=20).fit(clean).warnings_ == []


def test_an_unconverged_finish_is_flagged(monkeypatch: pytest.MonkeyPatch):
    """When Levenberg–Marquardt runs out of evaluations (here: allowed only one) the fit says
    its parameters and uncertainties are not final instead of reporting them silently."""
    import physnode.fit.least_squares as least_squares

    monkeypatch.setattr(least_squares, "MAX_EVALUATIONS", 1)
    _, data = _three_d_data(0.0)
    fitter = Fitter(epochs=2, lbfgs_steps=0).fit(data)
    assert any("did not converge" in w for w in fitter.warnings_), fitter.warnings_


def test_resume_reaches_the_uninterrupted_result():
    """Stop after 7 epochs, resume from the state: same parameters and loss history as one
    straight run (bit-identical: deterministic CPU arithmetic, the same operations in the same
    order; 1e-12 relative leaves room only for nothing else)."""
    _, data = _three_d_data(0.0)
    settings = {"epochs": 12, "lbfgs_steps": 4, "seed": 5}
    straight = Fitter(**settings).fit(data)
    calls = iter(range(100))
    first = Fitter(**settings).fit(data, should_stop=lambda: next(calls) >= 7)
    assert first.interrupted_
    resumed = Fitter(**settings).fit(data, resume=first.state_)
    assert not resumed.interrupted_
    np.testing.assert_allclose(resumed.params_["masses"], straight.params_["masses"], rtol=1e-12)
    np.testing.assert_allclose(resumed.history_["loss"], straight.history_["loss"], rtol=1e-12)


def test_fit_epoch_is_fast():
    """Informative, not a timing test: one ACA epoch on 400 observations of three bodies runs
    (the benchmark measures its time); here only that an epoch's loss is finite."""
    _, data = _three_d_data(0.0)
    fitter = Fitter(epochs=1, lbfgs_steps=0, schedule="full").fit(data)
    assert np.isfinite(fitter.history_["loss"]).all()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"learn": ("charge",)}, "cannot learn"),
        ({"train_until": 99.0}, "outside the data"),
        ({"model": "quantum"}, "choose one of"),
        ({"grad": "magic"}, "choose one of"),
        ({"epochs": -1}, "epochs"),
        ({"schedule": "random"}, "choose one of"),
    ],
)
def test_bad_settings(kwargs, fragment):
    _, data = _three_d_data(0.0)
    with pytest.raises(InvalidInputError, match=fragment):
        Fitter(**kwargs).fit(data)


def test_hybrid_and_neural_models_run():
    """The hybrid model starts as pure physics (zero last layer) and trains; the neural ODE
    baseline trains. Both produce finite predictions over the whole data span."""
    _, data = _three_d_data(0.0)
    for model in ("hybrid", "neural"):
        fitter = Fitter(model=model, epochs=4, lbfgs_steps=2).fit(data)
        assert np.isfinite(fitter.prediction_.positions).all()
        assert fitter.network_state_


def test_shooting_schedule_recovers_masses():
    """Multiple shooting reaches the same answer on clean data (1e-4 relative, issue bound)."""
    true, data = _three_d_data(0.0)
    fitter = Fitter(schedule="shooting", epochs=20, lbfgs_steps=15).fit(data)
    assert (np.abs(fitter.params_["masses"] - true) / true).max() < 1e-4


def test_observe_positions_never_reads_the_velocities():
    """``observe="positions"``: the file's velocities, even the starting ones, are not data. A
    fit of a file whose velocities are wrong equals, exactly, the fit of the same positions
    without velocities (same information, same deterministic CPU fit)."""
    _, data = _three_d_data(0.0)
    wrong = Trajectory(data.times, positions=data.positions, velocities=5.0 * data.velocities,
                       masses=data.masses, parameters=data.parameters)  # fmt: skip
    bare = Trajectory(data.times, positions=data.positions, masses=data.masses,
                      parameters=data.parameters)  # fmt: skip
    settings = dict(epochs=3, lbfgs_steps=0)
    a = Fitter(observe="positions", **settings).fit(wrong)
    b = Fitter(observe="positions", **settings).fit(bare)
    np.testing.assert_array_equal(a.params_["masses"], b.params_["masses"])
    np.testing.assert_array_equal(a.history_["loss"], b.history_["loss"])


def test_shooting_itself_lowers_its_loss_and_resumes_exactly():
    """The shooting phase must do the work itself (not L-BFGS or the final step): over its 12
    Adam epochs the multiple-shooting loss falls (measured: to 0.45 of its start; to 0.06
    after 40 epochs). 0.9 fails a no-op (1.0) and leaves room for rounding across machines
    and for slower progress on other data. A fit
    stopped inside the shooting phase resumes to the uninterrupted result, bit for bit: the
    segment starts and their optimiser are part of the resumable state."""
    _, data = _three_d_data(0.0)
    settings = {"schedule": "shooting", "epochs": 12, "lbfgs_steps": 0, "seed": 2}
    straight = Fitter(**settings).fit(data)
    shooting_losses = straight.history_["loss"][:12]
    assert shooting_losses[-1] < 0.9 * shooting_losses[0], shooting_losses
    calls = iter(range(100))
    first = Fitter(**settings).fit(data, should_stop=lambda: next(calls) >= 5)
    assert first.interrupted_ and "shooting/segment_starts" in first.state_
    resumed = Fitter(**settings).fit(data, resume=first.state_)
    np.testing.assert_array_equal(resumed.history_["loss"], straight.history_["loss"])
    np.testing.assert_array_equal(resumed.params_["masses"], straight.params_["masses"])


def test_shooting_refuses_a_model_that_reads_t():
    """Every segment is solved from t = 0: a forced (non-autonomous) system is refused."""
    from physnode.simulate import simulate

    data, _ = simulate("duffing", t_end=5.0, points=60)
    with pytest.raises(InvalidInputError, match="not autonomous"):
        Fitter(schedule="shooting", learn=("delta",), epochs=2, lbfgs_steps=0).fit(data)


def test_a_segment_that_cannot_be_integrated_fails_the_shooting_solve():
    """Multiple shooting solves its segments with per-sample steps: a segment the solver
    cannot integrate must raise (as a shared-step solve does), not turn into NaN that Adam
    would step the parameters into."""
    from types import SimpleNamespace

    import torch

    from physnode.errors import SolverError
    from physnode.fit.objective import Objective

    def blow_up(t, y):  # y' = y²: from y0 = 0.5 it blows up at t = 2
        return y * y

    objective = Objective(SimpleNamespace(model=blow_up), "dopri5", 1e-8, 1e-8, "aca", "cpu")
    y0 = torch.tensor([[-1.0], [0.5]], dtype=torch.float64, requires_grad=True)
    with pytest.raises(SolverError, match="member 1"):
        objective.integrate(y0, torch.linspace(0.0, 4.0, 5, dtype=torch.float64))
