"""The Kepler problem: one body in a central ``1/r`` potential."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from physnode.errors import InvalidInputError
from physnode.systems.base import System
from physnode.systems.registry import register_system

__all__ = ["Kepler"]


@register_system(
    "kepler",
    description="Kepler problem: one body in a central 1/r potential (default e = 0.6, H = -1/2).",
)
class Kepler(System):
    """The Kepler problem: one body of unit mass in the central field ``-mu / |q|``.

    State ``y``: shape ``(..., 4)`` = ``(qx, qy, px, py)`` (``p = v``). The default start has
    eccentricity ``e`` and semi-major axis 1: ``q0 = (1 - e, 0)``,
    ``p0 = (0, sqrt(mu (1 + e) / (1 - e)))``, energy ``-mu / 2`` and period ``2π / sqrt(mu)``.

    Args:
        mu: gravitational parameter ``G M`` (positive).
        eccentricity: eccentricity of the default orbit, in ``[0, 1)`` (initial state only).
    """

    second_order = True
    autonomous = True
    positive_parameters = ("mu",)

    def __init__(self, mu: float = 1.0, eccentricity: float = 0.6) -> None:
        super().__init__()
        if not 0.0 <= eccentricity < 1.0:
            raise InvalidInputError(
                f"eccentricity must be in [0, 1) for a bound orbit; got {eccentricity!r}."
            )
        self.eccentricity = float(eccentricity)
        self.add_parameter("mu", mu)
        self.state_names = ["qx", "qy", "px", "py"]

    @property
    def separable(self) -> bool:
        return True

    @property
    def period(self) -> Tensor:
        """Period ``2π sqrt(a³ / mu)`` of the default orbit (``a = 1``), 0-dim."""
        return 2 * math.pi / torch.sqrt(self.param("mu"))

    def acceleration(self, t: Tensor, q: Tensor, v: Tensor) -> Tensor:
        """``-mu q / |q|³``, shape ``q.shape`` = ``(..., 2)``."""
        del t, v
        r2 = (q * q).sum(-1, keepdim=True)
        return -self.param("mu", q) * q * r2.pow(-1.5)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """``dy/dt = (p, -mu q / |q|³)``, shape ``y.shape``."""
        return self._second_order_forward(t, y)

    def energy(self, y: Tensor) -> Tensor:
        """``|p|² / 2 - mu / |q|``, shape ``y.shape[:-1]``."""
        q, p = y.chunk(2, dim=-1)
        return 0.5 * (p * p).sum(-1) - self.param("mu", y) / q.norm(dim=-1)

    def angular_momentum(self, y: Tensor) -> Tensor:
        """``qx py - qy px``, shape ``y.shape[:-1]``."""
        return y[..., 0] * y[..., 3] - y[..., 1] * y[..., 2]

    def runge_lenz(self, y: Tensor) -> Tensor:
        """Laplace–Runge–Lenz vector ``p × L - mu q / |q|``, shape ``(..., 2)``."""
        q, p = y.chunk(2, dim=-1)
        ang = self.angular_momentum(y).unsqueeze(-1)
        p_cross_l = torch.stack([p[..., 1], -p[..., 0]], dim=-1) * ang
        return p_cross_l - self.param("mu", y) * q / q.norm(dim=-1, keepdim=True)

    def invariants(self, y: Tensor) -> dict[str, Tensor]:
        """Energy, angular momentum and the two Runge–Lenz components."""
        lrl = self.runge_lenz(y)
        return {
            "energy": self.energy(y),
            "angular_momentum": self.angular_momentum(y),
            "runge_lenz_x": lrl[..., 0],
            "runge_lenz_y": lrl[..., 1],
        }

    def default_y0(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """``(1 - e, 0, 0, sqrt(mu (1 + e) / (1 - e)))``, shape ``(4,)``."""
        e = self.eccentricity
        mu = self.param("mu").detach().to(torch.float64)
        zero = torch.zeros((), dtype=torch.float64, device=mu.device)
        speed = torch.sqrt(mu * (1 + e) / (1 - e))
        return torch.stack([zero + (1 - e), zero, zero, speed]).to(dtype)
