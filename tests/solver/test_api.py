"""The public call shape: batches, modules, devices, statistics, ys[0] == y0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from physnode import odeint, solve
from physnode.solver import ADAPTIVE_METHODS, FIXED_STEP_METHODS
from tests.solver.problems import FIGURE_EIGHT_PERIOD, FIGURE_EIGHT_Y0, Gravity, linear_exact

A = torch.tensor([[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.5], [0.0, -0.5, -0.3]], dtype=torch.float64)


def lin(t, y):
    return y @ A.T


def test_shape_and_first_output():
    y0 = torch.randn(4, 5, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    ys = odeint(lin, y0, t)
    assert ys.shape == (7, 4, 5, 3)
    assert torch.equal(ys[0], y0)


def test_batch_equals_individual_solves():
    """A batch is solved as one system (shared steps); each member matches the exact flow."""
    y0 = torch.tensor([[1.0, 0.5, -0.25], [0.1, -2.0, 0.3]], dtype=torch.float64)
    t = torch.linspace(0, 3, 10, dtype=torch.float64)
    ys = odeint(lin, y0, t, rtol=1e-10, atol=1e-12)
    for b in range(2):
        exact = linear_exact(t.numpy(), y0[b].numpy())
        assert np.abs(ys[:, b].numpy() - exact).max() < 1e-8  # 100x rtol over 3 time units


@pytest.mark.parametrize("method", ADAPTIVE_METHODS + FIXED_STEP_METHODS)
def test_every_method_runs_float32(method):
    y0 = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float32)
    opts = {"step_size": 0.01} if method in FIXED_STEP_METHODS else None
    ys = odeint(lambda t, y: y @ A.T.float(), y0, [0.0, 0.5, 1.0], rtol=1e-5, atol=1e-6,
                method=method, options=opts)  # fmt: skip
    assert ys.dtype == torch.float32
    exact = linear_exact(np.array([0.0, 0.5, 1.0]), y0.double().numpy())
    tol = {"euler": 3e-2, "midpoint": 1e-3}.get(method, 1e-4)  # order-limited for euler/midpoint
    assert np.abs(ys.double().numpy() - exact).max() < tol


def test_module_parameters_found_and_bound_method():
    model = Gravity([1.0, 1.0, 1.0])
    y0 = torch.tensor(FIGURE_EIGHT_Y0)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    odeint(model.forward, y0, t)[-1].sum().backward()  # a bound method of a module works too
    assert model.masses.grad is not None


def test_params_for_plain_callable():
    k = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    ys = odeint(lambda t, y: -k * y, torch.tensor([1.0], dtype=torch.float64), [0.0, 2.0],
                rtol=1e-10, atol=1e-12, params=[k])  # fmt: skip
    ys[-1].sum().backward()
    # d/dk exp(-2k) = -2 exp(-2k); 1e-8: solver accuracy at rtol=1e-10
    assert abs(k.grad.item() + 2 * np.exp(-1.4)) < 1e-8


def test_stats_reported():
    sol = solve(lin, torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64), [0.0, 5.0],
                rtol=1e-8)  # fmt: skip
    s = sol.stats
    assert s.n_accepted > 0 and s.nfe_forward >= 6 * s.n_accepted
    assert set(s.as_dict()) >= {"nfe_forward", "nfe_backward", "n_accepted", "n_rejected",
                                "n_checkpoints"}  # fmt: skip


def test_figure_eight_returns_after_one_period():
    """Integration quality on the flagship orbit: back to the start after one period within
    1e-6 (three-body.md: 8-digit initial conditions close to 1.6e-9; dop853 at 1e-12)."""
    model = Gravity([1.0, 1.0, 1.0])
    y0 = torch.tensor(FIGURE_EIGHT_Y0)
    with torch.no_grad():
        ys = odeint(model, y0, [0.0, FIGURE_EIGHT_PERIOD], rtol=1e-12, atol=1e-12,
                    method="dop853")  # fmt: skip
    assert (ys[-1, :6] - y0[:6]).abs().max() < 1e-6


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y))


@pytest.mark.gpu
@pytest.mark.parametrize("grad", ["aca", "adjoint", "backprop", "naive", "forward"])
def test_cuda_matches_cpu(grad):
    """The same solve on CUDA gives the CPU's result and gradients (1e-9 relative: different
    reduction order in kernels, amplified a little over the solve)."""
    torch.manual_seed(0)
    model = Tiny()
    y0 = torch.randn(64, 3, dtype=torch.float64)
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    results = []
    for device in ("cpu", "cuda"):
        m = Tiny().to(device)
        m.load_state_dict(model.state_dict())
        ys = odeint(m, y0.to(device), t.to(device), rtol=1e-9, atol=1e-10, grad=grad)
        (ys**2).sum().backward()
        results.append((ys.cpu(), m.lin.weight.grad.cpu()))
    (ys_c, g_c), (ys_g, g_g) = results
    assert (ys_c - ys_g).abs().max() / ys_c.abs().max() < 1e-9
    assert (g_c - g_g).abs().max() / g_c.abs().max() < 1e-9


@pytest.mark.gpu
def test_cuda_float32_three_body_batch():
    model = Gravity([1.0, 1.0, 1.0]).float().cuda()
    y0 = torch.tensor(FIGURE_EIGHT_Y0, dtype=torch.float32).repeat(128, 1).cuda()
    ys = odeint(model, y0, torch.linspace(0, 1, 5), rtol=1e-6, atol=1e-6)
    assert ys.is_cuda and ys.shape == (5, 128, 12) and torch.isfinite(ys).all()


def test_pi_controller_and_max_step():
    """The PI controller reaches the same accuracy as the I controller (100x rtol over 10 time
    units), and max_step bounds every accepted step (at least t_span / max_step of them)."""
    y0 = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    t = torch.linspace(0, 10, 11, dtype=torch.float64)
    exact = linear_exact(t.numpy(), y0.numpy())
    for controller in ("i", "pi"):
        sol = solve(lin, y0, t, rtol=1e-8, atol=1e-10, options={"controller": controller})
        assert np.abs(sol.ys.numpy() - exact).max() < 1e-6
    sol = solve(lin, y0, t, options={"max_step": 0.05})
    assert sol.stats.n_accepted >= 200
