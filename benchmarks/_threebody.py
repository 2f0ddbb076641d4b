"""The benchmark problem: planar three-body gravity (G = 1) with learnable masses.

State ``y``: shape ``(..., 12)`` = ``(x1, y1, x2, y2, x3, y3, vx1, vy1, ..., vy3)``. Both a torch
``nn.Module`` (the model being differentiated) and a NumPy twin (for SciPy reference solves and
forward sensitivities) live here so that every solver integrates exactly the same equations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

PERIOD = 6.325914012016  # figure-eight period that best closes the 8-digit initial conditions
MASSES_TRUE = (1.0, 1.0, 1.0)  # the unperturbed figure eight (the target trajectory)
MASSES_MODEL = (1.0, 1.05, 0.95)  # the parameters being differentiated

_X1 = (0.97000436, -0.24308753)
_V3 = (-0.93240737, -0.86473146)


def figure_eight_y0() -> np.ndarray:
    """Figure-eight initial state (Chenciner & Montgomery; Simó), shape ``(12,)``, float64."""
    x1 = np.array(_X1)
    v3 = np.array(_V3)
    v1 = -v3 / 2
    pos = np.concatenate([x1, -x1, np.zeros(2)])
    vel = np.concatenate([v1, v1, v3])
    return np.concatenate([pos, vel])


def batch_y0(batch: int, scale: float = 1e-3, seed: int = 0) -> np.ndarray:
    """``batch`` slightly different starting states, shape ``(batch, 12)``; row 0 is exact."""
    y0 = np.tile(figure_eight_y0(), (batch, 1))
    if batch > 1:
        rng = np.random.default_rng(seed)
        y0[1:] += scale * rng.standard_normal((batch - 1, 12))
    return y0


class ThreeBody(nn.Module):
    """``dy/dt`` of three gravitating point masses in the plane, batched over leading dims.

    ``masses`` is an ``nn.Parameter`` of shape ``(3,)``. ``nfe`` counts calls of ``forward``.
    A user's module as is: no flags (physnode's ACA batches its replay through vmap anyway).
    """

    def __init__(self, masses=MASSES_MODEL, dtype=torch.float64, device="cpu") -> None:
        super().__init__()
        self.masses = nn.Parameter(torch.tensor(masses, dtype=dtype, device=device))
        self.register_buffer("offdiag", 1.0 - torch.eye(3, dtype=dtype, device=device))
        self.nfe = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        lead = y.shape[:-1]
        pos = y[..., :6].reshape(*lead, 3, 2)
        vel = y[..., 6:]
        diff = pos.unsqueeze(-3) - pos.unsqueeze(-2)  # [..., i, j, :] = r_j - r_i
        dist2 = diff.square().sum(-1) + (1.0 - self.offdiag)  # 1 on the diagonal: no 0/0
        w = dist2.pow(-1.5) * self.offdiag * self.masses  # [..., i, j] = m_j / |r_j - r_i|^3
        acc = (w.unsqueeze(-1) * diff).sum(-2)
        return torch.cat([vel, acc.reshape(*lead, 6)], dim=-1)


def rhs_numpy(y: np.ndarray, masses) -> np.ndarray:
    """NumPy twin of :class:`ThreeBody` for a state of shape ``(..., 12)``."""
    m = np.asarray(masses, dtype=float)
    lead = y.shape[:-1]
    pos = y[..., :6].reshape(*lead, 3, 2)
    diff = pos[..., None, :, :] - pos[..., :, None, :]
    dist2 = (diff**2).sum(-1) + np.eye(3)
    w = dist2**-1.5 * (1.0 - np.eye(3)) * m
    acc = (w[..., None] * diff).sum(-2)
    return np.concatenate([y[..., 6:], acc.reshape(*lead, 6)], axis=-1)


def rhs_sensitivity_numpy(z: np.ndarray, masses, batch: int) -> np.ndarray:
    """Variational equations: state ``z = [y (B·12), S (B·12·3)]`` with ``S = dy/dm``.

    ``dS/dt = J_y S + ∂f/∂m``; used for the forward-sensitivity check of the reference gradient.
    """
    m = np.asarray(masses, dtype=float)
    y = z[: batch * 12].reshape(batch, 12)
    s = z[batch * 12 :].reshape(batch, 12, 3)
    pos = y[:, :6].reshape(batch, 3, 2)
    diff = pos[:, None, :, :] - pos[:, :, None, :]  # [b, i, j, :] = r_j - r_i
    dist2 = (diff**2).sum(-1) + np.eye(3)
    off = 1.0 - np.eye(3)
    inv3 = dist2**-1.5 * off
    inv5 = dist2**-2.5 * off
    acc = (inv3[..., None] * m[None, None, :, None] * diff).sum(-2)  # (b, 3, 2)
    dy = np.concatenate([y[:, 6:], acc.reshape(batch, 6)], axis=-1)
    # ∂a_i/∂m_j = inv3_ij (r_j - r_i)
    da_dm = np.zeros((batch, 3, 2, 3))
    for j in range(3):
        da_dm[:, :, :, j] = inv3[:, :, j, None] * diff[:, :, j, :]
    # ∂a_i/∂r_k: pairwise tensor K_ij = m_j (inv3 I - 3 inv5 d d^T), d = r_j - r_i
    eye2 = np.eye(2)
    kij = m[None, None, :, None, None] * (
        inv3[..., None, None] * eye2
        - 3 * inv5[..., None, None] * diff[..., :, None] * diff[..., None, :]
    )  # (b, i, j, 2, 2)
    jac = np.zeros((batch, 3, 2, 3, 2))  # ∂a_i/∂r_k
    for i in range(3):
        for j in range(3):
            if i != j:
                jac[:, i, :, j, :] += kij[:, i, j]
                jac[:, i, :, i, :] -= kij[:, i, j]
    jac = jac.reshape(batch, 6, 6)
    s_pos, s_vel = s[:, :6, :], s[:, 6:, :]
    ds_pos = s_vel
    ds_vel = jac @ s_pos + da_dm.reshape(batch, 6, 3)
    ds = np.concatenate([ds_pos, ds_vel], axis=1)
    return np.concatenate([dy.reshape(-1), ds.reshape(-1)])
