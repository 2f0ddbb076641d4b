"""Shared helpers for the systems tests: a scipy DOP853 reference run of a system's vector field."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from physnode.systems import System


def solve_dop853(
    system: System, y0: torch.Tensor, t_eval: np.ndarray, tol: float = 1e-12
) -> np.ndarray:
    """Integrate ``system.forward`` with scipy DOP853 at rtol = atol = ``tol``; returns (T, D)."""
    from scipy.integrate import solve_ivp

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return system(torch.tensor(t, dtype=torch.float64), torch.from_numpy(y)).numpy()

    t_eval = np.asarray(t_eval, dtype=np.float64)
    sol = solve_ivp(
        rhs,
        (float(t_eval[0]), float(t_eval[-1])),
        y0.detach().numpy(),
        method="DOP853",
        t_eval=t_eval,
        rtol=tol,
        atol=tol,
    )
    assert sol.success, sol.message
    return sol.y.T


@pytest.fixture
def dop853() -> Callable[..., np.ndarray]:
    """The :func:`solve_dop853` reference integrator."""
    return solve_dop853
