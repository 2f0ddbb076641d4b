"""Leapfrog and Yoshida-4: convergence order, bounded energy error, output times, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from physnode.errors import DtypeMismatchError, InvalidInputError, InvalidTimeGridError
from physnode.solver.symplectic import integrate_symplectic
from physnode.systems import (
    DoublePendulum,
    Duffing,
    Kepler,
    Lorenz,
    NBody,
    Pendulum,
    SpringChain,
    three_body,
)


def grid(*times: float) -> torch.Tensor:
    return torch.tensor(times, dtype=torch.float64)


@pytest.mark.parametrize(("method", "order"), [("leapfrog", 2), ("yoshida4", 4)])
def test_convergence_order_on_kepler(method: str, order: int) -> None:
    kepler = Kepler(eccentricity=0.6)
    y0, period = kepler.default_y0(), float(kepler.period)
    steps = np.array([250, 500, 1000, 2000])
    errors = [
        float(
            (integrate_symplectic(kepler, y0, grid(0, period), period / n, method)[-1] - y0)
            .abs()
            .max()
        )
        for n in steps
    ]
    slope = np.polyfit(np.log(period / steps), np.log(errors), 1)[0]
    # Observed slopes 1.997 and 3.993 (the orbit is periodic, so the error after one period is
    # the global error); ±0.3 is the brief's band for the asymptotic regime.
    assert abs(slope - order) < 0.3, (errors, slope)


def test_yoshida_matches_harmonic_oscillator() -> None:
    chain = SpringChain(1, m=2.0, k=3.0)  # one mass between two walls: ω² = 2k / m = 3
    y0 = torch.tensor([0.7, 0.0], dtype=torch.float64)
    t = torch.linspace(0.0, 10.0, 11, dtype=torch.float64)
    ys = integrate_symplectic(chain, y0, t, 1e-2, "yoshida4")
    w = math.sqrt(3.0)
    exact = torch.stack([0.7 * torch.cos(w * t), -0.7 * w * torch.sin(w * t)], dim=-1)
    # Yoshida-4 keeps the amplitude but shifts the frequency by ~0.1 (ω h)⁴ ω: a phase error
    # growing linearly to 1.1e-7 at t = 10 (ω h = 0.017). 3e-7 leaves a 3x margin; an order-2
    # method at this step is off by 2.4e-4.
    torch.testing.assert_close(ys, exact, rtol=0, atol=3e-7)


def kdk_numpy(omega2: float, y: np.ndarray, h: float) -> np.ndarray:
    """One kick-drift-kick step of x'' = -omega2 x, written out by hand."""
    x, v = y
    v = v - 0.5 * h * omega2 * x
    x = x + h * v
    v = v - 0.5 * h * omega2 * x
    return np.array([x, v])


def test_outputs_land_exactly_on_requested_times() -> None:
    chain = SpringChain(1, m=1.0, k=0.5)  # ω² = 1
    y0 = torch.tensor([1.0, 0.3], dtype=torch.float64)
    t = grid(0.0, 0.25, 0.75, 0.8)
    ys = integrate_symplectic(chain, y0, t, 0.1, "leapfrog")
    # Reference schedule: [0, 0.25] = 0.1, 0.1, 0.05; [0.25, 0.75] = 5 x 0.1;
    # [0.75, 0.8] = one step of 0.05 (shorter than step_size).
    y, expected = y0.numpy(), [y0.numpy()]
    for steps in ([0.1, 0.1, 0.05], [0.1] * 5, [0.05]):
        for h in steps:
            y = kdk_numpy(1.0, y, h)
        expected.append(y)
    # Same operations up to float64 rounding of the step lengths (e.g. 0.25 - 0.2).
    np.testing.assert_allclose(ys.numpy(), np.array(expected), rtol=0, atol=1e-14)


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_time_reversibility(method: str) -> None:
    system, y0, _ = three_body("figure-eight")
    forward = integrate_symplectic(system, y0, grid(0.0, 1.0), 0.01, method)[-1]
    back = integrate_symplectic(system, forward, grid(1.0, 0.0), 0.01, method)[-1]
    # Symmetric methods retrace their steps up to rounding: observed 1e-15 after 2 x 100 steps.
    torch.testing.assert_close(back, y0, rtol=0, atol=1e-12)


def test_batch_equals_single_runs_and_float32() -> None:
    system = NBody([1.0, 2.0, 0.5])
    y0 = (
        system.default_y0().expand(4, -1)
        * torch.linspace(0.9, 1.1, 4, dtype=torch.float64)[:, None]
    )
    t = grid(0.0, 0.5, 1.0)
    ys = integrate_symplectic(system, y0, t, 0.05, "yoshida4")
    assert ys.shape == (3, 4, 12)
    for b in range(4):
        single = integrate_symplectic(system, y0[b], t, 0.05, "yoshida4")
        # Batched reductions may sum in another order: ulp-level differences only.
        torch.testing.assert_close(ys[:, b], single, rtol=1e-13, atol=1e-13)
    ys32 = integrate_symplectic(system, y0.float(), t, 0.05, "yoshida4")
    assert ys32.dtype == torch.float32
    # float32 rounding (6e-8) accumulated over 20 steps on O(1) states.
    torch.testing.assert_close(ys32.double(), ys, rtol=1e-5, atol=1e-5)


def test_time_dependent_forcing_matches_dop853(dop853) -> None:
    duffing = Duffing(alpha=1.0, beta=0.5, delta=0.0, gamma=0.8, omega=1.3)
    y0 = torch.tensor([0.5, 0.0], dtype=torch.float64)
    t = np.linspace(0.0, 5.0, 6)
    reference = torch.from_numpy(dop853(duffing, y0, t))
    ys = integrate_symplectic(duffing, y0, torch.from_numpy(t), 5e-3, "yoshida4")
    # Yoshida-4 with h = 5e-3 on an O(1) oscillator: observed 1.5e-9, so 1e-8 is a 7x margin;
    # forcing evaluated one step late (t - h) would be off by 1e-2.
    torch.testing.assert_close(ys, reference, rtol=0, atol=1e-8)


def test_gradients_flow_through_the_steps() -> None:
    system = NBody([1.0, 1.0, 1.0]).set_learnable(["masses"])
    _, y0, _ = three_body("figure-eight")
    y0 = y0.clone().requires_grad_(True)
    ys = integrate_symplectic(system, y0, grid(0.0, 0.5), 0.05, "yoshida4")
    ys[-1].square().sum().backward()
    assert y0.grad is not None and bool(torch.isfinite(y0.grad).all())
    (raw,) = system.parameters()
    assert raw.grad is not None and bool((raw.grad != 0).any())


def energy_errors(periods: int, per_period: int = 20) -> tuple[torch.Tensor, float]:
    system, y0, period = three_body("figure-eight")
    t = torch.linspace(0.0, periods * period, periods * per_period + 1, dtype=torch.float64)
    ys = integrate_symplectic(system, y0, t, period / 2000, "yoshida4")
    e0 = system.energy(y0)
    return ((system.energy(ys) - e0) / e0).abs(), period


def check_bounded_energy(periods: int, window: int) -> None:
    errors, _ = energy_errors(periods)
    per = 20
    first = float(errors[1 : window * per + 1].max())
    last = float(errors[-window * per :].max())
    # Max |ΔE/E| within a period (sampled 20 times per period) is 7e-11, from the h⁴ term of
    # the modified energy; an independent numpy Yoshida gives the same 7.0e-11 (and 4.4e-12 at
    # T/4000). The doc's ≈5e-14 holds at whole periods only (next assertion). 2e-10 = 3x margin.
    assert float(errors.max()) < 2e-10
    # No drift: a linear drift would make the last window much worse than the first; the
    # max over a window of the oscillating error varies by a few percent, so 1.5x suffices.
    assert last < 1.5 * first, (first, last)
    whole = errors[::per]
    # At whole periods the oscillation returns to its start: observed <= 2e-14 over 10
    # periods; round-off random walk over 2e4 steps per 10 periods ~ 1e-14 * sqrt(n / 10).
    assert float(whole.max()) < 1e-13 * math.sqrt(periods / 10)


def test_yoshida_figure_eight_energy_bounded_10_periods() -> None:
    check_bounded_energy(periods=10, window=3)


@pytest.mark.slow
def test_yoshida_figure_eight_energy_bounded_100_periods() -> None:
    check_bounded_energy(periods=100, window=10)


def test_bad_inputs() -> None:
    kepler = Kepler()
    y0 = kepler.default_y0()
    with pytest.raises(InvalidTimeGridError, match="strictly increasing or strictly decreasing"):
        integrate_symplectic(kepler, y0, grid(0.0, 1.0, 0.5), 0.1)
    with pytest.raises(InvalidTimeGridError, match="at least 2 times"):
        integrate_symplectic(kepler, y0, grid(0.0), 0.1)
    with pytest.raises(InvalidTimeGridError, match="finite"):
        integrate_symplectic(kepler, y0, grid(0.0, math.nan), 0.1)
    for bad in (0.0, -0.1, math.inf):
        with pytest.raises(InvalidInputError, match="step_size must be a positive"):
            integrate_symplectic(kepler, y0, grid(0.0, 1.0), bad)
    with pytest.raises(InvalidInputError, match=r"valid methods are \['leapfrog', 'yoshida4'\]"):
        integrate_symplectic(kepler, y0, grid(0.0, 1.0), 0.1, method="rk4")
    with pytest.raises(InvalidInputError, match=r"not a second-order system.*odeint"):
        integrate_symplectic(Lorenz(), Lorenz().default_y0(), grid(0.0, 1.0), 0.1)
    with pytest.raises(InvalidInputError, match="separable=False"):
        integrate_symplectic(DoublePendulum(), DoublePendulum().default_y0(), grid(0, 1), 0.1)
    with pytest.raises(InvalidInputError, match="separable=False"):
        integrate_symplectic(Duffing(), Duffing().default_y0(), grid(0.0, 1.0), 0.1)
    with pytest.raises(DtypeMismatchError, match="float32 or float64"):
        integrate_symplectic(kepler, torch.ones(4, dtype=torch.int64), grid(0.0, 1.0), 0.1)
    with pytest.raises(InvalidInputError, match=r"D = 2"):
        integrate_symplectic(Pendulum(), y0, grid(0.0, 1.0), 0.1)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    system, y0, _ = three_body("figure-eight")
    t = grid(0.0, 1.0, 2.0)
    cpu = integrate_symplectic(system, y0, t, 0.01, "yoshida4")
    gpu = integrate_symplectic(system.cuda(), y0.cuda(), t.cuda(), 0.01, "yoshida4")
    assert gpu.device.type == "cuda"
    # Different reduction kernels: ulp-level differences amplified over 200 steps.
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-11, atol=1e-11)
