"""grad="forward" and sensitivities(): the variational equations integrated with the state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import torch
from torch import nn

from physnode import sensitivities, solve
from physnode.errors import InvalidInputError
from tests.solver.problems import FIGURE_EIGHT_PERIOD, FIGURE_EIGHT_Y0, Gravity


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _three_body_grads(grad: str, options: dict | None, batch: bool = False):
    model = Gravity([1.0, 1.05, 0.95])
    y0 = torch.tensor(FIGURE_EIGHT_Y0)
    if batch:
        y0 = torch.stack([y0, y0 * 1.01])
    y0.requires_grad_(True)
    t = torch.linspace(0, FIGURE_EIGHT_PERIOD, 25, dtype=torch.float64).requires_grad_(True)
    sol = solve(model, y0, t, rtol=1e-9, atol=1e-9, method="dopri5", grad=grad, options=options)
    (sol.ys[..., :6] ** 2).sum().backward()
    return [model.masses.grad, y0.grad, t.grad], sol.stats


@pytest.mark.parametrize("batch", [False, True])
def test_without_sensitivity_control_forward_equals_backprop(batch: bool) -> None:
    """The state alone chooses the steps, so forward mode differentiates the very steps that
    backprop does: equal to rounding. 1e-10 relative is the bound the issue set for ACA vs
    backprop; the two sum the same products in different orders (observed ~1e-13)."""
    fwd, fwd_stats = _three_body_grads("forward", {"sensitivity_control": False}, batch)
    ref, ref_stats = _three_body_grads("backprop", None, batch)
    assert fwd_stats.n_accepted == ref_stats.n_accepted
    for a, b in zip(fwd, ref, strict=True):
        assert _rel(a, b) < 1e-10


class Oscillator(nn.Module):
    """y'' = -ω² y as a first-order system (q, v)."""

    def __init__(self, omega: float) -> None:
        super().__init__()
        self.omega = nn.Parameter(torch.tensor(omega, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.stack([y[..., 1], -(self.omega**2) * y[..., 0]], dim=-1)


def test_jacobian_matches_the_closed_form() -> None:
    """q(t) = q0 cos ωt + (v0/ω) sin ωt, v = q'; its derivatives in q0, v0 and ω by hand.
    At rtol 1e-11 the solve is good to ~1e-10 over two periods; 1e-8 (absolute, entries O(1..10))
    leaves room for the sensitivities' own error."""
    omega, q0, v0 = 1.3, 0.4, -0.7
    t = np.linspace(0.0, 2 * 2 * math.pi / omega, 30)
    sens = sensitivities(
        Oscillator(omega), torch.tensor([q0, v0], dtype=torch.float64), torch.tensor(t),
        rtol=1e-11, atol=1e-12, method="dop853",
    )  # fmt: skip
    assert sens.jac.shape == (30, 3, 2)
    c, s = np.cos(omega * t), np.sin(omega * t)
    q = q0 * c + v0 / omega * s
    dq = np.stack([c, s / omega, -q0 * t * s - v0 / omega**2 * s + v0 / omega * t * c])
    dv = np.stack(
        [-omega * s, c, -q0 * s - q0 * omega * t * c - v0 * t * s]
    )  # d/dθ of v = -q0 ω s + v0 c
    np.testing.assert_allclose(sens.ys[:, 0].numpy(), q, atol=1e-9)
    np.testing.assert_allclose(sens.jac[:, :, 0].numpy(), dq.T, atol=1e-8)
    np.testing.assert_allclose(sens.jac[:, :, 1].numpy(), dv.T, atol=1e-8)


def test_jacobian_columns_for_parameters_only() -> None:
    model = Oscillator(1.0)
    sens = sensitivities(model, torch.tensor([1.0, 0.0], dtype=torch.float64),
                         torch.linspace(0, 1, 4, dtype=torch.float64), wrt_y0=False)  # fmt: skip
    assert sens.jac.shape == (4, 1, 2)
    assert float(sens.jac[0].abs().max()) == 0.0  # y(t0) = y0 does not depend on ω
    assert not sens.ys.requires_grad and sens.stats.nfe_forward > 0


class Kepler(nn.Module):
    def __init__(self, mu: float) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, v = y[..., :2], y[..., 2:]
        r3 = (q * q).sum(-1, keepdim=True).pow(1.5)
        return torch.cat([v, -self.mu * q / r3], dim=-1)


ECC = 0.9
KEPLER_Y0 = np.array([1 - ECC, 0.0, 0.0, math.sqrt((1 + ECC) / (1 - ECC))])  # a = 1, at pericentre
KEPLER_T = np.linspace(0.0, 5 * 2 * math.pi, 60)


def _kepler_loss_scipy(mu: float, y0: np.ndarray) -> float:
    def f(_t, y):
        return np.r_[y[2:], -mu * y[:2] / np.linalg.norm(y[:2]) ** 3]

    sol = scipy.integrate.solve_ivp(
        f, (0.0, KEPLER_T[-1]), y0, method="DOP853", t_eval=KEPLER_T, rtol=1e-13, atol=1e-13
    )
    return float((sol.y[:2] ** 2).sum())


def _kepler_fd(eps: float = 1e-7) -> np.ndarray:
    g = [
        (_kepler_loss_scipy(1 + eps, KEPLER_Y0) - _kepler_loss_scipy(1 - eps, KEPLER_Y0))
        / (2 * eps)
    ]
    for i in range(4):
        d = np.zeros(4)
        d[i] = eps
        g.append(
            (_kepler_loss_scipy(1.0, KEPLER_Y0 + d) - _kepler_loss_scipy(1.0, KEPLER_Y0 - d))
            / (2 * eps)
        )
    return np.array(g)


def _kepler_grad(grad: str) -> np.ndarray:
    model = Kepler(1.0)
    y0 = torch.tensor(KEPLER_Y0).requires_grad_(True)
    sol = solve(model, y0, torch.tensor(KEPLER_T), rtol=1e-8, atol=1e-8, method="dopri5", grad=grad)
    (sol.ys[:, :2] ** 2).sum().backward()
    return np.r_[model.mu.grad.item(), y0.grad.numpy()]


@pytest.mark.slow
def test_sensitivity_control_keeps_gradients_accurate_through_pericentres() -> None:
    """An e = 0.9 Kepler orbit, 5 periods, dopri5 at rtol 1e-8, against central differences of
    scipy DOP853 at 1e-13 (self-agreement eps 1e-7 vs 2e-7: 1e-6). Measured: forward with
    sensitivity control 6.1e-5 from the reference; ACA, which differentiates steps chosen for
    the state alone, 2.1e-3 (35x worse). Asserted: forward below 3e-4 (5x margin) and at
    least 10x better than ACA (the point of the control)."""
    ref = _kepler_fd()
    err_forward = np.abs(_kepler_grad("forward") - ref).max() / np.abs(ref).max()
    err_aca = np.abs(_kepler_grad("aca") - ref).max() / np.abs(ref).max()
    assert err_forward < 3e-4, err_forward
    assert err_aca > 10 * err_forward, (err_aca, err_forward)


@pytest.mark.parametrize(
    ("grad", "method", "options", "fragment"),
    [
        ("aca", "dopri5", {"sensitivity_control": False}, "grad='forward' only"),
        ("forward", "rk4", {"step_size": 0.1, "sensitivity_control": True}, "adaptive"),
    ],
)
def test_sensitivity_control_is_refused_where_it_would_not_act(grad, method, options, fragment):
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    with pytest.raises(InvalidInputError, match=fragment):
        solve(Oscillator(1.0), y0, torch.linspace(0, 1, 3, dtype=torch.float64), method=method,
              grad=grad, options=options)  # fmt: skip


def test_forward_with_fixed_steps_equals_backprop() -> None:
    """rk4 with a fixed step: the same steps by construction; equal to rounding (1e-12)."""
    grads = []
    for grad in ("forward", "backprop"):
        model = Oscillator(1.3)
        y0 = torch.tensor([0.4, -0.7], dtype=torch.float64, requires_grad=True)
        ys = solve(model, y0, torch.linspace(0, 3, 7, dtype=torch.float64), method="rk4",
                   grad=grad, options={"step_size": 0.05}).ys  # fmt: skip
        (ys**2).sum().backward()
        grads.append(torch.cat([model.omega.grad.reshape(1), y0.grad]))
    assert _rel(grads[0], grads[1]) < 1e-12


def test_a_models_closed_form_jacobians_are_read_and_agree_with_autograds_rows() -> None:
    """``NBody.jacobians`` is the model's optional hook: forward sensitivities read it (spied:
    called at every evaluation) instead of autograd's rows, and give the solve that autograd's
    rows give (the same model behind a plain function, which has no hook). Same accepted
    steps; the two sum the same products in different orders, which the figure-eight period
    amplifies to 2.3e-11 (measured): 1e-9 is 10x below rtol."""
    from physnode.systems import NBody

    system = NBody([0.8, 1.3, 1.0])
    system.set_learnable(["masses", "G"])
    raws = [system.params[name].raw for name in ("masses", "G")]
    y0 = torch.tensor(FIGURE_EIGHT_Y0)
    t = torch.linspace(0, FIGURE_EIGHT_PERIOD, 25, dtype=torch.float64)
    calls, closed = [], system.jacobians

    def spy(*args):
        calls.append(1)
        return closed(*args)

    system.jacobians = spy
    kw = {"rtol": 1e-10, "atol": 1e-10, "method": "dop853", "params": raws}
    hooked = sensitivities(system, y0, t, **kw)
    plain = sensitivities(lambda s, y: system(s, y), y0, t, **kw)
    assert len(calls) == hooked.stats.nfe_forward > 0
    assert hooked.stats.n_accepted == plain.stats.n_accepted
    assert _rel(hooked.jac, plain.jac) < 1e-9
    assert _rel(hooked.ys, plain.ys) < 1e-9


def test_a_hook_that_declines_leaves_autograds_rows() -> None:
    """A ``jacobians`` that returns ``None`` (it cannot cover these inputs) is asked once, and
    the solve equals the one without a hook bit for bit: same rows, same arithmetic."""

    class Declining(Oscillator):
        asked = 0

        def jacobians(self, t, y, params):
            Declining.asked += 1
            return None

    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    a = sensitivities(Declining(1.3), y0, t, rtol=1e-9, atol=1e-9)
    b = sensitivities(Oscillator(1.3), y0, t, rtol=1e-9, atol=1e-9)
    assert Declining.asked == 1
    assert torch.equal(a.jac, b.jac) and torch.equal(a.ys, b.ys)


def test_a_batched_state_takes_autograds_rows_where_the_hook_is_for_one_state() -> None:
    """The ``jacobians`` hook is for one state ``(n,)``: a batched ``y0`` (as multiple
    shooting's segment starts) must not reach it flattened (it crashed: a (2, 12) state as
    24 numbers), and gives what the same model behind a plain function gives (no hook),
    bit for bit: the same rows by the same autograd arithmetic."""
    from physnode.systems import NBody

    system = NBody([0.8, 1.3, 1.0])
    system.set_learnable("masses")
    raw = system.params["masses"].raw
    y0 = torch.tensor(FIGURE_EIGHT_Y0)
    y0 = torch.stack([y0, 1.01 * y0])
    t = torch.linspace(0, 1.0, 5, dtype=torch.float64)
    hooked = sensitivities(system, y0, t, params=[raw])
    plain = sensitivities(lambda s, y: system(s, y), y0, t, params=[raw])
    assert torch.equal(hooked.jac, plain.jac) and torch.equal(hooked.ys, plain.ys)
