"""``options={"compile": True}`` and ``integrate_symplectic(compile=True)``: the compiled steps
take the eager path's steps and agree with it and with scipy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.integrate
import torch

from physnode.errors import CompileFallbackWarning, InvalidInputError
from physnode.solver import fused, solve
from physnode.solver.symplectic import integrate_symplectic
from physnode.systems import three_body
from tests.solver.problems import gravity_numpy


def _figure_eight(periods: float):
    system, y0, period = three_body("figure-eight")
    t = torch.linspace(0, periods * period, int(20 * periods) + 1, dtype=torch.float64)
    return system, y0, t


def test_compiled_dop853_takes_the_eager_steps_and_agrees_with_scipy():
    system, y0, t = _figure_eight(1.0)
    with torch.no_grad():
        eager = solve(system, y0, t, rtol=1e-12, atol=1e-12, method="dop853")
        comp = solve(system, y0, t, rtol=1e-12, atol=1e-12, method="dop853",
                     options={"compile": True})  # fmt: skip
    assert comp.stats.n_accepted == eager.stats.n_accepted
    assert comp.stats.n_rejected == eager.stats.n_rejected
    assert comp.stats.nfe_forward == eager.stats.nfe_forward
    # the kernel sums the stages in another order: ~1e-16 per operation, grown over ~120
    # steps of a figure eight to ~1e-13 (measured 1.4e-13 over 2 periods)
    torch.testing.assert_close(comp.ys, eager.ys, rtol=0, atol=1e-11)
    masses = system.masses.detach().numpy()
    ref = scipy.integrate.solve_ivp(
        lambda _t, y: gravity_numpy(y, masses), (0.0, float(t[-1])), y0.numpy(),
        method="DOP853", t_eval=t.numpy(), rtol=1e-12, atol=1e-12,
    )  # fmt: skip
    # two DOP853 codes at 1e-12 over one period: the global errors are ~1e-11 (measured
    # 7e-13 between them over 10 periods), so 1e-9 leaves room without hiding a wrong method
    np.testing.assert_allclose(comp.ys.numpy(), ref.y.T, rtol=0, atol=1e-9)


def test_compile_refused_with_gradients_and_per_sample_steps():
    system, y0, t = _figure_eight(0.1)
    y0 = y0.clone().requires_grad_(True)
    with pytest.raises(InvalidInputError, match="without gradients"):
        solve(system, y0, t, method="dop853", options={"compile": True})
    with pytest.raises(InvalidInputError, match="shared steps"):
        solve(system, y0.detach()[None], t, options={"compile": True, "steps": "per-sample"})
    with pytest.raises(InvalidInputError, match="adaptive methods"):
        solve(system, y0.detach(), t, method="rk4", options={"compile": True, "step_size": 0.1})
    with pytest.raises(InvalidInputError, match="without gradients"):
        integrate_symplectic(system, y0, t, 0.01, "yoshida4", compile=True)


def test_compile_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(fn, example):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused, "compile_graph", broken)
    monkeypatch.setattr(fused, "_KERNELS", fused.weakref.WeakKeyDictionary())
    system, y0, t = _figure_eight(0.2)
    with torch.no_grad():
        eager = solve(system, y0, t, rtol=1e-10, atol=1e-10, method="dop853")
        with pytest.warns(CompileFallbackWarning, match="no compiler here") as record:
            comp = solve(system, y0, t, rtol=1e-10, atol=1e-10, method="dop853",
                         options={"compile": True})  # fmt: skip
            solve(system, y0, t, rtol=1e-10, atol=1e-10, method="dop853",
                  options={"compile": True})  # fmt: skip
    assert len(record) == 1  # the failed build is remembered: the second solve says nothing
    assert torch.equal(comp.ys, eager.ys)  # the fallback is the eager path itself


def test_compiled_yoshida4_equals_eager_steps():
    system, y0, t = _figure_eight(0.5)
    dt = float(t[-1]) / 1000  # 1000 steps: chunks of 16, remainders and shortened last steps
    with torch.no_grad():
        eager = integrate_symplectic(system, y0, t, dt, "yoshida4")
        comp = integrate_symplectic(system, y0, t, dt, "yoshida4", compile=True)
    # the same kicks and drifts; only rounding differs (fused multiply-adds), ~1e-16 per
    # operation grown over 1000 steps (measured 2.5e-13 over 4000 steps)
    torch.testing.assert_close(comp, eager, rtol=0, atol=1e-11)


def test_a_compiled_step_sees_learnable_masses_changed_between_solves():
    """Learnable masses, solved without gradients: the compiled step takes the module's
    parameters as inputs, and the force's per-solve coupling cache must not keep the traced
    tensors; a change through ``.data`` (no version bump) shows in the next compiled solve.
    Reference: eager solves of a fresh system with those masses; same tolerance as above
    (the kernel sums in another order: measured ~1e-13)."""
    system, y0, t = _figure_eight(0.3)
    system.set_learnable("masses")
    kw = {"rtol": 1e-10, "atol": 1e-10, "method": "dop853"}
    for shift in (0.0, 0.2):
        system.params["masses"].raw.data.add_(shift)
        fresh = type(system)(system.masses.detach().clone())
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("error", CompileFallbackWarning)  # compiled, not eager
            comp = solve(system, y0, t, **kw, options={"compile": True}).ys
            eager = solve(fresh, y0, t, **kw).ys
        torch.testing.assert_close(comp, eager, rtol=0, atol=1e-11)
