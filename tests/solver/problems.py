"""Small reference problems for the engine tests (exact solutions where they exist)."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import nn

# A non-normal, rotating, slowly decaying linear system: exact flow expm(A t).
A_LINEAR = np.array([[-0.1, 2.0, 0.0], [-2.0, -0.1, 0.5], [0.0, -0.5, -0.3]])
Y0_LINEAR = np.array([1.0, 0.5, -0.25])


def linear_exact(t: np.ndarray, y0: np.ndarray = Y0_LINEAR) -> np.ndarray:
    """Exact solution of ``y' = A y`` at times ``t``: shape ``(len(t), 3)``."""
    return np.stack([scipy.linalg.expm(A_LINEAR * ti) @ y0 for ti in t])


def linear_rhs(dtype=torch.float64):
    a = torch.tensor(A_LINEAR, dtype=dtype)
    return lambda t, y: y @ a.T


class Gravity(nn.Module):
    """Planar gravitational N-body field with learnable masses (G = 1). State: positions then
    velocities, body-major, shape ``(..., 4 N)``. Written independently of physnode.systems."""

    def __init__(self, masses) -> None:
        super().__init__()
        self.masses = nn.Parameter(torch.as_tensor(masses, dtype=torch.float64))

    def forward(self, t, y):
        n = self.masses.shape[0]
        q = y[..., : 2 * n].reshape(*y.shape[:-1], n, 2)
        v = y[..., 2 * n :]
        d = q.unsqueeze(-3) - q.unsqueeze(-2)  # d[i, j] = q_j - q_i
        eye = torch.eye(n, dtype=y.dtype, device=y.device)
        r2 = (d * d).sum(-1) + eye
        inv3 = r2.pow(-1.5) * (1 - eye)
        acc = (d * (inv3 * self.masses)[..., None]).sum(-2)
        return torch.cat([v, acc.reshape(*y.shape[:-1], 2 * n)], -1)


def gravity_numpy(y: np.ndarray, masses: np.ndarray) -> np.ndarray:
    n = len(masses)
    q = y[: 2 * n].reshape(n, 2)
    acc = np.zeros_like(q)
    for i in range(n):
        for j in range(n):
            if i != j:
                d = q[j] - q[i]
                acc[i] += masses[j] * d / np.linalg.norm(d) ** 3
    return np.concatenate([y[2 * n :], acc.reshape(-1)])


FIGURE_EIGHT_Y0 = np.array(
    [0.97000436, -0.24308753, -0.97000436, 0.24308753, 0.0, 0.0,
     0.466203685, 0.43236573, 0.466203685, 0.43236573, -0.93240737, -0.86473146]
)  # fmt: skip
FIGURE_EIGHT_PERIOD = 6.325914012016
