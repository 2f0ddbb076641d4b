"""Per-sample adaptive steps (``options={"steps": "per-sample"}``): every member of a batch is
the solve it would be alone, a failing member fails alone, ACA and backprop work per member."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch import nn

from physnode.errors import (
    HiddenParameterError,
    InvalidInputError,
    InvalidTimeGridError,
    MaxStepsReachedError,
    ModifiedInputError,
    NonFiniteError,
    SolverError,
)
from physnode.solver import solve
from physnode.solver.per_sample import STATUS, SampleFailureWarning
from tests.solver.problems import FIGURE_EIGHT_Y0, Gravity, gravity_numpy, linear_rhs

PER_SAMPLE = {"steps": "per-sample"}


def _starts(batch: int, spread: float, seed: int = 0) -> torch.Tensor:
    """Figure-eight starts with every coordinate perturbed by ``spread`` (some members then
    pass close to each other, so their steps differ widely)."""
    rng = np.random.default_rng(seed)
    y0 = FIGURE_EIGHT_Y0 + spread * rng.normal(size=(batch, 12))
    return torch.as_tensor(y0)


@pytest.mark.parametrize(
    "method",
    ["dopri5", "dop853", "tsit5", pytest.param("bosh3", marks=pytest.mark.slow)],  # bosh3: 12 s
)
def test_each_member_is_its_own_single_solve(method):
    field = Gravity([1.0, 1.0, 1.0])
    y0 = _starts(12, 0.02)
    t = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    with torch.no_grad():
        sol = solve(field, y0, t, rtol=1e-9, atol=1e-9, method=method, options=PER_SAMPLE)
        singles = [solve(field, y, t, rtol=1e-9, atol=1e-9, method=method) for y in y0]
    alone = torch.stack([s.ys for s in singles], 1)
    # the same step sequence per member: only the rounding of the vectorised norm and
    # controller power differ (an ulp of h now and then), measured up to 5e-13 (bosh3)
    assert (sol.ys - alone).abs().max() < 1e-12
    assert sol.stats.n_accepted == sum(s.stats.n_accepted for s in singles)
    assert sol.status.tolist() == [0] * 12


def test_pi_controller_and_step_bounds_act_per_member():
    field = Gravity([1.0, 1.0, 1.0])
    y0 = _starts(6, 0.02, seed=7)
    t = torch.linspace(0.0, 3.0, 4, dtype=torch.float64)
    options = {"controller": "pi", "ifactor": 3.3, "dfactor": 0.3, "max_step": 0.2}
    with torch.no_grad():
        sol = solve(field, y0, t, rtol=1e-8, atol=1e-8, options={**PER_SAMPLE, **options})
        singles = [solve(field, y, t, rtol=1e-8, atol=1e-8, options=options) for y in y0]
    # the same bound as test_each_member_is_its_own_single_solve
    assert (sol.ys - torch.stack([s.ys for s in singles], 1)).abs().max() < 1e-12
    assert sol.stats.n_accepted == sum(s.stats.n_accepted for s in singles)
    assert sol.stats.n_rejected == sum(s.stats.n_rejected for s in singles)


def test_tiny_error_ratios_grow_the_step_as_the_shared_controller_does():
    # a first step of 1e-4 gives DOP853 error ratios far below 1e-10, where the PI factor
    # must reach ifactor as in the shared controller (a clamp of the ratio once made it 6.75)
    y0 = torch.tensor([[1.0, 0.5, -0.25]], dtype=torch.float64)
    t = torch.linspace(0.0, 3.0, 4, dtype=torch.float64)
    options = {"controller": "pi", "first_step": 1e-4}
    one = solve(linear_rhs(), y0, t, rtol=1e-9, atol=1e-9, method="dop853",
                options={**PER_SAMPLE, **options})  # fmt: skip
    alone = solve(linear_rhs(), y0[0], t, rtol=1e-9, atol=1e-9, method="dop853", options=options)
    assert one.stats.n_accepted == alone.stats.n_accepted
    # the error ratios of these first steps are rounding noise (~1e-16 estimates), whose last
    # bits depend on how the CPU vectorises the (1, D) and (D,) norms: the step sizes then
    # differ by a few percent (0 on one machine, 5.3e-12 in the values on an AMD EPYC one);
    # 1e-10 is that with room and still 10x below the tolerance of 1e-9
    assert (one.ys[:, 0] - alone.ys).abs().max() <= 1e-10


def test_a_batch_of_one_is_the_shared_loop_to_rounding():
    # starts with close encounters: alone, the per-sample loop does the shared loop's arithmetic
    # (identical bits on one machine; 1.3e-12 on an AMD EPYC one and 1.4e-10 on CI's Xeon, where
    # the (1, D) and (D,) norms round differently and those ulps of h grow through the
    # encounters). 2e-9 is 14x the largest of those and 10x below the global error of these
    # solves against rtol=1e-13 ones (2.1e-8 to 3.6e-7), which any other valid step sequence
    # would show
    field = Gravity([1.0, 1.0, 1.0])
    t = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    with torch.no_grad():
        for y in _starts(6, 0.05)[[0, 3, 5]]:
            one = solve(field, y[None], t, rtol=1e-9, atol=1e-9, options=PER_SAMPLE)
            alone = solve(field, y, t, rtol=1e-9, atol=1e-9)
            assert (one.ys[:, 0] - alone.ys).abs().max() <= 2e-9
            assert one.stats.n_accepted == alone.stats.n_accepted


def test_less_right_hand_side_work_than_shared_steps():
    field = Gravity([1.0, 1.0, 1.0])
    y0 = _starts(32, 0.08, seed=3)
    t = torch.linspace(0.0, 6.0, 7, dtype=torch.float64)
    with torch.no_grad():
        per = solve(field, y0, t, rtol=1e-8, atol=1e-8, options=PER_SAMPLE)
        shared = solve(field, y0, t, rtol=1e-8, atol=1e-8)
    # the shared solve evaluates all 32 members at every one of its evaluations and takes the
    # steps its hardest member needs; the target is >= 2x less work
    assert per.stats.n_sample_evals * 2 <= shared.stats.nfe_forward * 32


def test_each_member_has_its_own_times_and_t_reaches_func_per_row():
    # y' = cos(t) y: y(t) = y0 exp(sin t - sin t0); each member on its own grid
    def func(t, y):
        assert t.shape == (y.shape[0], 1)
        return torch.cos(t) * y

    y0 = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.1]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0, 2.5], [1.0, 1.5, 7.0], [-2.0, 0.0, 0.3]], dtype=torch.float64)
    sol = solve(func, y0, t, rtol=1e-10, atol=1e-12, method="dop853", options=PER_SAMPLE)
    exact = y0 * torch.exp(torch.sin(t) - torch.sin(t[:, :1])).T.unsqueeze(-1)
    # rtol 1e-10 over a few oscillations: the global error is a few 1e-10
    assert (sol.ys - exact).abs().max() < 1e-8


def test_backward_in_time():
    field = Gravity([1.0, 1.0, 1.0])
    y0 = _starts(3, 0.02, seed=5)
    t = torch.linspace(0.0, -2.0, 5, dtype=torch.float64)
    with torch.no_grad():
        sol = solve(field, y0, t, rtol=1e-8, atol=1e-8, method="tsit5", options=PER_SAMPLE)
        alone = [solve(field, y, t, rtol=1e-8, atol=1e-8, method="tsit5").ys for y in y0]
    # the same rounding bound as test_each_member_is_its_own_single_solve
    assert (sol.ys - torch.stack(alone, 1)).abs().max() < 1e-12


def _blow_up(t, y):
    """``y' = y²``: from ``y0 > 0`` it blows up at ``t = 1 / y0``; from ``y0 < 0`` it is
    ``y0 / (1 - y0 t)``."""
    return y * y


def test_a_failing_member_fails_alone():
    y0 = torch.tensor([[-1.0], [0.5], [-0.25]], dtype=torch.float64)
    t = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    with pytest.warns(SampleFailureWarning, match="1 of 3 members failed; the first, member 1"):
        sol = solve(_blow_up, y0, t, rtol=1e-9, atol=1e-12, options=PER_SAMPLE)
    assert STATUS[int(sol.status[1])] in ("step_too_small", "non_finite")
    assert sol.status[[0, 2]].tolist() == [0, 0]
    exact = y0[[0, 2], 0] / (1 - y0[[0, 2], 0] * t[:, None])
    # rtol 1e-9 on a smooth decay: global error well under 1e-8
    assert (sol.ys[:, [0, 2], 0] - exact).abs().max() < 1e-8
    # the failing member is right up to its blow-up at t = 2 and NaN from where it stopped
    before = t < 1.9
    assert (sol.ys[before, 1, 0] - 0.5 / (1 - 0.5 * t[before])).abs().max() < 1e-6
    assert torch.isnan(sol.ys[t > 2.0, 1, 0]).all()


def test_a_failing_member_raises_when_asked():
    y0 = torch.tensor([[-1.0], [0.5]], dtype=torch.float64)
    t = torch.linspace(0.0, 4.0, 3, dtype=torch.float64)
    options = {**PER_SAMPLE, "sample_failure": "raise"}
    with pytest.raises(SolverError, match="member 1") as info:
        solve(_blow_up, y0, t, rtol=1e-9, atol=1e-12, options=options)
    assert 1.99 < info.value.t <= 2.0  # it stops at the blow-up


def test_raise_stops_at_the_failure_without_finishing_the_others():
    def func(t, y):  # u' = u² blows up at t = 2 for u0 = 0.5; w' = cos(40 t) needs many steps
        return torch.cat([y[:, :1].square(), torch.cos(40 * t)], dim=1)

    y0 = torch.tensor([[0.5, 0.0], [-0.5, 0.0]], dtype=torch.float64)
    t = torch.tensor([0.0, 20.0], dtype=torch.float64)
    with pytest.warns(SampleFailureWarning):
        warned = solve(func, y0, t, rtol=1e-6, atol=1e-8, options=PER_SAMPLE)
    with pytest.raises(SolverError, match="member 0") as info:
        solve(func, y0, t, rtol=1e-6, atol=1e-8,
              options={**PER_SAMPLE, "sample_failure": "raise"})  # fmt: skip
    # at the blow-up (rtol 1e-6: the numerical blow-up lags the exact t = 2 by ~1e-10)
    assert abs(info.value.t - 2.0) < 1e-6
    # member 1 goes on to t = 20 only when the failure is not raised (measured: 13 432 rows
    # evaluated vs 6 188 up to the raise, the blow-up's shrinking steps included; raising
    # only at the end evaluated as many as warning)
    assert warned.stats.n_sample_evals > 1.5 * _evals_until_raise(func, y0, t)


def _evals_until_raise(func, y0: torch.Tensor, t: torch.Tensor) -> int:
    """Rows evaluated by a ``sample_failure="raise"`` solve before it raised."""
    seen = [0]

    def counted(tt, y):
        seen[0] += y.shape[0]
        return func(tt, y)

    with pytest.raises(SolverError):
        solve(counted, y0, t, rtol=1e-6, atol=1e-8,
              options={**PER_SAMPLE, "sample_failure": "raise"})  # fmt: skip
    return seen[0]


def test_max_steps_counts_each_members_own_attempts():
    field = Gravity([1.0, 1.0, 1.0])
    y0 = torch.stack([torch.as_tensor(FIGURE_EIGHT_Y0), _starts(1, 0.2, seed=11)[0]])
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with torch.no_grad():
        alone = [solve(field, y, t, rtol=1e-10, atol=1e-10).stats for y in y0]
    attempts = [s.n_accepted + s.n_rejected for s in alone]
    budget = (min(attempts) + max(attempts)) // 2  # enough for one member only
    assert min(attempts) < budget < max(attempts)
    hard = int(np.argmax(attempts))
    options = {**PER_SAMPLE, "max_steps": budget, "sample_failure": "raise"}
    with torch.no_grad(), pytest.raises(MaxStepsReachedError, match=f"member {hard}"):
        solve(field, y0, t, rtol=1e-10, atol=1e-10, options=options)


def test_non_finite_start_of_one_member():
    y0 = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)

    def func(t, y):
        return torch.where(y > 0, y / 0.0 * 0.0, -y)  # NaN for the first member only

    options = {**PER_SAMPLE, "sample_failure": "raise"}
    with pytest.raises(NonFiniteError, match="member 0"):
        solve(func, y0, [0.0, 1.0], options=options)
    with pytest.warns(SampleFailureWarning):
        sol = solve(func, y0, [0.0, 1.0], rtol=1e-10, atol=1e-12, options=PER_SAMPLE)
    assert STATUS[int(sol.status[0])] == "non_finite"
    # rtol 1e-10: the decaying member is exp(-t) to well under 1e-8
    assert abs(float(sol.ys[1, 1, 0]) + math.exp(-1.0)) < 1e-8


def _scipy_loss(masses: np.ndarray, y0: np.ndarray, t: np.ndarray, w: np.ndarray) -> float:
    """``Σ_members Σ_k w · y(t_k)`` from SciPy's DOP853 on the NumPy force."""
    total = 0.0
    for i, y in enumerate(y0):
        run = solve_ivp(
            lambda _, s: gravity_numpy(s, masses), (t[0], t[-1]), y, method="DOP853",
            t_eval=t, rtol=1e-13, atol=1e-13,
        )  # fmt: skip
        total += float((run.y.T * w[:, i]).sum())
    return total


@pytest.mark.parametrize("grad", ["aca", "backprop"])
def test_gradients_per_member_match_finite_differences_of_scipy(grad):
    masses = np.array([1.0, 0.9, 1.1])
    field = Gravity(masses)
    y0 = _starts(3, 0.02, seed=2)
    t = torch.linspace(0.0, 1.5, 4, dtype=torch.float64)
    w = torch.as_tensor(np.random.default_rng(0).normal(size=(4, 3, 12)))
    sol = solve(field, y0, t, rtol=1e-11, atol=1e-11, grad=grad, options=PER_SAMPLE)
    (grad,) = torch.autograd.grad((sol.ys * w).sum(), [field.masses])
    eps = 1e-5
    fd = [
        (
            _scipy_loss(masses + eps * e, y0.numpy(), t.numpy(), w.numpy())
            - _scipy_loss(masses - eps * e, y0.numpy(), t.numpy(), w.numpy())
        )
        / (2 * eps)
        for e in np.eye(3)
    ]
    # central differences with eps 1e-5 of 1e-13 solves: error ~1e-8 relative; the solve's
    # own gradient is the discrete one at rtol 1e-11 (a few 1e-9 relative)
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-6)


@pytest.mark.parametrize("method", ["dopri5", "dop853", "tsit5"])
def test_aca_replays_each_members_steps_as_backprop_does(method):
    field = Gravity([1.0, 0.9, 1.1])
    # spread 0.05: members with close encounters, so step counts differ several-fold
    y0 = _starts(6, 0.05, seed=2).requires_grad_(True)
    t = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    w = torch.as_tensor(np.random.default_rng(1).normal(size=(7, 6, 12)))
    grads = {}
    for grad in ("aca", "backprop"):
        sol = solve(field, y0, t, rtol=1e-9, atol=1e-9, method=method, grad=grad,
                    options=PER_SAMPLE)  # fmt: skip
        grads[grad] = torch.autograd.grad((sol.ys * w).sum(), [y0, field.masses])
    assert sol.stats.n_checkpoints == 0  # backprop keeps no checkpoints
    for a, b in zip(grads["aca"], grads["backprop"], strict=True):
        # the same accepted steps differentiated two ways: rounding only (measured 3e-13
        # relative, dop853), as the one-trajectory ACA = backprop bound of 1e-10
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()


@pytest.mark.parametrize("grad", ["aca", "backprop"])
def test_a_non_finite_trial_step_leaves_the_gradients_finite(grad):
    # y' = -k sqrt(y), y(0) = 1: y = (1 - k t / 2)^2, so d[y(1) + y(3)]/dk = -0.75 - 0.75 at
    # k = 0.5; a first step of 5 (cut to the span, 3) makes the trial's stages take sqrt of
    # negative states (NaN), which the step rejects and which must not reach the gradient
    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    sol = solve(lambda t, y: -k * y.sqrt(), y0, [0.0, 1.0, 3.0], rtol=1e-10, atol=1e-12,
                grad=grad, params=[k], options={**PER_SAMPLE, "first_step": 5.0})  # fmt: skip
    assert sol.stats.n_rejected >= 2  # the non-finite trial of each member
    (dk,) = torch.autograd.grad(sol.ys[:, 0].sum(), [k])
    # rtol 1e-10 on a smooth solution: the discrete gradient is the exact one to ~1e-8
    assert abs(float(dk) + 1.5) < 1e-6


def test_aca_refuses_hidden_tensors_and_changed_inputs():
    k = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    with pytest.raises(HiddenParameterError):
        solve(lambda t, y: -k * y, y0, [0.0, 1.0], options=PER_SAMPLE)
    sol = solve(lambda t, y: -k * y, y0, [0.0, 1.0], params=[k], options=PER_SAMPLE)
    with torch.no_grad():
        k.add_(0.1)
    with pytest.raises(ModifiedInputError):
        sol.ys.sum().backward()


def test_refuses_what_it_cannot_do():
    field = Gravity([1.0, 1.0, 1.0])
    y0 = _starts(2, 0.01)
    t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match="differentiate with grad in"):
        solve(field, y0, t, grad="adjoint", options=PER_SAMPLE)  # masses require grad
    with pytest.raises(InvalidInputError, match="t requiring grad"):
        solve(field, y0, t.clone().requires_grad_(True), grad="aca", options=PER_SAMPLE)
    with torch.no_grad():
        with pytest.raises(InvalidInputError, match=r"\(B, D\)"):
            solve(field, y0[0], t, options=PER_SAMPLE)
        with pytest.raises(InvalidTimeGridError, match="B = 2"):
            solve(field, y0, t.expand(3, -1), options=PER_SAMPLE)
        with pytest.raises(InvalidTimeGridError, match="same direction"):
            solve(field, y0, torch.stack([t, -t]), options=PER_SAMPLE)
        with pytest.raises(InvalidTimeGridError, match="member 1"):
            solve(field, y0, torch.stack([t, t.flip(0).abs() * 0]), options=PER_SAMPLE)
        with pytest.raises(InvalidInputError, match="adaptive methods only"):
            solve(field, y0, t, method="rk4", options={**PER_SAMPLE, "step_size": 0.1})
        with pytest.raises(InvalidInputError, match="per-sample' only"):
            solve(field, y0, t, options={"sample_failure": "raise"})
        with pytest.raises(InvalidTimeGridError, match="every row as long"):
            solve(field, y0, [[0.0, 1.0], [0.0, 0.5, 1.0]], options=PER_SAMPLE)  # ragged
        with pytest.raises(InvalidTimeGridError, match="every row as long"):
            solve(field, y0, [["0", "1"], [0.0, 1.0]], options=PER_SAMPLE)  # not numbers
        with pytest.raises(InvalidTimeGridError, match="member 1"):
            solve(field, y0, [[0.0, 1.0], [0.0, math.nan]], options=PER_SAMPLE)
    # the replay options choose how the shared loop's ACA replays; per-sample has no choice
    for key, value in (("replay", "batched"), ("replay_memory", 2**20)):
        with pytest.raises(InvalidInputError, match="steps'\\]='shared' only"):
            solve(field, y0, t, options={**PER_SAMPLE, key: value})


class _Coupled(nn.Module):
    """A vector field that reads the batch as a whole (a batch mean): not row-wise."""

    def forward(self, t, y):
        return -y + y.mean(0, keepdim=True)


def test_refuses_a_field_that_couples_the_rows():
    y0 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]], dtype=torch.float64)
    with pytest.raises(InvalidInputError, match="couples the rows"):
        solve(_Coupled(), y0, [0.0, 1.0], options=PER_SAMPLE)

    def relative_to_first(t, y):
        return -(y - y[:1])  # row 0 alone is unchanged (its derivative is 0 either way)

    with pytest.raises(InvalidInputError, match="row 2's derivative"):
        solve(relative_to_first, y0, [0.0, 1.0], options=PER_SAMPLE)

    def fixed_batch(t, y):
        return -y.reshape(3, 2)  # needs all three rows

    with pytest.raises(InvalidInputError, match="failed on one row"):
        solve(fixed_batch, y0, [0.0, 1.0], options=PER_SAMPLE)


def test_float32_batch():
    field = Gravity([1.0, 1.0, 1.0]).float()
    y0 = _starts(4, 0.02).float()
    t = torch.linspace(0.0, 1.0, 3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = solve(field, y0, t, rtol=1e-5, atol=1e-6, options=PER_SAMPLE)
        ref = solve(Gravity([1.0, 1.0, 1.0]), y0.double(), t.double(), rtol=1e-10, atol=1e-10)
    assert sol.ys.dtype == torch.float32
    # rtol 1e-5 in float32 over one time unit: error a few 1e-5 at most
    assert (sol.ys.double() - ref.ys).abs().max() < 1e-4
