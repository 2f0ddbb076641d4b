"""Invariants stay constant along a tight scipy DOP853 solution of each system's vector field."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physnode.systems import (
    DoublePendulum,
    Duffing,
    Kepler,
    LotkaVolterra,
    NBody,
    Pendulum,
    SpringChain,
    System,
    random_nbody,
)

# DOP853 at rtol = atol = 1e-12 keeps each step's local error near 1e-12 of the state; over
# t in [0, 5] (a few hundred to a few thousand steps) the observed drift is 1e-12..7e-11
# relative (worst: double pendulum and the random 3-D N-body with close passes; the doc quotes
# 1e-10 per 10 figure-eight periods). 1e-9 leaves a >10x margin.
BOUND = 1e-9
T_END = 5.0

CASES = [
    (Pendulum(), None),
    (DoublePendulum(), None),  # chaotic from (3π/7, 3π/4): energy must still hold
    (LotkaVolterra(), None),
    (LotkaVolterra(1.3, 0.9, 0.8, 1.8), torch.tensor([0.44249296, 4.6280594])),
    (Kepler(), None),
    (SpringChain(6, m=2.0, k=3.0), None),
    (Duffing(alpha=-1.0, beta=1.0, delta=0.0, gamma=0.0), torch.tensor([0.3, 0.9])),
    (random_nbody(4, dim=3, seed=3)[0], None),
    (NBody([1.0, 2.0, 3.0], softening=0.05), None),
]


@pytest.mark.parametrize(("system", "y0"), CASES, ids=lambda c: type(c).__name__)
def test_invariants_conserved(system: System, y0: torch.Tensor | None, dop853) -> None:
    y0 = system.default_y0() if y0 is None else y0.double()
    t = np.linspace(0.0, T_END, 101)
    ys = torch.from_numpy(dop853(system, y0, t))
    invariants = system.invariants(ys)
    assert invariants, "every system here has at least one invariant"
    for name, values in invariants.items():
        assert values.shape == (len(t),)
        scale = max(1.0, float(values[0].abs()))
        drift = float((values - values[0]).abs().max()) / scale
        assert drift < BOUND, f"{type(system).__name__}.{name} drifted by {drift:.2e}"
