"""The planar double pendulum (two point masses on massless rods)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["DoublePendulum"]


@register_system(
    "double-pendulum", description="Planar double pendulum, chaotic from (3π/7, 3π/4, 0, 0)."
)
class DoublePendulum(System):
    """Double pendulum: mass ``m1`` on a rod ``l1`` from the pivot, ``m2`` on ``l2`` from ``m1``.

    State ``y``: shape ``(..., 4)`` = ``(θ1, θ2, ω1, ω2)``, angles from the downward vertical in
    radians and angular velocities. The accelerations depend on the velocities, so the system
    is second order but not separable in these coordinates.
    """

    autonomous = True  # dy/dt does not read t

    second_order = True
    positive_parameters = ("m1", "m2", "l1", "l2", "g")

    def __init__(
        self, m1: float = 1.0, m2: float = 1.0, l1: float = 1.0, l2: float = 1.0, g: float = 9.81
    ) -> None:
        super().__init__()
        for name, value in (("m1", m1), ("m2", m2), ("l1", l1), ("l2", l2), ("g", g)):
            self.add_parameter(name, value)
        self.state_names = ["theta1", "theta2", "omega1", "omega2"]

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """Angular accelerations ``(θ1'', θ2'')``, shape ``q.shape`` = ``(..., 2)``."""
        del t
        m1, m2, l1, l2, g = (self.param(n, q) for n in ("m1", "m2", "l1", "l2", "g"))
        th1, th2, w1, w2 = q[..., 0], q[..., 1], v[..., 0], v[..., 1]
        d = th1 - th2
        sin_d, cos_d = torch.sin(d), torch.cos(d)
        den = 2 * m1 + m2 - m2 * torch.cos(2 * d)
        a1 = (
            -g * (2 * m1 + m2) * torch.sin(th1)
            - m2 * g * torch.sin(th1 - 2 * th2)
            - 2 * sin_d * m2 * (w2**2 * l2 + w1**2 * l1 * cos_d)
        ) / (l1 * den)
        a2 = (
            2
            * sin_d
            * (w1**2 * l1 * (m1 + m2) + g * (m1 + m2) * torch.cos(th1) + w2**2 * l2 * m2 * cos_d)
        ) / (l2 * den)
        return torch.stack([a1, a2], dim=-1)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``(ω1, ω2, θ1'', θ2'')``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    def energy(self, y: Tensor) -> Tensor:
        """Total energy ``T + V`` with ``V = 0`` at the pivot height, shape ``y.shape[:-1]``."""
        m1, m2, l1, l2, g = (self.param(n, y) for n in ("m1", "m2", "l1", "l2", "g"))
        th1, th2, w1, w2 = y.unbind(-1)
        kinetic = 0.5 * (m1 + m2) * l1**2 * w1**2 + 0.5 * m2 * l2**2 * w2**2
        kinetic = kinetic + m2 * l1 * l2 * w1 * w2 * torch.cos(th1 - th2)
        potential = -(m1 + m2) * g * l1 * torch.cos(th1) - m2 * g * l2 * torch.cos(th2)
        return kinetic + potential

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """``{"energy": ...}``."""
        return {"energy": self.energy(y)}

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(3π/7, 3π/4, 0, 0)``: the standard chaotic release from rest."""
        values = [3 * math.pi / 7, 3 * math.pi / 4, 0.0, 0.0]
        return torch.tensor(values, dtype=dtype, device=self._reference().device)
