"""Order of accuracy of every method against the exact flow of a linear system (expm)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnode import odeint
from physnode.solver.stepper import RHS, dense_output, extra_stages, stages
from physnode.solver.tableaus import RK_METHODS
from tests.solver.problems import A_LINEAR, Y0_LINEAR, linear_exact, linear_rhs


def _fixed_step_errors(name: str, n_steps_list: list[int], t_end: float = 2.0):
    """Global error at t_end and max error of the dense output at step midpoints."""
    tab = RK_METHODS[name]
    rhs = RHS(linear_rhs(), torch.zeros(3, dtype=torch.float64))
    end_err, dense_err = [], []
    for n in n_steps_list:
        h = t_end / n
        y = torch.tensor(Y0_LINEAR)
        worst = 0.0
        for i in range(n):
            t = i * h
            y1, ks = stages(rhs, tab, t, h, y, rhs(t, y))
            if tab.dense is not None:
                ks_d = extra_stages(rhs, tab, t, h, y, ks) if tab.extra_c else ks
                for theta in (0.3, 0.5, 0.85):
                    exact = linear_exact(np.array([t + theta * h]))[0]
                    got = dense_output(tab, y, h, ks_d, theta).numpy()
                    worst = max(worst, np.abs(got - exact).max())
            y = y1
        end_err.append(np.abs(y.numpy() - linear_exact(np.array([t_end]))[0]).max())
        dense_err.append(worst)
    return np.array(end_err), np.array(dense_err)


def _slope(n_steps_list, errors) -> float:
    h = 1.0 / np.array(n_steps_list, dtype=float)
    return float(np.polyfit(np.log(h), np.log(errors), 1)[0])


# step counts chosen per method so that errors stay well above float64 rounding (~1e-14) and
# well inside the asymptotic regime
STEPS = {
    "euler": [200, 400, 800, 1600],
    "midpoint": [100, 200, 400, 800],
    "rk4": [20, 40, 80, 160],
    "bosh3": [40, 80, 160, 320],
    "dopri5": [10, 20, 40, 80],
    "tsit5": [20, 40, 80, 160],  # tsit5 has a small leading error term: asymptotic later
    "dop853": [6, 8, 10, 12],
}
# dense-output order of each adaptive method (global error of interpolated values)
DENSE_ORDER = {"bosh3": 3, "dopri5": 4, "tsit5": 4, "dop853": 7}


@pytest.mark.parametrize("name", sorted(RK_METHODS))
def test_order_of_each_method(name):
    """The log-log slope of the global error equals the method's order (±0.3, the issue's
    bound: leaves room for pre-asymptotic curvature, still separates neighbouring orders)."""
    steps = STEPS[name]
    end_err, dense_err = _fixed_step_errors(name, steps)
    assert abs(_slope(steps, end_err) - RK_METHODS[name].order) <= 0.3, end_err
    if name in DENSE_ORDER:
        # interpolated values converge at least at the dense output's order
        assert _slope(steps, dense_err) >= DENSE_ORDER[name] - 0.3, dense_err


@pytest.mark.parametrize("name", ["euler", "midpoint", "rk4"])
def test_fixed_step_order_through_public_api(name):
    """odeint with options['step_size'] reaches the method's order at every output time."""
    order = RK_METHODS[name].order
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    exact = linear_exact(t.numpy())
    steps = STEPS[name]
    errs = []
    for n in steps:
        ys = odeint(linear_rhs(), torch.tensor(Y0_LINEAR), t, method=name,
                    options={"step_size": 2.0 / n})  # fmt: skip
        errs.append(np.abs(ys.numpy() - exact).max())
    assert abs(_slope(steps, errs) - order) <= 0.3, errs


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5", "dop853"])
def test_adaptive_error_is_proportional_to_tolerance(name):
    """Tolerance proportionality: the global error of outputs *between* steps (dense output)
    falls with rtol. Over 4 decades of rtol the error must fall by at least 2.5 decades and stay
    within 100x of rtol (global error accumulates over ~10 time units)."""
    t = torch.linspace(0, 10, 37, dtype=torch.float64)
    exact = linear_exact(t.numpy())
    errs = []
    for rtol in (1e-5, 1e-7, 1e-9):
        ys = odeint(linear_rhs(), torch.tensor(Y0_LINEAR), t, rtol=rtol, atol=rtol * 1e-2,
                    method=name)  # fmt: skip
        err = np.abs(ys.numpy() - exact).max()
        assert err < 100 * rtol, (rtol, err)
        errs.append(err)
    assert np.log10(errs[0] / errs[-1]) >= 2.5, errs


def test_dense_output_matches_step_end():
    """B(1) equals b (the interpolant is continuous at step ends), to rounding of the
    published coefficients (tsit5's are given to ~16 digits; 1e-13 leaves margin)."""
    for name, tab in RK_METHODS.items():
        if tab.dense is None:
            continue
        w = np.asarray(tab.dense_weights(1.0))
        b = np.zeros_like(w)
        b[: tab.n_stages] = tab.b
        assert np.abs(w - b).max() < 1e-13, name


def test_decreasing_time_matches_exact():
    """Integrating backwards in time works and is as accurate as forwards."""
    t = torch.linspace(2.0, -1.0, 7, dtype=torch.float64)
    y_start = linear_exact(np.array([2.0]))[0]
    ys = odeint(linear_rhs(), torch.tensor(y_start), t, rtol=1e-10, atol=1e-12)
    exact = linear_exact(t.numpy())
    # 1e-8: 100x the tolerance, for ~3 time units of accumulated global error
    assert np.abs(ys.numpy() - exact).max() < 1e-8


def test_float32_state_float64_times():
    """A float32 state keeps float64 times: t near 1e4 with tiny output spacing still resolves."""
    a = torch.tensor(A_LINEAR, dtype=torch.float32)
    t = torch.tensor([1e4, 1e4 + 1e-3, 1e4 + 2e-3], dtype=torch.float64)
    ys = odeint(lambda t, y: y @ a.T, torch.tensor(Y0_LINEAR, dtype=torch.float32), t,
                rtol=1e-6, atol=1e-7)  # fmt: skip
    assert ys.dtype == torch.float32
    exact = np.stack([linear_exact(np.array([dt]))[0] for dt in (0.0, 1e-3, 2e-3)])
    # float32 resolution of O(1) values is ~1e-7; 1e-5 allows rounding of a few steps
    assert np.abs(ys.double().numpy() - exact).max() < 1e-5
