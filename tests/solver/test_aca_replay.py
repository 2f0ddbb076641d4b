"""ACA's two replay paths: the batched one keeps per-step semantics for any model, falls back
only on vmap's own refusals, and is chosen by a cost model that tests can see."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from physnode import solve
from physnode.errors import InvalidInputError
from physnode.solver import RK_METHODS
from physnode.solver.gradients import aca
from physnode.solver.options import SolverOptions
from tests.solver.problems import FIGURE_EIGHT_Y0, Gravity


class ReducingDrag(nn.Module):
    """Planar body with a drag that reduces over the state (``|q|``) and a time-dependent push:
    written for one state, not batch-safe by itself (``q.norm()`` over a batch would mix
    steps), and not autonomous (reads ``t``)."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
        self.w = nn.Parameter(torch.tensor(1.7, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, v = y[:2], y[2:]
        push = 0.2 * torch.sin(self.w * t) * torch.ones_like(q)
        return torch.cat([v, -q - self.k * v * q.norm() + push])


def _gradients(model: nn.Module, y0: torch.Tensor, options: dict, grad: str = "aca"):
    model.zero_grad()
    y0 = y0.clone().requires_grad_(True)
    t = torch.linspace(0.0, 4.0, 17, dtype=torch.float64).requires_grad_(True)
    sol = solve(model, y0, t, rtol=1e-9, atol=1e-9, grad=grad, options=options)
    (sol.ys[1:] ** 2).sum().backward()
    grads = [y0.grad, t.grad, *(p.grad for p in model.parameters())]
    return [g.clone() for g in grads], sol.stats


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_batched_replay_keeps_per_step_semantics() -> None:
    """A reduction over the state and a time dependence: the batched replay (chosen by default
    for this 4-number state) equals backprop through the same accepted steps to 1e-10 relative
    (summation order only). Before per-step semantics the masses-like gradient was 85 % off."""
    model, y0 = ReducingDrag(), torch.tensor([1.0, 0.0, 0.0, 0.8], dtype=torch.float64)
    got, stats = _gradients(model, y0, {})
    ref, _ = _gradients(model, y0, {}, grad="backprop")
    assert stats.n_replayed_batched == stats.n_checkpoints > 0
    for a, b in zip(got, ref, strict=True):
        assert _rel(a, b) <= 1e-10


def test_plain_function_without_flag_gets_the_batched_path() -> None:
    """A user's own module passed as is (no ``autonomous`` flag) is batched, and exact."""
    model = Gravity([1.0, 1.05, 0.95])
    y0 = torch.tensor(FIGURE_EIGHT_Y0, dtype=torch.float64)
    got, stats = _gradients(model, y0, {})
    ref, _ = _gradients(model, y0, {}, grad="backprop")
    assert stats.n_replayed_batched == stats.n_checkpoints
    for a, b in zip(got, ref, strict=True):
        assert _rel(a, b) <= 1e-10  # summation order only


class Branching(ReducingDrag):
    """Data-dependent control flow: vmap refuses it (``if`` on a tensor value)."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if y[:2].norm() > 10.0:  # never true here, but vmap cannot evaluate the branch
            return torch.zeros_like(y)
        return super().forward(t, y)


def test_vmap_refusal_falls_back_with_one_warning() -> None:
    model, y0 = Branching(), torch.tensor([1.0, 0.0, 0.0, 0.8], dtype=torch.float64)
    with pytest.warns(aca.ReplayFallbackWarning, match="one by one"):
        got, stats = _gradients(model, y0, {})
    ref, _ = _gradients(model, y0, {}, grad="backprop")
    assert stats.n_replayed_batched == 0
    for a, b in zip(got, ref, strict=True):
        assert _rel(a, b) <= 1e-10  # summation order only


class FailsUnderGrad(ReducingDrag):
    """A model error of its own (a RuntimeError that has nothing to do with vmap)."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            raise RuntimeError("the model's own failure")
        return super().forward(t, y)


@pytest.mark.parametrize("replay", ["auto", "sequential"])
def test_model_errors_are_not_swallowed(replay: str) -> None:
    model, y0 = FailsUnderGrad(), torch.tensor([1.0, 0.0, 0.0, 0.8], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", aca.ReplayFallbackWarning)  # no silent fallback either
        with pytest.raises(RuntimeError, match="the model's own failure"):
            _gradients(model, y0, {"replay": replay})


class Chain(nn.Module):
    """A 40-number linear chain with a learnable stiffness: above the auto batching size."""

    def __init__(self) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(1.3, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q, v = y[:20], y[20:]
        lap = torch.roll(q, 1) + torch.roll(q, -1) - 2 * q
        return torch.cat([v, self.k * lap - 0.1 * v])


def test_cost_model_chooses_and_forced_path_agrees() -> None:
    """40 numbers: ``auto`` replays step by step; ``batched`` can be forced and is exact."""
    model = Chain()
    y0 = torch.linspace(-1, 1, 40, dtype=torch.float64)
    auto, auto_stats = _gradients(model, y0, {})
    forced, forced_stats = _gradients(model, y0, {"replay": "batched"})
    assert auto_stats.n_replayed_batched == 0
    assert forced_stats.n_replayed_batched == forced_stats.n_checkpoints
    for a, b in zip(forced, auto, strict=True):
        assert _rel(a, b) <= 1e-10  # summation order only


def test_chunks_fit_the_memory_budget() -> None:
    tab, y = RK_METHODS["dopri5"], torch.zeros(12, dtype=torch.float64)
    per_step = aca.replay_bytes_per_step(tab, y)
    opts = SolverOptions.from_dict({"replay_memory": 10 * per_step})
    assert aca.choose_replay(opts, tab, y, n_steps=500) == 10
    assert aca.choose_replay(SolverOptions(), tab, y, n_steps=3) == 3
    tiny = SolverOptions.from_dict({"replay_memory": per_step})  # one step per chunk: no gain
    assert aca.choose_replay(tiny, tab, y, n_steps=500) == 0
    with pytest.raises(InvalidInputError, match="replay"):
        SolverOptions.from_dict({"replay": "vmap"})
