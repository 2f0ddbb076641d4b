"""Ensembles of seeds: the members are independent fits, the spread is their standard
deviation, the reported member is the best on the validation window, the band is drawn, and
an interrupted ensemble resumes exactly.

Data: the drag data of tests/fit/test_hybrid.py (SciPy DOP853 with its own right-hand side,
independent of physnode's NBody); fits start from unit masses. The fits are tiny (a few
Adam steps): the bookkeeping is under test, not the accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest

from physnode.data import write_trajectory
from physnode.data.fitfile import read_fit, write_fit
from physnode.errors import InvalidInputError
from physnode.fit import Fitter
from tests.fit.test_hybrid import _drag_data

SETTINGS = dict(model="hybrid", correction="field", train_until=1.0, epochs=2, lbfgs_steps=1,
                schedule="full")  # fmt: skip


def _state(fitter: Fitter) -> np.ndarray:
    p = fitter.prediction_
    t = p.n_times
    return np.concatenate([p.positions.reshape(t, -1), p.velocities.reshape(t, -1)], axis=1)


@pytest.mark.slow  # 16 s: four whole fits (CI runs the slow tests)
def test_the_spread_is_the_std_of_independent_fits_of_each_seed():
    """An ensemble of 2 from seed 4 against Fitter(seed=4) and Fitter(seed=5) fitted on their
    own: the spread is the sample standard deviation of their predictions at every data time
    (to 1e-12 relative: the same deterministic fits, the std of two numbers), zero at the
    shared start, non-zero later (different seeds make different networks); the reported
    member is the one with the lower validation RMSE; the masses' σ is its own and the
    members' std in quadrature."""
    data = _drag_data()
    ens = Fitter(**SETTINGS, seed=4, ensemble=2).fit(data)
    assert ens.validation_ == 0.2 and ens.validation_rmse_ is not None  # the default window
    # alone, with the ensemble's window (a single fit's default holds out nothing)
    a, b = (Fitter(**SETTINGS, seed=s, validation=0.2).fit(data) for s in (4, 5))
    spread = ens.ensemble_.spread
    assert spread.shape == (len(data.times), 12)  # positions then velocities, 3 bodies in 2-D
    expected = np.std(np.stack([_state(a), _state(b)]), axis=0, ddof=1)
    np.testing.assert_allclose(spread, expected, rtol=1e-12, atol=1e-15)
    assert np.all(spread[0] == 0) and np.all(spread[-1] > 0)
    best = a if a.validation_rmse_ <= b.validation_rmse_ else b
    assert ens.ensemble_.seeds[ens.ensemble_.best] == best.seed
    np.testing.assert_array_equal(ens.params_["masses"], best.params_["masses"])
    members = np.stack([a.params_["masses"], b.params_["masses"]])
    sigma = np.sqrt(best.uncertainties_["masses"] ** 2 + np.std(members, axis=0, ddof=1) ** 2)
    np.testing.assert_allclose(ens.uncertainties_["masses"], sigma, rtol=1e-12)


def test_the_band_is_stored_and_drawn(tmp_path):
    """The fit file holds the spread (T, D) and the members; the fit plot draws it as a
    filled band (a PolyCollection) on the prediction-error panel."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import PolyCollection

    from physnode.plot import plot_fit

    data = _drag_data()
    fitter = Fitter(**SETTINGS, ensemble=2).fit(data)
    write_trajectory(tmp_path / "data.h5", data)
    write_fit(tmp_path / "fit.h5", fitter, data_path=tmp_path / "data.h5", observed=data)
    record = read_fit(tmp_path / "fit.h5")
    np.testing.assert_array_equal(record.ensemble["spread"], fitter.ensemble_.spread)
    assert record.ensemble["params"]["masses"].shape == (2, 3)
    fig = plot_fit(record)
    err_panel = fig.axes[3]
    assert any(isinstance(c, PolyCollection) for c in err_panel.collections)


@pytest.mark.slow  # 20 s: an ensemble fitted twice (CI runs the slow tests)
def test_an_interrupted_ensemble_resumes_exactly():
    """Stopped inside the second member and resumed (the first member's state is complete,
    the second's where it stopped), the ensemble reaches the straight run's spread and masses
    bit for bit (deterministic CPU arithmetic in the same order)."""
    data = _drag_data()
    straight = Fitter(**SETTINGS, ensemble=2).fit(data)
    calls = iter(range(1000))
    first = Fitter(**SETTINGS, ensemble=2).fit(data, should_stop=lambda: next(calls) >= 5)
    assert first.interrupted_ and "member/1/epoch" in first.state_
    resumed = Fitter(**SETTINGS, ensemble=2).fit(data, resume=first.state_)
    np.testing.assert_array_equal(resumed.ensemble_.spread, straight.ensemble_.spread)
    np.testing.assert_array_equal(resumed.params_["masses"], straight.params_["masses"])
    with pytest.raises(InvalidInputError, match="is several members'"):
        Fitter(**SETTINGS).fit(data, resume=first.state_)


def test_an_ensemble_of_physics_fits_is_refused():
    with pytest.raises(InvalidInputError, match="ensemble is for models with a network"):
        Fitter(model="physics", ensemble=3).fit(None)
    with pytest.raises(InvalidInputError, match="ensemble must be an integer >= 1"):
        Fitter(model="hybrid", ensemble=0).fit(None)
